"""Bronze -> Silver: the row rules of DESIGN §3, written once as SQL that every engine runs.

The SQL is in DuckDB's dialect; the Spark engine transpiles it with sqlglot. Only functions
with the same meaning on both engines are used (regex anchors, TRY_CAST, CASE, MD5, windows
without DISTINCT), and every decimal operation names its precision so both round alike.

Inputs are relations the engine registers:
  raw_rows(source_file, ingestion_date, <INPUT_COLUMNS as VARCHAR>)   parsed CSV records
  malformed_rows(source_file, ingestion_date, line_number, raw_line)   unparseable records
  fx_rates(currency, rate_to_aud, valid_from)
  purchase_keys(purchase_id, fingerprint)                               accepted earlier
"""

from __future__ import annotations

from decimal import Decimal

from purchases.contract import (
    AMOUNT_PATTERN,
    AMOUNT_TYPE,
    AUD_TYPE,
    DATE_PATTERN,
    EMAIL_PATTERN,
    INPUT_COLUMNS,
    INTEGER_PATTERN,
    MAX_ID,
    QUARANTINE_COLUMNS,
    RATE_TYPE,
    SILVER_COLUMNS,
    WIDE_AMOUNT_TYPE,
    WIDE_RATE_TYPE,
    Reason,
)

ACCEPTED, REJECTED, DUPLICATE = "accepted", "rejected", "duplicate"

# Any Unicode whitespace: RE2 and Java both read \s as ASCII only, so add separators (\p{Z},
# which holds NBSP), vertical tab and NEL explicitly.
_WS = r"[\s\x{0B}\x{85}\p{Z}]"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _trimmed(col: str) -> str:
    return f"REGEXP_REPLACE({col}, {_sql_str(f'^{_WS}+|{_WS}+$')}, '', 'g')"


def _clean(col: str, *, collapse: bool = False, case: str | None = None) -> str:
    expr = _trimmed(col)
    if collapse:
        expr = f"REGEXP_REPLACE({expr}, {_sql_str(f'{_WS}+')}, ' ', 'g')"
    if case:
        expr = f"{case}({expr})"
    return f"NULLIF({expr}, '')"


def _matches(col: str, pattern: str) -> str:
    return f"REGEXP_MATCHES({col}, {_sql_str(pattern)})"


def _fingerprint(cols: list[str]) -> str:
    # NULL and '' must differ, and field boundaries must be unambiguous: tag each value and
    # join with the ASCII unit separator, which standardised fields cannot contain.
    parts = ", ".join(f"CASE WHEN {c} IS NULL THEN 'N' ELSE 'V' || CAST({c} AS VARCHAR) END" for c in cols)
    return f"MD5(CONCAT_WS(CHR(31), {parts}))"


def standardised_sql(source: str = "raw_rows") -> str:
    """Trim, collapse and re-case the input fields (DESIGN §3, Standardisation)."""
    raw = ", ".join(f"{c} AS raw_{c}" for c in INPUT_COLUMNS)
    return f"""
SELECT source_file, ingestion_date, {raw},
  {_clean("customer_id")} AS s_customer_id,
  {_clean("first_name", collapse=True)} AS s_first_name,
  {_clean("last_name", collapse=True)} AS s_last_name,
  {_clean("email", case="LOWER")} AS s_email,
  {_clean("purchase_id")} AS s_purchase_id,
  {_clean("purchase_date")} AS s_purchase_date,
  {_clean("amount")} AS s_amount,
  {_clean("currency", case="UPPER")} AS s_currency
FROM {source}"""


def fx_ranges_sql(source: str = "fx_rates") -> str:
    """Each rate with the day its successor starts: the rate for a day is the latest valid_from."""
    return f"""
SELECT currency, CAST(rate_to_aud AS {RATE_TYPE}) AS rate_to_aud, valid_from,
  LEAD(valid_from) OVER (PARTITION BY currency ORDER BY valid_from) AS valid_to
FROM {source}"""


def validated_sql(standardised: str, fx_ranges: str, *, max_amount: Decimal) -> str:
    """Type every field and give each row its first failing reason (NULL when it passes)."""

    def int_value(col: str) -> str:
        return f"CASE WHEN {_matches(col, INTEGER_PATTERN)} THEN TRY_CAST({col} AS BIGINT) END"

    reason = f"""CASE
    WHEN s_customer_id IS NULL THEN '{Reason.MISSING_CUSTOMER_ID}'
    WHEN customer_id IS NULL OR customer_id < 1 THEN '{Reason.INVALID_CUSTOMER_ID}'
    WHEN s_purchase_id IS NULL THEN '{Reason.MISSING_PURCHASE_ID}'
    WHEN purchase_id IS NULL OR purchase_id < 1 THEN '{Reason.INVALID_PURCHASE_ID}'
    WHEN s_purchase_date IS NULL THEN '{Reason.MISSING_PURCHASE_DATE}'
    WHEN purchase_date IS NULL THEN '{Reason.INVALID_PURCHASE_DATE}'
    WHEN purchase_date > ingestion_date + INTERVAL 1 DAY THEN '{Reason.FUTURE_PURCHASE_DATE}'
    WHEN s_amount IS NULL THEN '{Reason.MISSING_AMOUNT}'
    WHEN amount_wide IS NULL THEN '{Reason.INVALID_AMOUNT}'
    WHEN amount_wide < 0 THEN '{Reason.NEGATIVE_AMOUNT}'
    WHEN amount_wide > CAST('{max_amount}' AS {WIDE_AMOUNT_TYPE}) THEN '{Reason.AMOUNT_TOO_LARGE}'
    WHEN s_currency IS NULL THEN '{Reason.MISSING_CURRENCY}'
    WHEN rate_to_aud IS NULL THEN '{Reason.UNKNOWN_CURRENCY}'
  END"""
    assert MAX_ID == 2**63 - 1  # BIGINT's range is exactly the id range 1..2^63-1
    typed = f"""
SELECT s.*,
  {int_value("s_customer_id")} AS customer_id,
  {int_value("s_purchase_id")} AS purchase_id,
  CASE WHEN {_matches("s_purchase_date", DATE_PATTERN)}
       THEN TRY_CAST(s_purchase_date AS DATE) END AS purchase_date,
  CASE WHEN {_matches("s_amount", AMOUNT_PATTERN)}
       THEN TRY_CAST(s_amount AS {WIDE_AMOUNT_TYPE}) END AS amount_wide,
  CASE WHEN {_matches("s_email", EMAIL_PATTERN)} THEN s_email END AS email
FROM {standardised} s"""
    fx_joined = f"""
SELECT t.*, f.rate_to_aud
FROM ({typed}) t
LEFT JOIN {fx_ranges} f
  ON f.currency = t.s_currency
 AND t.purchase_date >= f.valid_from
 AND (f.valid_to IS NULL OR t.purchase_date < f.valid_to)"""
    fingerprint = _fingerprint(
        [
            "customer_id",
            "s_first_name",
            "s_last_name",
            "email",
            "purchase_id",
            "purchase_date",
            "amount",
            "s_currency",
        ]
    )
    return f"""
SELECT v.*,
  CASE WHEN reason IS NULL THEN {fingerprint} END AS fingerprint
FROM (
  SELECT j.*, {reason} AS reason,
    CASE WHEN amount_wide >= 0 AND amount_wide <= CAST('{max_amount}' AS {WIDE_AMOUNT_TYPE})
         THEN CAST(amount_wide AS {AMOUNT_TYPE}) END AS amount,
    (s_email IS NOT NULL AND email IS NULL) AS invalid_email
  FROM ({fx_joined}) j
) v"""


# Columns a classified row carries forward (besides outcome and reason).
CARRIED_COLUMNS: tuple[str, ...] = (
    "source_file",
    "ingestion_date",
    *(f"raw_{c}" for c in INPUT_COLUMNS),
    *(f"s_{c}" for c in INPUT_COLUMNS),
    "customer_id",
    "purchase_id",
    "purchase_date",
    "amount",
    "email",
    "rate_to_aud",
    "invalid_email",
    "fingerprint",
)


def classified_sql(validated: str, purchase_keys: str) -> str:
    """Decide every row's outcome: accepted, rejected (with reason) or duplicate (DESIGN §3).

    Duplicates are judged on purchase_id among rows that passed every other rule, by the
    fingerprint of their standardised fields, so the outcome does not depend on row order.
    """
    carried = ", ".join(CARRIED_COLUMNS)
    return f"""
WITH passed AS (
  SELECT * FROM {validated} WHERE reason IS NULL
),
per_id AS (
  SELECT purchase_id, COUNT(DISTINCT fingerprint) AS versions
  FROM passed GROUP BY purchase_id
),
ranked AS (
  SELECT p.*, i.versions, k.fingerprint AS earlier_fingerprint,
    ROW_NUMBER() OVER (PARTITION BY p.purchase_id
                       ORDER BY p.ingestion_date, p.source_file) AS copy_number
  FROM passed p
  JOIN per_id i ON i.purchase_id = p.purchase_id
  LEFT JOIN {purchase_keys} k ON k.purchase_id = p.purchase_id
)
SELECT {carried},
  CASE
    WHEN versions > 1 THEN '{REJECTED}'
    WHEN earlier_fingerprint IS NOT NULL AND earlier_fingerprint <> fingerprint THEN '{REJECTED}'
    WHEN earlier_fingerprint IS NOT NULL OR copy_number > 1 THEN '{DUPLICATE}'
    ELSE '{ACCEPTED}'
  END AS outcome,
  CASE
    WHEN versions > 1 THEN '{Reason.CONFLICTING_DUPLICATE}'
    WHEN earlier_fingerprint IS NOT NULL AND earlier_fingerprint <> fingerprint
      THEN '{Reason.CONFLICTING_DUPLICATE}'
  END AS reason
FROM ranked r
UNION ALL
SELECT {carried}, '{REJECTED}' AS outcome, reason
FROM {validated} WHERE reason IS NOT NULL"""


def silver_sql(classified: str) -> str:
    """Accepted rows in the silver schema, with AUD amounts rounded half-up to the cent."""
    exprs = {
        "purchase_id": "purchase_id",
        "customer_id": "customer_id",
        "first_name": "s_first_name",
        "last_name": "s_last_name",
        "full_name": "NULLIF(CONCAT_WS(' ', s_first_name, s_last_name), '')",
        "email": "email",
        "purchase_date": "purchase_date",
        "amount": "amount",
        "currency": "s_currency",
        "rate_to_aud": "rate_to_aud",
        "amount_aud": (
            f"CAST(ROUND(CAST(amount AS {WIDE_AMOUNT_TYPE}) * "
            f"CAST(rate_to_aud AS {WIDE_RATE_TYPE}), 2) AS {AUD_TYPE})"
        ),
        "ingestion_date": "ingestion_date",
        "source_file": "source_file",
    }
    assert list(exprs) == list(SILVER_COLUMNS)
    cols = ",\n  ".join(
        f"CAST({expr} AS {SILVER_COLUMNS[name]}) AS {name}" for name, expr in exprs.items()
    )
    return f"SELECT\n  {cols}\nFROM {classified} WHERE outcome = '{ACCEPTED}'"


def quarantine_sql(classified: str, malformed: str = "malformed_rows") -> str:
    """Rejected rows with their raw values and reason, plus the records the parser rejected."""
    raw = ", ".join(f"raw_{c} AS {c}" for c in INPUT_COLUMNS)
    nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in INPUT_COLUMNS)
    order = ", ".join(QUARANTINE_COLUMNS)
    return f"""
SELECT {order} FROM (
  SELECT {raw}, CAST(NULL AS VARCHAR) AS raw_line, source_file,
    CAST(NULL AS BIGINT) AS line_number, reason, ingestion_date
  FROM {classified} WHERE outcome = '{REJECTED}'
  UNION ALL
  SELECT {nulls}, raw_line, source_file, CAST(line_number AS BIGINT) AS line_number,
    '{Reason.MALFORMED_ROW}' AS reason, ingestion_date
  FROM {malformed}
) q"""


def purchase_keys_sql(classified: str) -> str:
    """The fingerprints of newly accepted purchases, for dedup in later runs."""
    return f"""
SELECT CAST(purchase_id AS BIGINT) AS purchase_id, fingerprint
FROM {classified} WHERE outcome = '{ACCEPTED}'"""


def file_counts_sql(classified: str, malformed: str = "malformed_rows") -> str:
    """Rows per (file, outcome, reason), plus invalid-email warnings: the conservation ledger."""
    return f"""
SELECT source_file, outcome, reason, COUNT(*) AS n,
  SUM(CASE WHEN outcome = '{ACCEPTED}' AND invalid_email THEN 1 ELSE 0 END) AS invalid_emails
FROM {classified} GROUP BY source_file, outcome, reason
UNION ALL
SELECT source_file, '{REJECTED}' AS outcome, '{Reason.MALFORMED_ROW}' AS reason,
  COUNT(*) AS n, 0 AS invalid_emails
FROM {malformed} GROUP BY source_file"""
