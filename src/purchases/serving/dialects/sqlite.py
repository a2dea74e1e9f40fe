"""SQLite, the embedded default: a file beside the lake, opened by Python's own sqlite3."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from purchases.contract import Cents, MoneyStorage
from purchases.errors import ConfigError, PermanentError
from purchases.serving.dialects.base import DialectCapabilities, OnConflictUpsert, Release
from purchases.serving.staging import StagingLoad, processed

if TYPE_CHECKING:
    import pyarrow as pa

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED


class SQLiteDialect(OnConflictUpsert, DialectCapabilities):
    """SQLite 3.35+ (generated columns, UPSERT, DROP COLUMN)."""

    name = "sqlite"
    driver = "pysqlite"
    url_example = "sqlite:///<file>"
    embedded = True
    driver_modules = ("sqlite3",)
    # No exact decimal type: NUMERIC would store an 8-byte float.
    money = MoneyStorage.CENTS
    alter_by_rebuild = True
    # DDL is transactional and WAL readers keep their snapshot, so the index can go and come
    # back inside the upsert's transaction; from half the table on, that is the cheaper way
    # (bench/serving.py).
    index_rebuild_percent = 50
    insert = staticmethod(sqlite.insert)

    pragmas: ClassVar[dict[str, str]] = {
        # Readers (purchases top) must not fail while a run writes; wait instead.
        "busy_timeout": "30000",
        # Readers never block the writer nor see its uncommitted rows.
        "journal_mode": "WAL",
        # The default 2 MiB cache makes an upsert of many customers re-read the same pages
        # over and over; the cache grows only as far as a batch needs. Negative: KiB.
        "cache_size": "-65536",
    }
    """Set on every connection. `synchronous` stays FULL (SQLite's default): every commit,
    the ledger's with it, is on disk when it returns, even across a power cut."""

    rows_per_statement: ClassVar[int] = 100
    """Rows in one multi-row INSERT of the staging load: far fewer statement executions than
    one per row, well under SQLite's limit of bound parameters."""

    def prepare_url(self, url: sa.URL) -> sa.URL:
        """The database file's folder is created if missing.

        Raises:
            ConfigError: an in-memory database (sqlite://), which would lose the staged
                batch between the pipeline's steps, each of which opens its own connection;
                a path that is a folder, or whose folder cannot be made.
        """
        file = self.database_file(url)
        if file is None:
            raise ConfigError("PURCHASES_DATABASE_URL: an in-memory SQLite database keeps "
                              "nothing between the pipeline's steps; give a file, "
                              "sqlite:///path/to/purchases.db")
        if file.is_dir():  # SQLite would say only "unable to open database file"
            raise ConfigError(f"PURCHASES_DATABASE_URL: {file} is a folder, not a database "
                              f"file; name a file, such as sqlite:///{file / 'purchases.db'}")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where a folder is meant, or no right to create it
            raise ConfigError(f"PURCHASES_DATABASE_URL: cannot make the database's folder "
                              f"{file.parent}: {exc.strerror or exc}") from None
        return url.set(database=str(file))

    def database_file(self, url: sa.URL) -> Path | None:
        """The file the URL names, `~` expanded as a shell would; None in memory."""
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            return None
        return Path(url.database).expanduser()

    def on_connect(self, dbapi_connection: Any) -> None:
        """The `pragmas`. Switching a new file to WAL takes an exclusive lock, and SQLite
        answers "database is locked" at once, without the busy handler, while another
        connection (a concurrent first use) holds the file: so a busy pragma is tried again,
        for as long as busy_timeout would have waited."""
        for attempt in Retrying(
            retry=retry_if_exception(self.is_transient),
            stop=stop_after_delay(int(self.pragmas["busy_timeout"]) / 1000),
            wait=wait_random(0.005, 0.05), reraise=True,
        ):
            with attempt:
                for pragma, value in self.pragmas.items():
                    dbapi_connection.execute(f"PRAGMA {pragma} = {value}")

    def is_transient(self, error: BaseException) -> bool:
        """The database is locked by another writer (busy_timeout ran out)."""
        code = getattr(error, "sqlite_errorcode", None)  # extended: the primary in the low byte
        return (code is not None and (code & 0xFF) in _BUSY_CODES) or (
            "database is locked" in str(error))

    def hint(self, error: BaseException) -> str:
        """SQLite's "unable to open database file" names no cause. Short of a missing folder
        (created by prepare_url), it is a folder the process cannot write: a WAL database
        needs its -wal and -shm files beside it, even to be read."""
        message = str(error)
        if "unable to open database file" in message or "readonly database" in message:
            return ("SQLite in WAL mode writes its -wal and -shm files beside the database "
                    "file, even to read it: its folder must be writable by this user")
        return ""

    def migration_lock(self, con: sa.Connection) -> Release:
        """The write lock up front; a concurrent upgrader waits (busy_timeout) instead of
        failing on CREATE TABLE of a table the other just created."""
        con.exec_driver_sql("BEGIN IMMEDIATE")
        return lambda: None

    def bulk_load(self, con: sa.Connection, load: StagingLoad) -> int:
        """Multi-row INSERTs on the raw sqlite3 cursor, values converted by Arrow a column at a
        time into what SQLite stores (cents, ISO dates): no Python object per money value, no
        SQLAlchemy per row."""
        dialect = con.dialect
        columns = load.columns
        constants = {
            name: _bind(load.tables.staging.c[name], value, dialect)
            for name, value in load.constants.items()
        }
        data = [c for c in columns if c.name not in constants]
        per_row = len(data)
        # ?1..?k are the constants, bound once per statement; each row's values follow.
        first = len(constants) + 1
        slots = {name: f"?{i}" for i, name in enumerate(constants, start=1)}

        def statement(rows: int) -> str:
            quote = dialect.identifier_preparer.quote
            groups = []
            for r in range(rows):
                row = iter(range(first + r * per_row, first + (r + 1) * per_row))
                groups.append("(" + ", ".join(
                    slots[c.name] if c.name in slots else f"?{next(row)}" for c in columns) + ")")
            return (
                # Bandit B608: names quoted by the dialect; values are bound
                f"INSERT INTO {quote(load.tables.staging.name)} "  # nosec B608
                f"({', '.join(quote(c.name) for c in columns)}) VALUES {', '.join(groups)}"
            )

        k = self.rows_per_statement
        full = statement(k)
        head = list(constants.values())
        cursor = con.connection.dbapi_connection.cursor()
        loaded = 0
        try:
            for table in load.chunks(with_constants=False):
                n = table.num_rows
                flat: list[Any] = [None] * (n * per_row)  # row-major: row r at r * per_row
                for j, c in enumerate(data):
                    flat[j::per_row] = _stored(c, table.column(load.tables.source(c)), dialect)
                whole = n - n % k
                step = k * per_row
                cursor.executemany(full, (head + flat[i:i + step]
                                          for i in range(0, whole * per_row, step)))
                if whole < n:
                    cursor.execute(statement(n - whole), head + flat[whole * per_row:])
                loaded += n
        finally:
            cursor.close()
        return loaded

    def upsert_order(self, staging: sa.Table) -> list[sa.ColumnElement[Any]]:
        """The order the rows were staged in (rowid), which is customer_id order: gold is
        written in that order (gold_sql) and staged as it comes. So the upsert visits each page
        of the summary once, in order, rather than at random (which costs far more once the
        table outgrows the page cache), and the staging index on batch_id yields the rows in
        rowid order already: no sort of the batch (bench/serving.py: about half the upsert's
        time at 600k customers). Gold written before it was ordered is upserted correctly,
        only more slowly."""
        return [sa.table(staging.name, sa.column("rowid")).c.rowid]

    def clear_staging(self, con: sa.Connection, staging: sa.Table, batch_id: int) -> None:
        """Delete the batch's staging rows. When they are all staging holds, DELETE without a
        WHERE lets SQLite drop the pages at once instead of row by row. No row of another batch
        can appear in between: SQLite has one writer, and a transaction whose snapshot another
        writer has since changed cannot start writing (it fails as busy, and is retried)."""
        others = sa.select(sa.literal(1)).where(staging.c.batch_id != batch_id).limit(1)
        if con.scalar(others) is None:
            con.execute(staging.delete())
        else:
            super().clear_staging(con, staging, batch_id)


def _bind(column: sa.Column, value: Any, dialect: sa.Dialect) -> Any:
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor else value


def _stored(column: sa.Column, values: pa.ChunkedArray, dialect: sa.Dialect) -> list[Any]:
    """A gold column as the Python values SQLite stores for `column`.

    Money and dates are converted by Arrow; anything else goes through the column type's own
    bind processor (none for integers and text), so the result is what SQLAlchemy would bind.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.type, Cents):
        try:
            # Arrow refuses to cast a value with a fraction left after scaling: never truncated.
            cents = pc.cast(pc.multiply_checked(values, pa.scalar(100, pa.int64())), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise PermanentError(
                f"{column.table.name}.{column.name}: {values.type} is not a whole number of "
                f"cents ({exc})") from exc
        return cents.to_pylist()
    if isinstance(column.type, sa.Date) and pa.types.is_date(values.type):
        # SQLAlchemy stores a SQLite DATE as ISO text, YYYY-MM-DD: what Arrow's cast writes.
        return pc.cast(values, pa.string()).to_pylist()
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processed(processor, values.to_pylist())


__all__ = ["SQLiteDialect"]
