"""PostgreSQL (RDS, Aurora) through psycopg 3."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from purchases.serving.dialects.base import DialectCapabilities, OnConflictUpsert, Release
from purchases.serving.staging import StagingLoad, csv_bytes

_TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown: also what pg_terminate_backend and RDS failover send
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up / recovering
    "53300",  # too_many_connections
})
# libpq reports connection failures without a SQLSTATE; these words mark the ones a retry
# cannot fix (wrong database, user, password or TLS settings).
_PERMANENT_CONNECT = re.compile(
    r"does not exist|authentication failed|pg_hba\.conf|permission denied|no password supplied"
    r"|invalid (?:dsn|connection option|sslmode)|SSL (?:is )?required|unsupported",
    re.IGNORECASE,
)
_LOCK_KEY = 0x70757263  # any constant; "purc"


class PostgreSQLDialect(OnConflictUpsert, DialectCapabilities):
    """PostgreSQL 12+."""

    name = "postgresql"
    driver = "psycopg"
    extra = "postgres"
    url_example = "postgresql+psycopg://..."
    # Bare schemes get psycopg 3 rather than SQLAlchemy's default psycopg2 (not shipped).
    default_drivers = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}
    # Fail over to the retry policy quickly rather than hang on an unreachable host.
    connect_args = {"connect_timeout": 10}
    driver_modules = ("psycopg",)

    @staticmethod
    def insert(table: sa.Table) -> Any:
        """PostgreSQL's INSERT construct (ON CONFLICT). Its module is imported here, on first
        use: every process registers this class, and SQLAlchemy's PostgreSQL dialect costs
        one that serves SQLite about a tenth of a second to load."""
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)

    def is_transient(self, error: BaseException) -> bool:
        """Serialization failure, deadlock, lock wait, shutdown/failover, class 08, or a
        libpq-level connection failure that is not about settings."""
        sqlstate = getattr(error, "sqlstate", None)
        if sqlstate:
            return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        # No SQLSTATE: libpq-level trouble (refused, reset, closed, timed out).
        return type(error).__name__ in ("OperationalError", "InterfaceError") and not (
            _PERMANENT_CONNECT.search(str(error)))

    def migration_lock(self, con: sa.Connection) -> Release:
        """A transaction-scoped advisory lock: PostgreSQL DDL is transactional, so the lock
        and the migration commit together."""
        con.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        return lambda: None

    def bulk_load(self, con: sa.Connection, load: StagingLoad) -> int:
        """COPY ... FROM STDIN (psycopg 3) inside the caller's transaction."""
        from psycopg import sql

        # CSV: an unquoted empty field is NULL, a quoted one the empty string.
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(load.tables.staging.name),
            sql.SQL(", ").join(sql.Identifier(c.name) for c in load.columns),
        )
        loaded = 0
        with con.connection.dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for table in load.chunks(with_constants=True):
                copy.write(csv_bytes(table, null=""))
                loaded += table.num_rows
        return loaded


__all__ = ["PostgreSQLDialect"]
