"""The data contract: column names, types, reason codes and serving DDL, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Computed,
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
CONTROL_CHARACTERS = r"[\x{00}-\x{08}\x{0E}-\x{1F}\x{7F}-\x{84}\x{86}-\x{9F}]"
"""Control characters (Unicode Cc) that are not whitespace: C0 but tab, LF, VT, FF, CR; DEL;
C1 but NEL. Names and email lose them in standardisation (PostgreSQL cannot store NUL, and
none of them is ever part of a name); gold strips them again, for lakes written before that.
Written as RE2 (DuckDB) and Java (Spark) read it alike; the whitespace ones are trimmed and
collapsed as whitespace instead."""
INTEGER_PATTERN = r"^[+-]?[0-9]+$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
AMOUNT_PATTERN = r"^[+-]?[0-9]+(\.[0-9]{1,4})?$"

# --- money types (DESIGN §3: DECIMAL everywhere) ----------------------------------------

AMOUNT_TYPE = "DECIMAL(18,4)"
RATE_TYPE = "DECIMAL(18,8)"
AUD_TYPE = "DECIMAL(18,2)"
MAX_AUD = Decimal("9999999999999999.99")
"""The largest amount AUD_TYPE holds: a purchase worth more is rejected as amount_too_large
(its amount is capped in its own currency, but a high rate can take it past this)."""
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


class MoneyStorage(StrEnum):
    """How a kind of database keeps the AUD money columns; each serving dialect declares one."""

    DECIMAL = "decimal"
    """DECIMAL(18,2), read back as an exact ``Decimal``: every database with an exact decimal
    type."""
    CENTS = "cents"
    """For a database without an exact decimal type (where NUMERIC would store an 8-byte float):
    `total_spent_aud_cents` (INTEGER) holds the exact amount, which is what the product loads
    and reads back as a Decimal, and `total_spent_aud` is a REAL the database computes from it,
    for raw readers (BI tools, pandas): the business query returns the AUD amount, e.g.
    53111.89, and sorts numerically. It is exact for raw readers too below 10^13 AUD: such an
    amount has at most 15 significant digits, which an IEEE double (cents / 100.0, correctly
    rounded) round-trips; and rounding is monotonic, so ORDER BY total_spent_aud never inverts
    two amounts."""


class Money(TypeDecorator):
    """DECIMAL(18,2) AUD, read back as an exact ``Decimal`` (MoneyStorage.DECIMAL)."""

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else Decimal(value)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value).quantize(Decimal("0.01"))


class Cents(TypeDecorator):
    """DECIMAL(18,2) AUD kept as integer cents (MoneyStorage.CENTS): exact over the whole
    DECIMAL(18,2) range, and read back as a ``Decimal``. Binding a value with a fraction of a
    cent is an error."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        cents = Decimal(value).scaleb(2)
        if cents != cents.to_integral_value():
            raise ValueError(f"{value} AUD is not a whole number of cents")
        return int(cents)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(int(value)).scaleb(-2)


SUMMARY_TABLE = "customer_purchase_summary"
STAGING_TABLE = "customer_purchase_summary_staging"
LEDGER_TABLE = "purchases_batch_ledger"

EXACT_VALUE_OF = "exact_value_of"
"""Column.info key: this column holds the exact value of the named business column (it is
loaded from that gold column, and the product reads it in that column's place)."""

CENTS_SUFFIX = "_cents"


@dataclass(frozen=True)
class ServingTables:
    """The serving tables (DESIGN §5) as one kind of database holds them."""

    metadata: MetaData
    summary: Table
    staging: Table
    ledger: Table

    @staticmethod
    def written(table: Table) -> list[Column]:
        """The columns a load or an upsert writes: all but those the database computes."""
        return [c for c in table.c if c.computed is None]

    @staticmethod
    def source(column: Column) -> str:
        """The gold column a written column takes its value from."""
        return column.info.get(EXACT_VALUE_OF, column.name)

    @staticmethod
    def exact(table: Table, name: str) -> Column:
        """The column holding business column `name` exactly (its cents twin, if it has one)."""
        return next((c for c in table.c if c.info.get(EXACT_VALUE_OF) == name), table.c[name])


def _money_columns(money: MoneyStorage) -> list[Column]:
    if money is MoneyStorage.DECIMAL:
        return [Column("total_spent_aud", Money, nullable=False)]
    # The database derives the AUD column from the cents, so the two can never disagree and no
    # float is ever computed in Python; VIRTUAL, because SQLite can add only those in place.
    return [
        Column("total_spent_aud" + CENTS_SUFFIX, Cents, nullable=False,
               info={EXACT_VALUE_OF: "total_spent_aud"}),
        Column("total_spent_aud", REAL, Computed("total_spent_aud_cents / 100.0", persisted=False),
               nullable=False),
    ]


def _customer_columns(money: MoneyStorage) -> list[Column]:
    """A customer's values and the batch they come from: the same in staging and summary."""
    return [
        Column("full_name", String(TEXT_WIDTH)),
        Column("email", String(TEXT_WIDTH)),
        *_money_columns(money),
        Column("first_purchase_date", Date, nullable=False),
        Column("last_purchase_date", Date, nullable=False),
        Column("purchase_count", BigInteger, nullable=False),
        Column("batch_id", BigInteger, nullable=False),
    ]


def _serving_tables(money: MoneyStorage) -> ServingTables:
    md = MetaData()
    summary = Table(
        SUMMARY_TABLE,
        md,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
        *_customer_columns(money),
        Column("updated_at", DateTime(timezone=False), nullable=False),
        Index("idx_total_spent_desc", Column("total_spent_aud").desc()),
    )
    staging = Table(
        STAGING_TABLE,
        md,
        Column("customer_id", BigInteger, nullable=False),
        *_customer_columns(money),
        Column("load_date", DateTime(timezone=False), nullable=False),
        Index("idx_staging_batch", "batch_id"),
    )
    ledger = Table(
        LEDGER_TABLE,
        md,
        Column("batch_id", BigInteger, primary_key=True, autoincrement=False),
        Column("run_id", String(64), nullable=False),
        Column("ingestion_date", Date, nullable=False),
        Column("customers", Integer, nullable=False),
        Column("applied_at", DateTime(timezone=False), nullable=False),
    )
    return ServingTables(md, summary, staging, ledger)


_TABLES = {money: _serving_tables(money) for money in MoneyStorage}


def serving_tables(money: MoneyStorage = MoneyStorage.DECIMAL) -> ServingTables:
    """The serving tables with money kept as `money` (each serving dialect declares how its
    database keeps it: `purchases.serving.dialects`)."""
    return _TABLES[money]


# The tables as a database with an exact decimal type holds them; code that may meet another
# kind asks its serving dialect (`ServingDatabase.tables`) instead.
metadata = _TABLES[MoneyStorage.DECIMAL].metadata
summary_table = _TABLES[MoneyStorage.DECIMAL].summary
staging_table = _TABLES[MoneyStorage.DECIMAL].staging
ledger_table = _TABLES[MoneyStorage.DECIMAL].ledger

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
