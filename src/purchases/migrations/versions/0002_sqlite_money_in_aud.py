"""SQLite: `total_spent_aud` shows AUD (REAL computed from exact integer cents).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Up to 0001 SQLite kept money as integer cents in `total_spent_aud` itself, so the business
query, run raw, printed 5311189 for 53,111.89 AUD. Now the cents move to
`total_spent_aud_cents` (renamed in place: the data is kept bit for bit) and
`total_spent_aud` becomes a VIRTUAL column the database computes as cents / 100.0, indexed
for the business query's sort. The product reads the cents; see
`purchases.contract.MoneyStorage.CENTS` for why that is exact everywhere.

PostgreSQL and MySQL/MariaDB keep DECIMAL(18,2): nothing to do there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("customer_purchase_summary", "customer_purchase_summary_staging")
INDEX = "idx_total_spent_desc"


def _already_done(table: str) -> bool:
    """A SQLite database created at this shape (metadata.create_all) is left as it is."""
    if context.is_offline_mode():
        return False
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    return "total_spent_aud_cents" in columns


def upgrade() -> None:
    """On SQLite: rename the cents, add the AUD column they compute, re-point the index."""
    if op.get_context().dialect.name != "sqlite":
        return
    for table in TABLES:
        if _already_done(table):
            continue
        if table == "customer_purchase_summary":
            op.execute(f"DROP INDEX {INDEX}")
        op.execute(f"ALTER TABLE {table} RENAME COLUMN total_spent_aud TO total_spent_aud_cents")
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN total_spent_aud REAL NOT NULL "
            "GENERATED ALWAYS AS (total_spent_aud_cents / 100.0) VIRTUAL"
        )
        if table == "customer_purchase_summary":
            op.execute(f"CREATE INDEX {INDEX} ON {table} (total_spent_aud DESC)")


def downgrade() -> None:
    """Back to cents in `total_spent_aud` (SQLite only; the data is kept)."""
    if op.get_context().dialect.name != "sqlite":
        return
    for table in TABLES:
        if table == "customer_purchase_summary":
            op.execute(f"DROP INDEX {INDEX}")
        op.execute(f"ALTER TABLE {table} DROP COLUMN total_spent_aud")
        op.execute(f"ALTER TABLE {table} RENAME COLUMN total_spent_aud_cents TO total_spent_aud")
        if table == "customer_purchase_summary":
            op.execute(f"CREATE INDEX {INDEX} ON {table} (total_spent_aud DESC)")
