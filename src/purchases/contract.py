"""The data contract: column names, types, reason codes and serving DDL, in one place."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
)

# --- input -------------------------------------------------------------------------------

INPUT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "purchase_id",
    "purchase_date",
    "amount",
    "currency",
)
"""Required bronze columns, matched case-insensitively after trimming the header names."""

BRONZE_FILE_SUFFIXES = (".csv", ".csv.gz")

MAX_ID = 2**63 - 1
DEFAULT_MAX_AMOUNT = Decimal("1000000")
DEFAULT_MAX_RECORD_BYTES = 1 << 20
"""Longest CSV record accepted (PURCHASES_MAX_RECORD_BYTES); longer ones are quarantined as
record_too_large with a bounded prefix of their text."""
RAW_PREFIX_BYTES = 4096
"""How much of an over-long record quarantine keeps."""
# DESIGN's ^[^@\s]+@[^@\s]+\.[^@\s]+$ with \s spelled out as any Unicode whitespace: RE2
# (DuckDB) and Java (Spark) read \s differently, an explicit class reads the same on both.
_NOT_AT_OR_SPACE = r"[^@\s\x{0B}\x{85}\p{Z}]"
EMAIL_PATTERN = rf"^{_NOT_AT_OR_SPACE}+@{_NOT_AT_OR_SPACE}+\.{_NOT_AT_OR_SPACE}+$"
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
AMOUNT_PATTERN = r"^[+-]?[0-9]+(\.[0-9]{1,4})?$"

# --- money types (DESIGN §3: DECIMAL everywhere) ----------------------------------------

AMOUNT_TYPE = "DECIMAL(18,4)"
RATE_TYPE = "DECIMAL(18,8)"
AUD_TYPE = "DECIMAL(18,2)"
# Wide types for exact intermediate arithmetic: 18,4 x 18,8 needs scale 12 without loss.
WIDE_AMOUNT_TYPE = "DECIMAL(38,4)"
WIDE_RATE_TYPE = "DECIMAL(38,8)"


class Reason(StrEnum):
    """Quarantine reason codes, in the order the rules are checked (first failing wins)."""

    MALFORMED_ROW = "malformed_row"
    RECORD_TOO_LARGE = "record_too_large"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    INVALID_CUSTOMER_ID = "invalid_customer_id"
    MISSING_PURCHASE_ID = "missing_purchase_id"
    INVALID_PURCHASE_ID = "invalid_purchase_id"
    MISSING_PURCHASE_DATE = "missing_purchase_date"
    INVALID_PURCHASE_DATE = "invalid_purchase_date"
    FUTURE_PURCHASE_DATE = "future_purchase_date"
    MISSING_AMOUNT = "missing_amount"
    INVALID_AMOUNT = "invalid_amount"
    NEGATIVE_AMOUNT = "negative_amount"
    AMOUNT_TOO_LARGE = "amount_too_large"
    MISSING_CURRENCY = "missing_currency"
    UNKNOWN_CURRENCY = "unknown_currency"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


class FileRejection(StrEnum):
    """Reasons a bronze file is rejected as a whole (DESIGN §2)."""

    MISSING_COLUMNS = "missing_columns"
    NOT_UTF8 = "not_utf8"
    EMPTY = "empty"
    UNREADABLE = "unreadable"


WARNING_INVALID_EMAIL = "invalid_email"

# --- lake tables ---------------------------------------------------------------------------
# Column name -> SQL type (the engine-neutral SQL dialect the transforms are written in).

SILVER_COLUMNS: dict[str, str] = {
    "purchase_id": "BIGINT",
    "customer_id": "BIGINT",
    "first_name": "VARCHAR",
    "last_name": "VARCHAR",
    "full_name": "VARCHAR",
    "email": "VARCHAR",
    "purchase_date": "DATE",
    "amount": AMOUNT_TYPE,
    "currency": "VARCHAR",
    "rate_to_aud": RATE_TYPE,
    "amount_aud": AUD_TYPE,
    "ingestion_date": "DATE",
    "source_file": "VARCHAR",
}

QUARANTINE_COLUMNS: dict[str, str] = {
    **{c: "VARCHAR" for c in INPUT_COLUMNS},
    "raw_line": "VARCHAR",
    "source_file": "VARCHAR",
    "line_number": "BIGINT",
    "reason": "VARCHAR",
    "ingestion_date": "DATE",
}
"""Rejected rows keep their raw values; `raw_line` holds the text of a malformed record and
`line_number` its physical line, both known only where the CSV parser rejected the record."""

GOLD_COLUMNS: dict[str, str] = {
    "customer_id": "BIGINT",
    "full_name": "VARCHAR",
    "email": "VARCHAR",
    "total_spent_aud": AUD_TYPE,
    "first_purchase_date": "DATE",
    "last_purchase_date": "DATE",
    "purchase_count": "BIGINT",
    "batch_id": "BIGINT",
}

CUSTOMER_STATE_COLUMNS: dict[str, str] = {
    **GOLD_COLUMNS,
    # Ordering keys of the row full_name / email were taken from: "latest" is
    # (purchase_date, purchase_id), so the state can be merged with a new batch exactly.
    "full_name_date": "DATE",
    "full_name_purchase_id": "BIGINT",
    "email_date": "DATE",
    "email_purchase_id": "BIGINT",
}

PURCHASE_KEY_COLUMNS: dict[str, str] = {"purchase_id": "BIGINT"}
"""Every accepted purchase_id, sorted per batch: a compact index for the duplicate check."""

TEXT_WIDTH = 255
"""Width of the serving tables' name and email columns (VARCHAR(255) in the seed DDL)."""

FX_COLUMNS: dict[str, str] = {"currency": "VARCHAR", "rate_to_aud": RATE_TYPE, "valid_from": "DATE"}

# --- serving database (DESIGN §5) ----------------------------------------------------------


class Money(TypeDecorator):
    """DECIMAL(18,2) money; on SQLite (no exact decimal type) stored as integer cents.

    SQLite would otherwise store NUMERIC as an 8-byte float. Integer cents keep values exact
    and still make ``ORDER BY total_spent_aud`` sort numerically.
    """

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        value = Decimal(value)
        if dialect.name == "sqlite":
            return int(value.scaleb(2).to_integral_exact())
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2)
        return Decimal(value).quantize(Decimal("0.01"))


metadata = MetaData()

SUMMARY_TABLE = "customer_purchase_summary"
STAGING_TABLE = "customer_purchase_summary_staging"
LEDGER_TABLE = "purchases_batch_ledger"

summary_table = Table(
    SUMMARY_TABLE,
    metadata,
    Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
    Column("full_name", String(TEXT_WIDTH)),
    Column("email", String(TEXT_WIDTH)),
    Column("total_spent_aud", Money, nullable=False),
    Column("first_purchase_date", Date, nullable=False),
    Column("last_purchase_date", Date, nullable=False),
    Column("purchase_count", BigInteger, nullable=False),
    Column("batch_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=False), nullable=False),
    Index("idx_total_spent_desc", Column("total_spent_aud").desc()),
)

staging_table = Table(
    STAGING_TABLE,
    metadata,
    Column("customer_id", BigInteger, nullable=False),
    Column("full_name", String(TEXT_WIDTH)),
    Column("email", String(TEXT_WIDTH)),
    Column("total_spent_aud", Money, nullable=False),
    Column("first_purchase_date", Date, nullable=False),
    Column("last_purchase_date", Date, nullable=False),
    Column("purchase_count", BigInteger, nullable=False),
    Column("batch_id", BigInteger, nullable=False),
    Column("load_date", DateTime(timezone=False), nullable=False),
    Index("idx_staging_batch", "batch_id"),
)

ledger_table = Table(
    LEDGER_TABLE,
    metadata,
    Column("batch_id", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("ingestion_date", Date, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=False), nullable=False),
)

SERVING_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "full_name",
    "email",
    "total_spent_aud",
    "first_purchase_date",
    "last_purchase_date",
    "purchase_count",
)

TOP_CUSTOMERS_COLUMNS: tuple[str, ...] = ("customer_id", "full_name", "email", "total_spent_aud")
