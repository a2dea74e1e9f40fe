"""Bronze -> Silver: the row rules of DESIGN §3, written once as SQL that every engine runs.

The SQL is in DuckDB's dialect; the Spark engine transpiles it with sqlglot. Only functions
with the same meaning on both engines are used (regex anchors, TRY_CAST, CASE, MD5, windows
without DISTINCT), and every decimal operation names its precision so both round alike.

Inputs are relations the engine registers:
  raw_rows(row_id, source_file, ingestion_date, <INPUT_COLUMNS as VARCHAR>)  parsed records;
      row_id is unique within the batch (any engine-specific numbering)
  malformed_rows(source_file, ingestion_date, line_number, raw_line, reason)  records that
      did not parse (malformed_row) or were cut out as too long (record_too_large)
  fx_rates(currency, rate_to_aud, valid_from)
  purchase_keys(purchase_id)            every purchase_id accepted by earlier batches
  silver_history(<SILVER_COLUMNS>)      silver of earlier batches (read only for matched ids)

Cost: every row pays for standardisation and typing; only the rare rows whose purchase_id
repeats in the batch or was seen before pay for the duplicate analysis.
"""

from __future__ import annotations

from decimal import Decimal

from purchases.contract import (
    AMOUNT_PATTERN,
    AMOUNT_TYPE,
    AUD_TYPE,
    CONTROL_CHARACTERS,
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


def _without_controls(col: str) -> str:
    return f"REGEXP_REPLACE({col}, {_sql_str(CONTROL_CHARACTERS)}, '', 'g')"


def _matches(col: str, pattern: str) -> str:
    return f"REGEXP_MATCHES({col}, {_sql_str(pattern)})"


def _fingerprint(cols: list[str]) -> str:
    # NULL and '' must differ, and field boundaries must be unambiguous: tag each value and
    # join with the ASCII unit separator, which standardised fields cannot contain.
    parts = ", ".join(
        f"CASE WHEN {c} IS NULL THEN 'N' ELSE 'V' || CAST({c} AS VARCHAR) END" for c in cols
    )
    return f"MD5(CONCAT_WS(CHR(31), {parts}))"


# Any whitespace other than a single ASCII space, a double space, a space at a field's edge
# (fields joined by _FIELD_SEPARATOR), or a control character: a row without any of these
# needs no regex work at all.
_ODD_WS = (
    r"[\t\n\r\f\x{0B}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}"
    r"\x{202F}\x{205F}\x{3000}]"
)
# The separator is printable, so in none of those classes: a field holding it can only make a
# clean row look dirty (costing one regex pass), never a dirty one look clean.
_FIELD_SEPARATOR = "|"
_NEEDS_CLEANING = r"(?:^|\|) |  | (?:\||$)|" + _ODD_WS + "|" + CONTROL_CHARACTERS


def standardised_sql(source: str = "raw_rows") -> str:
    """Trim, collapse and re-case the input fields (DESIGN §3, Standardisation)."""
    raw = ", ".join(f"{c} AS raw_{c}" for c in INPUT_COLUMNS)
    joined = ", ".join(f"COALESCE({c}, '')" for c in INPUT_COLUMNS)

    def clean(
        col: str, *, collapse: bool = False, case: str | None = None, attribute: bool = False
    ) -> str:
        # Attribute fields lose control characters (they never reject a purchase, and a
        # database may refuse them); transaction fields keep theirs and so fail their rule.
        slow = _trimmed(_without_controls(col) if attribute else col)
        if collapse:
            slow = f"REGEXP_REPLACE({slow}, {_sql_str(f'{_WS}+')}, ' ', 'g')"
        expr = f"CASE WHEN needs_cleaning THEN {slow} ELSE {col} END"
        if case:
            expr = f"{case}({expr})"
        return f"NULLIF({expr}, '')"

    return f"""
SELECT row_id, source_file, ingestion_date, {raw},
  {clean("customer_id")} AS s_customer_id,
  {clean("first_name", collapse=True, attribute=True)} AS s_first_name,
  {clean("last_name", collapse=True, attribute=True)} AS s_last_name,
  {clean("email", case="LOWER", attribute=True)} AS s_email,
  {clean("purchase_id")} AS s_purchase_id,
  {clean("purchase_date")} AS s_purchase_date,
  {clean("amount")} AS s_amount,
  {clean("currency", case="UPPER")} AS s_currency
FROM (
  SELECT r.*,
    {_matches(f"CONCAT_WS({_sql_str(_FIELD_SEPARATOR)}, {joined})", _NEEDS_CLEANING)}
      AS needs_cleaning
  FROM {source} r
) flagged"""  # nosec B608  # internal names only


def fx_ranges_sql(source: str = "fx_rates") -> str:
    """Each rate with the day its successor starts: the rate for a day is the latest valid_from."""
    return f"""
SELECT currency, CAST(rate_to_aud AS {RATE_TYPE}) AS rate_to_aud, valid_from,
  LEAD(valid_from) OVER (PARTITION BY currency ORDER BY valid_from) AS valid_to
FROM {source}"""  # nosec B608  # internal names only


def validated_sql(standardised: str, fx_ranges: str, *, max_amount: Decimal) -> str:
    """Type every field and give each row its first failing reason (NULL when it passes)."""

    def int_value(col: str) -> str:
        return f"CASE WHEN {_matches(col, INTEGER_PATTERN)} THEN TRY_CAST({col} AS BIGINT) END"

    limit = f"CAST('{max_amount}' AS {WIDE_AMOUNT_TYPE})"
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
    WHEN amount_wide > {limit} THEN '{Reason.AMOUNT_TOO_LARGE}'
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
FROM {standardised} s"""  # nosec B608  # internal names only
    fx_joined = f"""
SELECT t.*, f.rate_to_aud
FROM ({typed}) t
LEFT JOIN {fx_ranges} f
  ON f.currency = t.s_currency
 AND t.purchase_date >= f.valid_from
 AND (f.valid_to IS NULL OR t.purchase_date < f.valid_to)"""  # nosec B608  # internal names only
    carried = ", ".join(VALIDATED_COLUMNS[:-3])
    return f"""
SELECT {carried}, reason,
  CASE WHEN reason IS NULL THEN CAST(amount_wide AS {AMOUNT_TYPE}) END AS amount,
  (s_email IS NOT NULL AND email IS NULL) AS invalid_email
FROM (SELECT j.*, {reason} AS reason FROM ({fx_joined}) j) v"""  # nosec B608  # internal names only


VALIDATED_COLUMNS: tuple[str, ...] = (
    "row_id",
    "source_file",
    "ingestion_date",
    *(f"raw_{c}" for c in INPUT_COLUMNS),
    "customer_id",
    "s_first_name",
    "s_last_name",
    "email",
    "purchase_id",
    "purchase_date",
    "s_currency",
    "rate_to_aud",
    "reason",
    "amount",
    "invalid_email",
)
"""Columns of a validated row: raw text for quarantine, typed standardised values for silver."""

# The eight input fields as typed standardised values: what "identical" compares (DESIGN §3).
# In a validated row some carry an s_ prefix (standardised text); silver uses the plain names.
_STANDARDISED_NAMES = {
    "first_name": "s_first_name",
    "last_name": "s_last_name",
    "currency": "s_currency",
}
_IDENTITY = tuple(_STANDARDISED_NAMES.get(c, c) for c in INPUT_COLUMNS)
_SILVER_IDENTITY = INPUT_COLUMNS


def duplicate_decisions_sql(validated: str, purchase_keys: str, silver_history: str) -> str:
    """Outcome of every row whose purchase_id repeats in the batch or was accepted before.

    Rows of one batch with one purchase_id: identical copies keep the first in arrival order
    (ingestion date, source file), any difference rejects them all; a purchase_id accepted by
    an earlier batch makes the row a duplicate when identical, a conflict otherwise.
    Returns (row_id, outcome, reason) for those rows only; every other passed row is accepted.
    """
    fingerprint = _fingerprint(list(_IDENTITY))
    earlier_fingerprint = _fingerprint(list(_SILVER_IDENTITY))
    return f"""
WITH passed AS (
  SELECT row_id, source_file, ingestion_date, {", ".join(_IDENTITY)}
  FROM {validated} WHERE reason IS NULL
),
repeated AS (
  SELECT purchase_id FROM passed GROUP BY purchase_id HAVING COUNT(*) > 1
),
seen AS (
  SELECT DISTINCT k.purchase_id FROM {purchase_keys} k
  WHERE k.purchase_id IN (SELECT purchase_id FROM passed)
),
suspects AS (
  SELECT row_id, source_file, ingestion_date, purchase_id, {fingerprint} AS fingerprint
  FROM passed
  WHERE purchase_id IN (SELECT purchase_id FROM repeated)
     OR purchase_id IN (SELECT purchase_id FROM seen)
),
versions AS (
  SELECT purchase_id, COUNT(DISTINCT fingerprint) AS versions FROM suspects GROUP BY purchase_id
),
earlier AS (
  SELECT purchase_id, MIN({earlier_fingerprint}) AS fingerprint
  FROM {silver_history}
  WHERE purchase_id IN (SELECT purchase_id FROM seen)
  GROUP BY purchase_id
),
ranked AS (
  SELECT s.row_id, s.fingerprint, v.versions, e.fingerprint AS earlier_fingerprint,
    ROW_NUMBER() OVER (PARTITION BY s.purchase_id
                       ORDER BY s.ingestion_date, s.source_file, s.row_id) AS copy_number
  FROM suspects s
  JOIN versions v ON v.purchase_id = s.purchase_id
  LEFT JOIN earlier e ON e.purchase_id = s.purchase_id
)
SELECT row_id,
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
FROM ranked"""  # nosec B608  # internal names only


def classified_sql(validated: str, decisions: str) -> str:
    """Every row with its outcome (accepted / rejected / duplicate) and reason."""
    carried = ", ".join(f"v.{c}" for c in VALIDATED_COLUMNS if c != "reason")
    return f"""
SELECT {carried},
  CASE WHEN v.reason IS NOT NULL THEN '{REJECTED}'
       ELSE COALESCE(d.outcome, '{ACCEPTED}') END AS outcome,
  COALESCE(v.reason, d.reason) AS reason
FROM {validated} v
LEFT JOIN {decisions} d ON d.row_id = v.row_id"""  # nosec B608  # internal names only


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
    # Bandit B608: internal names only
    return f"SELECT\n  {cols}\nFROM {classified} WHERE outcome = '{ACCEPTED}'"  # nosec B608


def quarantine_sql(classified: str, malformed: str = "malformed_rows") -> str:
    """Rejected rows with their raw values and reason, plus the records rejected before
    parsing into fields (`malformed` carries their reason: malformed_row, record_too_large)."""
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
    reason, ingestion_date
  FROM {malformed}
) q"""  # nosec B608  # internal names only


def purchase_keys_sql(classified: str) -> str:
    """The purchase_ids newly accepted, for dedup in later batches."""
    return f"""
SELECT CAST(purchase_id AS BIGINT) AS purchase_id
FROM {classified} WHERE outcome = '{ACCEPTED}'"""  # nosec B608  # internal names only


def file_counts_sql(classified: str, malformed: str = "malformed_rows") -> str:
    """Rows per (file, outcome, reason), plus invalid-email warnings: the conservation ledger."""
    return f"""
SELECT source_file, outcome, reason, COUNT(*) AS n,
  SUM(CASE WHEN outcome = '{ACCEPTED}' AND invalid_email THEN 1 ELSE 0 END) AS invalid_emails
FROM {classified} GROUP BY source_file, outcome, reason
UNION ALL
SELECT source_file, '{REJECTED}' AS outcome, reason, COUNT(*) AS n, 0 AS invalid_emails
FROM {malformed} GROUP BY source_file, reason"""  # nosec B608  # internal names only
