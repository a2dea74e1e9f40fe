"""Bronze -> Silver: the row rules of DESIGN §3, written once as SQL that every engine runs.

The SQL is in DuckDB's dialect; the Spark engine transpiles it with sqlglot. Only functions
with the same meaning on both engines are used (regex anchors, TRY_CAST, CASE, MD5, windows
without DISTINCT), and every decimal operation names its precision so both round alike.

A batch's records are read once: `checked_sql` standardises, types and checks every record
in one pass, and the engine stores that relation (`checked`: typed standardised values, the
first failing reason, and only as much raw text as quarantine can need). Everything else —
the duplicate decisions, silver, quarantine, purchase keys and the per-file counts — is
computed from the stored rows, never from the input again.

Inputs are relations the engine or the step registers:
  records(row_id, file_no, ingestion_date, <INPUT_COLUMNS as VARCHAR>)  parsed records;
      row_id is unique within the batch (any engine-specific numbering)
  batch_files(file_no, source_file, ingestion_date)  the batch's files, file_no ascending
      in arrival order (ingestion date, then path)
  malformed_rows(source_file, ingestion_date, line_number, raw_line, reason)  records that
      did not parse (malformed_row) or were cut out as too long (record_too_large)
  fx_rates(currency, rate_to_aud, valid_from)
  purchase_keys(purchase_id)            every purchase_id accepted by earlier batches
  silver_history(<SILVER_COLUMNS>)      silver of earlier batches (read only for matched ids)

Cost: a clean, valid record (almost all of them) costs one regular expression; only the rare
rows that need cleaning or fail a rule pay for the per-field expressions, and only the rows
whose purchase_id repeats in the batch or was seen before pay for the duplicate analysis.
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
    MAX_AUD,
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

# The fast path: one expression over the joined raw fields that holds only for a record
# that needs no cleaning (no whitespace but single inner spaces in names, no control
# character) AND whose transaction fields and email already match their rules' patterns.
# Every piece excludes the separator, so the fields line up one to one; a record it does
# not match takes the per-field path, which is the definition of the rules. `\z` (end of
# text on RE2 and Java alike) rather than `$`, which Java also matches before a final LF.
_PLAIN = r"[^\s\x{0B}\x{85}\p{Z}|" + CONTROL_CHARACTERS[1:-1] + "]"
_PLAIN_NOT_AT = r"[^@\s\x{0B}\x{85}\p{Z}|" + CONTROL_CHARACTERS[1:-1] + "]"
_CLEAN_WORDS = f"(?:{_PLAIN}+(?: {_PLAIN}+)*)?"
_CLEAN_FIELD = {
    "customer_id": INTEGER_PATTERN[1:-1],
    "first_name": _CLEAN_WORDS,
    "last_name": _CLEAN_WORDS,
    "email": f"(?:{_PLAIN_NOT_AT}+@{_PLAIN_NOT_AT}+\\.{_PLAIN_NOT_AT}+)?",
    "purchase_id": INTEGER_PATTERN[1:-1],
    "purchase_date": DATE_PATTERN[1:-1],
    "amount": AMOUNT_PATTERN[1:-1].replace("(", "(?:"),  # no capture: a little faster
    "currency": _CLEAN_WORDS,
}
assert list(_CLEAN_FIELD) == list(INPUT_COLUMNS)
_CLEAN_AND_VALID = "^" + r"\|".join(_CLEAN_FIELD.values()) + r"\z"


def standardised_sql(source: str = "records", *, fast_path: bool = True) -> str:
    """Trim, collapse and re-case the input fields (DESIGN §3, Standardisation).

    Carries row_id, file_no and ingestion_date, the raw fields as raw_<name> and the
    standardised ones as s_<name>, plus `clean_and_valid` (the fast path held). With
    `fast_path` False every record takes the per-field path: the same result, slower (the
    tests compare the two).
    """
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
SELECT row_id, file_no, ingestion_date, {raw}, clean_and_valid,
  {clean("customer_id")} AS s_customer_id,
  {clean("first_name", collapse=True, attribute=True)} AS s_first_name,
  {clean("last_name", collapse=True, attribute=True)} AS s_last_name,
  {clean("email", case="LOWER", attribute=True)} AS s_email,
  {clean("purchase_id")} AS s_purchase_id,
  {clean("purchase_date")} AS s_purchase_date,
  {clean("amount")} AS s_amount,
  {clean("currency", case="UPPER")} AS s_currency
FROM (
  SELECT j.*,
    CASE WHEN clean_and_valid THEN FALSE
         ELSE {_matches("joined", _NEEDS_CLEANING)} END AS needs_cleaning
  FROM (
    SELECT f.*, {_matches("joined", _CLEAN_AND_VALID) if fast_path else "FALSE"}
      AS clean_and_valid
    FROM (
      SELECT r.*, CONCAT_WS({_sql_str(_FIELD_SEPARATOR)}, {joined}) AS joined FROM {source} r
    ) f
  ) j
) flagged"""  # nosec B608  # internal names only


def fx_ranges_sql(source: str = "fx_rates") -> str:
    """Each rate with the day its successor starts: the rate for a day is the latest valid_from."""
    return f"""
SELECT currency, CAST(rate_to_aud AS {RATE_TYPE}) AS rate_to_aud, valid_from,
  LEAD(valid_from) OVER (PARTITION BY currency ORDER BY valid_from) AS valid_to
FROM {source}"""  # nosec B608  # internal names only


# How a checked row's value reads as text. When every raw field of a row equals its value's
# text (nearly every row), the raw fields are not stored again: the quarantine of a
# conflicting duplicate rebuilds them from the values. Otherwise they are kept as they came,
# in one list (`raw_fields`, in _AS_TEXT's order), which costs a NULL for the other rows.
# Amounts are short and their text is rarely the canonical text of the decimal (10.5 is
# 10.5000): kept whole, in raw_amount.
_AS_TEXT: dict[str, str] = {
    "customer_id": "CAST(customer_id AS VARCHAR)",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "purchase_id": "CAST(purchase_id AS VARCHAR)",
    "purchase_date": "CAST(purchase_date AS VARCHAR)",
    "currency": "currency",
}
_RAW_KEPT_WHOLE = "amount"
assert set(_AS_TEXT) | {_RAW_KEPT_WHOLE} == set(INPUT_COLUMNS)

CHECKED_COLUMNS: tuple[str, ...] = (
    "row_id",
    "file_no",
    *INPUT_COLUMNS,  # typed standardised values (amount NULL when the row is rejected)
    "rate_to_aud",
    "reason",
    "invalid_email",
    f"raw_{_RAW_KEPT_WHOLE}",
    "raw_fields",  # the other raw fields, where one is not its value's text (else NULL)
)
"""Columns of a checked row: the one stored relation of a batch's records."""


def checked_sql(
    records: str, fx_ranges: str, *, max_amount: Decimal, fast_path: bool = True
) -> str:
    """Standardise, type and check every record: typed values and the first failing reason
    (NULL when every rule passes), in one pass over `records` (columns: CHECKED_COLUMNS).
    `fast_path`: see standardised_sql."""

    def typed(col: str, pattern: str, cast: str) -> str:
        # The fast path already matched the pattern; others match it here.
        return (f"CASE WHEN clean_and_valid THEN {cast} "
                f"WHEN {_matches(col, pattern)} THEN {cast} END")

    limit = f"CAST('{max_amount}' AS {WIDE_AMOUNT_TYPE})"
    # From here on the AUD amount rounds to more than the serving table can hold.
    aud_limit = f"CAST('{MAX_AUD + Decimal('0.005')}' AS DECIMAL(38,3))"
    reason = f"""CASE
    WHEN s_customer_id IS NULL THEN '{Reason.MISSING_CUSTOMER_ID}'
    WHEN customer_id IS NULL OR customer_id < 1 THEN '{Reason.INVALID_CUSTOMER_ID}'
    WHEN s_purchase_id IS NULL THEN '{Reason.MISSING_PURCHASE_ID}'
    WHEN purchase_id IS NULL OR purchase_id < 1 THEN '{Reason.INVALID_PURCHASE_ID}'
    WHEN s_purchase_date IS NULL THEN '{Reason.MISSING_PURCHASE_DATE}'
    WHEN purchase_date IS NULL THEN '{Reason.INVALID_PURCHASE_DATE}'
    WHEN purchase_date > ingestion_date + INTERVAL 1 DAY THEN '{Reason.FUTURE_PURCHASE_DATE}'
    WHEN s_amount IS NULL THEN '{Reason.MISSING_AMOUNT}'
    WHEN amount_wide IS NULL AND {_matches("s_amount", AMOUNT_PATTERN)}
      -- A plain decimal of more digits than even the wide type holds.
      THEN CASE WHEN s_amount LIKE '-%' THEN '{Reason.NEGATIVE_AMOUNT}'
                ELSE '{Reason.AMOUNT_TOO_LARGE}' END
    WHEN amount_wide IS NULL THEN '{Reason.INVALID_AMOUNT}'
    WHEN amount_wide < 0 THEN '{Reason.NEGATIVE_AMOUNT}'
    WHEN amount_wide > {limit} THEN '{Reason.AMOUNT_TOO_LARGE}'
    WHEN s_currency IS NULL THEN '{Reason.MISSING_CURRENCY}'
    WHEN rate_to_aud IS NULL THEN '{Reason.UNKNOWN_CURRENCY}'
    WHEN amount_wide * CAST(rate_to_aud AS {WIDE_RATE_TYPE}) >= {aud_limit}
      THEN '{Reason.AMOUNT_TOO_LARGE}'
  END"""
    assert MAX_ID == 2**63 - 1  # BIGINT's range is exactly the id range 1..2^63-1
    typed_rows = f"""
SELECT s.*,
  {typed("s_customer_id", INTEGER_PATTERN, "TRY_CAST(s_customer_id AS BIGINT)")} AS customer_id,
  {typed("s_purchase_id", INTEGER_PATTERN, "TRY_CAST(s_purchase_id AS BIGINT)")} AS purchase_id,
  {typed("s_purchase_date", DATE_PATTERN, "TRY_CAST(s_purchase_date AS DATE)")} AS purchase_date,
  {typed("s_amount", AMOUNT_PATTERN, f"TRY_CAST(s_amount AS {WIDE_AMOUNT_TYPE})")} AS amount_wide,
  {typed("s_email", EMAIL_PATTERN, "s_email")} AS email
FROM ({standardised_sql(records, fast_path=fast_path)}) s"""  # nosec B608  # internal names only
    fx_joined = f"""
SELECT t.*, f.rate_to_aud
FROM ({typed_rows}) t
LEFT JOIN {fx_ranges} f
  ON f.currency = t.s_currency
 AND t.purchase_date >= f.valid_from
 AND (f.valid_to IS NULL OR t.purchase_date < f.valid_to)"""  # nosec B608  # internal names only
    differs = " OR ".join(f"raw_{c} IS DISTINCT FROM {e}" for c, e in _AS_TEXT.items())
    raw_list = ", ".join(f"raw_{c}" for c in _AS_TEXT)
    return f"""
SELECT row_id, file_no, {", ".join(INPUT_COLUMNS)}, rate_to_aud, reason, invalid_email,
  raw_{_RAW_KEPT_WHOLE}, CASE WHEN {differs} THEN [{raw_list}] END AS raw_fields
FROM (
  SELECT row_id, file_no, customer_id, s_first_name AS first_name, s_last_name AS last_name,
    email, purchase_id, purchase_date,
    CASE WHEN reason IS NULL THEN CAST(amount_wide AS {AMOUNT_TYPE}) END AS amount,
    s_currency AS currency, rate_to_aud, reason,
    (s_email IS NOT NULL AND email IS NULL) AS invalid_email,
    {", ".join(f"raw_{c}" for c in INPUT_COLUMNS)}
  FROM (SELECT j.*, {reason} AS reason FROM ({fx_joined}) j) v
) c"""  # nosec B608  # internal names only


def _raw_value(col: str) -> str:
    """A checked row's raw text of input column `col` (see _AS_TEXT)."""
    if col == _RAW_KEPT_WHOLE:
        return f"raw_{col}"
    position = list(_AS_TEXT).index(col) + 1  # lists are 1-based here (0-based in Spark)
    return f"CASE WHEN raw_fields IS NULL THEN {_AS_TEXT[col]} ELSE raw_fields[{position}] END"


def duplicate_decisions_sql(
    checked: str, batch_files: str, purchase_keys: str, silver_history: str
) -> str:
    """Outcome of every row whose purchase_id repeats in the batch or was accepted before.

    Rows of one batch with one purchase_id: identical copies keep the first in arrival order
    (ingestion date, source file), any difference rejects them all; a purchase_id accepted by
    an earlier batch makes the row a duplicate when identical, a conflict otherwise.
    Returns (row_id, outcome, reason) for those rows only; every other passed row is accepted.
    """
    fingerprint = _fingerprint([f"c.{c}" for c in INPUT_COLUMNS])
    earlier_fingerprint = _fingerprint(list(INPUT_COLUMNS))
    return f"""
WITH passed AS (
  SELECT purchase_id FROM {checked} WHERE reason IS NULL
),
repeated AS (
  SELECT purchase_id FROM passed GROUP BY purchase_id HAVING COUNT(*) > 1
),
seen AS (
  SELECT DISTINCT k.purchase_id FROM {purchase_keys} k
  WHERE k.purchase_id IN (SELECT purchase_id FROM passed)
),
suspects AS (
  SELECT c.row_id, f.source_file, f.ingestion_date, c.purchase_id, {fingerprint} AS fingerprint
  FROM {checked} c JOIN {batch_files} f ON f.file_no = c.file_no
  WHERE c.reason IS NULL
    AND (c.purchase_id IN (SELECT purchase_id FROM repeated)
         OR c.purchase_id IN (SELECT purchase_id FROM seen))
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


def classified_sql(checked: str, decisions: str) -> str:
    """Every checked row with its outcome (accepted / rejected / duplicate) and reason.

    The decisions are few (repeated or earlier-seen purchase ids only): each reader of this
    relation probes a small hash table, the stored rows are not copied."""
    carried = ", ".join(f"c.{col}" for col in CHECKED_COLUMNS if col != "reason")
    return f"""
SELECT {carried},
  CASE WHEN c.reason IS NOT NULL THEN '{REJECTED}'
       ELSE COALESCE(d.outcome, '{ACCEPTED}') END AS outcome,
  COALESCE(c.reason, d.reason) AS reason
FROM {checked} c
LEFT JOIN {decisions} d ON d.row_id = c.row_id"""  # nosec B608  # internal names only


def aud_amount_sql(amount: str, rate: str) -> str:
    """`amount` (AMOUNT_TYPE) x `rate` (RATE_TYPE), rounded half away from zero to the cent,
    as AUD_TYPE: exact for every pair of values the two types can hold."""
    # DuckDB multiplies DECIMAL(18,4) by DECIMAL(18,8) as DECIMAL(18,12) in a 64-bit integer
    # and raises an overflow error past 10^6; the wide (38-digit) form is always exact, but
    # rounding a 128-bit decimal cost a second on 5M rows. So the narrow form takes the
    # products it holds exactly (|amount| < 10^5 and |rate| < 10, so |product| < 10^6) and
    # the wide form takes the rest. Both round the same exact product the same way; Spark
    # multiplies either form exactly (DECIMAL(37,12)).
    wide = (f"CAST(ROUND(CAST({amount} AS {WIDE_AMOUNT_TYPE}) * "
            f"CAST({rate} AS {WIDE_RATE_TYPE}), 2) AS {AUD_TYPE})")
    return (f"CASE WHEN ABS({amount}) < 100000 AND ABS({rate}) < 10 "
            f"THEN CAST(ROUND({amount} * {rate}, 2) AS {AUD_TYPE}) ELSE {wide} END")


def silver_sql(classified: str, batch_files: str = "batch_files") -> str:
    """Accepted rows in the silver schema, with AUD amounts rounded half-up to the cent."""
    exprs = {
        "purchase_id": "c.purchase_id",
        "customer_id": "c.customer_id",
        "first_name": "c.first_name",
        "last_name": "c.last_name",
        "full_name": "NULLIF(CONCAT_WS(' ', c.first_name, c.last_name), '')",
        "email": "c.email",
        "purchase_date": "c.purchase_date",
        "amount": "c.amount",
        "currency": "c.currency",
        "rate_to_aud": "c.rate_to_aud",
        "amount_aud": aud_amount_sql("c.amount", "c.rate_to_aud"),
        "ingestion_date": "f.ingestion_date",
        "source_file": "f.source_file",
    }
    assert list(exprs) == list(SILVER_COLUMNS)
    cols = ",\n  ".join(
        f"CAST({expr} AS {SILVER_COLUMNS[name]}) AS {name}" for name, expr in exprs.items()
    )
    return f"""
SELECT
  {cols}
FROM {classified} c JOIN {batch_files} f ON f.file_no = c.file_no
WHERE c.outcome = '{ACCEPTED}'"""  # nosec B608  # internal names only


def quarantine_sql(
    classified: str, malformed: str = "malformed_rows", batch_files: str = "batch_files"
) -> str:
    """Rejected rows with their raw values and reason, plus the records rejected before
    parsing into fields (`malformed` carries their reason: malformed_row, record_too_large)."""
    raw = ", ".join(f"{_raw_value(c)} AS {c}" for c in INPUT_COLUMNS)
    nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in INPUT_COLUMNS)
    order = ", ".join(QUARANTINE_COLUMNS)
    return f"""
SELECT {order} FROM (
  SELECT {raw}, CAST(NULL AS VARCHAR) AS raw_line, f.source_file,
    CAST(NULL AS BIGINT) AS line_number, c.reason, f.ingestion_date
  FROM {classified} c JOIN {batch_files} f ON f.file_no = c.file_no
  WHERE c.outcome = '{REJECTED}'
  UNION ALL
  SELECT {nulls}, raw_line, source_file, CAST(line_number AS BIGINT) AS line_number,
    reason, ingestion_date
  FROM {malformed}
) q"""  # nosec B608  # internal names only


def purchase_keys_sql(classified: str) -> str:
    """The purchase_ids newly accepted, for dedup in later batches, sorted."""
    return f"""
SELECT CAST(purchase_id AS BIGINT) AS purchase_id
FROM {classified} WHERE outcome = '{ACCEPTED}'
ORDER BY purchase_id"""  # nosec B608  # internal names only


def file_counts_sql(
    classified: str, malformed: str = "malformed_rows", batch_files: str = "batch_files"
) -> str:
    """Rows per (file, outcome, reason), invalid-email warnings and the purchase_id range of
    each group, in one pass: the conservation ledger and the batch's key range.

    Columns: source_file, outcome, reason, n, invalid_emails, min_purchase_id, max_purchase_id.
    """
    return f"""
SELECT f.source_file, g.outcome, g.reason, g.n, g.invalid_emails,
  g.min_purchase_id, g.max_purchase_id
FROM (
  SELECT file_no, outcome, reason, COUNT(*) AS n,
    SUM(CASE WHEN outcome = '{ACCEPTED}' AND invalid_email THEN 1 ELSE 0 END) AS invalid_emails,
    MIN(purchase_id) AS min_purchase_id, MAX(purchase_id) AS max_purchase_id
  FROM {classified} GROUP BY file_no, outcome, reason
) g JOIN {batch_files} f ON f.file_no = g.file_no
UNION ALL
SELECT source_file, '{REJECTED}' AS outcome, reason, COUNT(*) AS n, 0 AS invalid_emails,
  CAST(NULL AS BIGINT) AS min_purchase_id, CAST(NULL AS BIGINT) AS max_purchase_id
FROM {malformed} GROUP BY source_file, reason"""  # nosec B608  # internal names only


def batch_files_sql(rows: str) -> str:
    """The files of rows that carry source_file and ingestion_date (re-processed quarantine
    rows), numbered in arrival order: batch_files' shape."""
    return f"""
SELECT CAST(ROW_NUMBER() OVER (ORDER BY ingestion_date, source_file) AS INTEGER) AS file_no,
  source_file, ingestion_date
FROM (SELECT DISTINCT source_file, ingestion_date FROM {rows}) d"""  # nosec B608  # internal names only


def records_sql(rows: str, batch_files: str) -> str:
    """Rows in raw_rows' shape (row_id, source_file, ingestion_date, inputs) as `records`."""
    inputs = ", ".join(f"r.{c}" for c in INPUT_COLUMNS)
    return f"""
SELECT r.row_id, f.file_no, r.ingestion_date, {inputs}
FROM {rows} r JOIN {batch_files} f
  ON f.source_file = r.source_file AND f.ingestion_date = r.ingestion_date"""  # nosec B608  # internal names only


BATCH_FILE_COLUMNS: dict[str, str] = {
    "file_no": "INTEGER", "source_file": "VARCHAR", "ingestion_date": "DATE",
}
"""batch_files: the batch's files, by the file_no its records carry."""

MALFORMED_COLUMNS: dict[str, str] = {
    "source_file": "VARCHAR", "ingestion_date": "DATE", "line_number": "BIGINT",
    "raw_line": "VARCHAR", "reason": "VARCHAR",
}
"""malformed_rows: records rejected before they parsed into fields."""
