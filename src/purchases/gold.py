"""Silver -> Gold: the per-customer summary of DESIGN §4, merged incrementally.

The summary is a pure function of the set of accepted purchases. Because dedup guarantees a
purchase is accepted once, a batch's aggregates can be added to the kept customer state
exactly; "latest" name/email carry the (purchase_date, purchase_id) they came from, so the
merge picks the same value a full recomputation would. Cost grows with the batch and the
number of customers, never with purchase history.

Inputs: batch_silver (silver rows accepted by this batch), customer_state (state so far).
"""

from __future__ import annotations

from purchases.contract import (
    AUD_TYPE,
    CONTROL_CHARACTERS,
    CUSTOMER_STATE_COLUMNS,
    GOLD_COLUMNS,
    TEXT_WIDTH,
)


def _later(key: str, date_col: str, id_col: str) -> str:
    """Whether the batch's (date, purchase_id) `key` struct is later than the state's."""
    return (f"({date_col} IS NULL OR {key}.d > {date_col} "
            f"OR ({key}.d = {date_col} AND {key}.p > {id_col}))")


def changed_customers_sql(batch_silver: str, customer_state: str, *, batch_id: int) -> str:
    """Full current state of every customer the batch touched (the gold change set + keys).

    One aggregate over the batch gives each customer's sums and, per attribute, the latest
    non-NULL value with its (purchase_date, purchase_id) key; the merge with the kept state
    then compares one key per customer (purchase ids are unique, so keys never tie). No
    window: nothing is sorted.

    A total_spent_aud past what AUD_TYPE holds is NULL (never NULL otherwise: every silver
    row has an amount_aud): `over_limit_sql` finds such a customer, before anything is written.
    """
    # Per attribute, one MAX over (purchase_date, purchase_id, value): structs compare field
    # by field, and the key is unique per customer, so it is the latest row's value with its
    # key; far cheaper to aggregate than ARG_MAX or a window.
    latest = ",\n    ".join(
        f"MAX({{'d': purchase_date, 'p': purchase_id, 'v': {attr}}}) "
        f"FILTER (WHERE {attr} IS NOT NULL) AS {attr}_latest"
        for attr in ("full_name", "email")
    )

    def merged(attr: str) -> str:
        b = f"b.{attr}_latest"
        take = f"{b} IS NOT NULL AND {_later(b, f's.{attr}_date', f's.{attr}_purchase_id')}"
        return f"""CASE WHEN {take} THEN {b}.v ELSE s.{attr} END AS {attr},
    CASE WHEN {take} THEN {b}.d ELSE s.{attr}_date END AS {attr}_date,
    CAST(CASE WHEN {take} THEN {b}.p ELSE s.{attr}_purchase_id END AS BIGINT)
      AS {attr}_purchase_id"""

    return f"""
WITH batch_customers AS (
  SELECT customer_id,
    SUM(amount_aud) AS total_spent_aud,
    MIN(purchase_date) AS first_purchase_date,
    MAX(purchase_date) AS last_purchase_date,
    COUNT(*) AS purchase_count,
    {latest}
  FROM {batch_silver} GROUP BY customer_id
),
merged AS (
  SELECT
    b.customer_id AS customer_id,
    TRY_CAST(COALESCE(s.total_spent_aud, 0) + b.total_spent_aud AS {AUD_TYPE})
      AS total_spent_aud,
    CASE WHEN s.first_purchase_date IS NULL OR b.first_purchase_date < s.first_purchase_date
         THEN b.first_purchase_date ELSE s.first_purchase_date END AS first_purchase_date,
    CASE WHEN s.last_purchase_date IS NULL OR b.last_purchase_date > s.last_purchase_date
         THEN b.last_purchase_date ELSE s.last_purchase_date END AS last_purchase_date,
    CAST(COALESCE(s.purchase_count, 0) + b.purchase_count AS BIGINT) AS purchase_count,
    {merged("full_name")},
    {merged("email")}
  FROM batch_customers b
  LEFT JOIN {customer_state} s ON s.customer_id = b.customer_id
)
SELECT customer_id, full_name, email, total_spent_aud, first_purchase_date,
  last_purchase_date, purchase_count, CAST({int(batch_id)} AS BIGINT) AS batch_id,
  full_name_date, full_name_purchase_id, email_date, email_purchase_id
FROM merged"""  # nosec B608  # internal names only


def over_limit_sql(changed: str) -> str:
    """The lowest customer_id of `changed` whose total passes what AUD_TYPE holds (no row: none
    does)."""
    return (f"SELECT customer_id FROM {changed} "  # nosec B608  # internal names only
            "WHERE total_spent_aud IS NULL ORDER BY customer_id LIMIT 1")


def _servable(col: str) -> str:
    """`col` as every serving database stores it: without control characters (PostgreSQL
    refuses NUL; silver of a lake written before standardisation removed them may hold some),
    cut to the serving columns' width, NULL if nothing is left."""
    stripped = f"REGEXP_REPLACE({col}, '{CONTROL_CHARACTERS}', '', 'g')"
    return f"NULLIF(SUBSTR({stripped}, 1, {TEXT_WIDTH}), '')"


def gold_sql(changed: str) -> str:
    """The gold change set: the customer summary columns of the changed customers.

    full_name and email are made servable here (control characters removed, cut to
    VARCHAR(255) as in the seed DDL), so no name can ever block a load; the customer state
    keeps them as silver has them.

    In customer_id order: a serving database then stages the rows in key order, and one that
    upserts them in the order they were staged (SQLite) visits each page of the summary once,
    without sorting the batch first.
    """
    cols = [
        f"{_servable(c)} AS {c}" if c in ("full_name", "email") else c for c in GOLD_COLUMNS
    ]
    return (f"SELECT {', '.join(cols)} FROM {changed} "  # nosec B608  # internal names only
            "ORDER BY customer_id")


def next_state_sql(customer_state: str, changed: str) -> str:
    """Customer state after the batch: unchanged customers as they were, changed ones replaced."""
    cols = ", ".join(CUSTOMER_STATE_COLUMNS)
    return f"""
SELECT {cols} FROM {customer_state} s
WHERE NOT EXISTS (SELECT 1 FROM {changed} c WHERE c.customer_id = s.customer_id)
UNION ALL
SELECT {cols} FROM {changed}"""  # nosec B608  # internal names only
