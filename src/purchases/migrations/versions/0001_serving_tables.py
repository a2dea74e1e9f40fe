"""Serving tables of DESIGN §5: summary, staging and batch ledger.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Names and types are written out rather than imported from `purchases.contract`: a revision
is a record of what was created at that point, and must not change when the contract does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite has no exact decimal: money is integer cents there (contract.Money), DECIMAL elsewhere.
MONEY = sa.Numeric(18, 2).with_variant(sa.BigInteger(), "sqlite")
MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    """Create the three tables and the index the business query sorts by."""
    op.create_table(
        "customer_purchase_summary",
        sa.Column("customer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("full_name", sa.String(255)),
        sa.Column("email", sa.String(255)),
        sa.Column("total_spent_aud", MONEY, nullable=False),
        sa.Column("first_purchase_date", sa.Date(), nullable=False),
        sa.Column("last_purchase_date", sa.Date(), nullable=False),
        sa.Column("purchase_count", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
        **MYSQL_OPTIONS,
    )
    op.create_index(
        "idx_total_spent_desc", "customer_purchase_summary", [sa.text("total_spent_aud DESC")]
    )
    op.create_table(
        "customer_purchase_summary_staging",
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("full_name", sa.String(255)),
        sa.Column("email", sa.String(255)),
        sa.Column("total_spent_aud", MONEY, nullable=False),
        sa.Column("first_purchase_date", sa.Date(), nullable=False),
        sa.Column("last_purchase_date", sa.Date(), nullable=False),
        sa.Column("purchase_count", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("load_date", sa.DateTime(), nullable=False),
        **MYSQL_OPTIONS,
    )
    op.create_index("idx_staging_batch", "customer_purchase_summary_staging", ["batch_id"])
    op.create_table(
        "purchases_batch_ledger",
        sa.Column("batch_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("ingestion_date", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
        **MYSQL_OPTIONS,
    )


def downgrade() -> None:
    """Drop everything upgrade created (the data with it)."""
    op.drop_table("purchases_batch_ledger")
    op.drop_index("idx_staging_batch", table_name="customer_purchase_summary_staging")
    op.drop_table("customer_purchase_summary_staging")
    op.drop_index("idx_total_spent_desc", table_name="customer_purchase_summary")
    op.drop_table("customer_purchase_summary")
