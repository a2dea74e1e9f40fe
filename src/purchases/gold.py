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


def _latest(value: str, source: str, date_col: str, id_col: str) -> str:
    """Per customer, the latest non-NULL `value` by (date, purchase_id) among `source` rows."""
    return f"""
SELECT customer_id, {value} AS value, {date_col} AS value_date, {id_col} AS value_purchase_id
FROM (
  SELECT customer_id, {value}, {date_col}, {id_col},
    ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY {date_col} DESC, {id_col} DESC) AS rn
  FROM {source} WHERE {value} IS NOT NULL
) ranked WHERE rn = 1"""  # nosec B608  # internal names only


def changed_customers_sql(batch_silver: str, customer_state: str, *, batch_id: int) -> str:
    """Full current state of every customer the batch touched (the gold change set + keys)."""
    candidates = {
        attr: f"""(
  SELECT customer_id, {attr}, purchase_date AS d, purchase_id AS p FROM {batch_silver}
  UNION ALL
  SELECT s.customer_id, s.{attr}, s.{attr}_date AS d, s.{attr}_purchase_id AS p
  FROM {customer_state} s JOIN batch_customers b ON b.customer_id = s.customer_id
)"""  # nosec B608  # internal names only
        for attr in ("full_name", "email")
    }
    return f"""
WITH batch_customers AS (
  SELECT customer_id,
    SUM(amount_aud) AS total_spent_aud,
    MIN(purchase_date) AS first_purchase_date,
    MAX(purchase_date) AS last_purchase_date,
    COUNT(*) AS purchase_count
  FROM {batch_silver} GROUP BY customer_id
),
latest_name AS ({_latest("full_name", candidates["full_name"], "d", "p")}),
latest_email AS ({_latest("email", candidates["email"], "d", "p")})
SELECT
  b.customer_id AS customer_id,
  n.value AS full_name,
  e.value AS email,
  CAST(COALESCE(s.total_spent_aud, 0) + b.total_spent_aud AS {AUD_TYPE}) AS total_spent_aud,
  CASE WHEN s.first_purchase_date IS NULL OR b.first_purchase_date < s.first_purchase_date
       THEN b.first_purchase_date ELSE s.first_purchase_date END AS first_purchase_date,
  CASE WHEN s.last_purchase_date IS NULL OR b.last_purchase_date > s.last_purchase_date
       THEN b.last_purchase_date ELSE s.last_purchase_date END AS last_purchase_date,
  CAST(COALESCE(s.purchase_count, 0) + b.purchase_count AS BIGINT) AS purchase_count,
  CAST({int(batch_id)} AS BIGINT) AS batch_id,
  n.value_date AS full_name_date,
  CAST(n.value_purchase_id AS BIGINT) AS full_name_purchase_id,
  e.value_date AS email_date,
  CAST(e.value_purchase_id AS BIGINT) AS email_purchase_id
FROM batch_customers b
LEFT JOIN {customer_state} s ON s.customer_id = b.customer_id
LEFT JOIN latest_name n ON n.customer_id = b.customer_id
LEFT JOIN latest_email e ON e.customer_id = b.customer_id"""  # nosec B608  # internal names only


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
    """
    cols = [
        f"{_servable(c)} AS {c}" if c in ("full_name", "email") else c for c in GOLD_COLUMNS
    ]
    return f"SELECT {', '.join(cols)} FROM {changed}"  # nosec B608  # internal names only


def next_state_sql(customer_state: str, changed: str) -> str:
    """Customer state after the batch: unchanged customers as they were, changed ones replaced."""
    cols = ", ".join(CUSTOMER_STATE_COLUMNS)
    return f"""
SELECT {cols} FROM {customer_state} s
WHERE NOT EXISTS (SELECT 1 FROM {changed} c WHERE c.customer_id = s.customer_id)
UNION ALL
SELECT {cols} FROM {changed}"""  # nosec B608  # internal names only
