"""What a serving dialect declares, and the defaults a new one starts from.

`ServingDatabase` (ledger, staging, apply, retries) is written once against
`DialectCapabilities`; each kind of database is a subclass that declares its differences as
class constants (URL defaults, driver, money storage, error modules) and overrides a few
methods (transient errors, bulk load, upsert form, migration lock). Drivers are imported
inside the methods that need them, so the registry imports without any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from purchases.contract import MoneyStorage, ServingTables, serving_tables
from purchases.errors import PermanentError
from purchases.serving.staging import StagingLoad, processed

Release = Callable[[], None]
"""Undoes what `migration_lock` took."""


class DialectCapabilities:
    """One kind of serving database: the few things it does its own way.

    Instances are cheap; `ServingDatabase` makes one per database, so a dialect may remember
    what it learned of its server (MySQL: whether LOAD DATA LOCAL is allowed).
    """

    name: ClassVar[str]
    """The registry key: the SQLAlchemy backend name of the URLs it serves."""
    also_serves: ClassVar[tuple[str, ...]] = ()
    """Further backend names it serves (the MySQL dialect also serves `mariadb://`)."""
    driver: ClassVar[str]
    """The one DBAPI driver the product ships and tests for it (`psycopg`)."""
    extra: ClassVar[str | None] = None
    """The pip extra that installs that driver (None: it comes with Python)."""
    url_example: ClassVar[str | None] = None
    """How the list of supported databases shows it (None: not listed on its own)."""
    default_drivers: ClassVar[Mapping[str, str]] = {}
    """Bare URL schemes -> the drivername they mean (SQLAlchemy's defaults are not shipped)."""
    embedded: ClassVar[bool] = False
    """The database is a file opened in this process: no server, password or connect timeout."""
    connect_args: ClassVar[Mapping[str, Any]] = {}
    """Passed to the driver's connect()."""
    driver_modules: ClassVar[tuple[str, ...]] = ()
    """Module name prefixes of the driver's exceptions (which dialect classifies an error)."""
    money: ClassVar[MoneyStorage] = MoneyStorage.DECIMAL
    """How its tables keep money (contract.MoneyStorage)."""
    alter_by_rebuild: ClassVar[bool] = False
    """ALTER TABLE is too limited for migrations: Alembic rebuilds tables (batch mode)."""
    index_rebuild_percent: ClassVar[int | None] = None
    """Drop the summary's secondary indexes for an upsert that writes at least this percentage
    of the table's rows, and build them again after it, in the same transaction (None: never).
    Only where DDL is transactional and does not block readers."""

    @classmethod
    def backends(cls) -> tuple[str, ...]:
        """Every URL backend name it serves."""
        return (cls.name, *cls.also_serves)

    @property
    def tables(self) -> ServingTables:
        """The serving tables as this kind of database holds them."""
        return serving_tables(self.money)

    # --- URL and connections

    def prepare_url(self, url: sa.URL) -> sa.URL:
        """The URL with this dialect's defaults filled in (before an engine is made)."""
        return url

    def database_file(self, url: sa.URL) -> Path | None:
        """The file an embedded database keeps its data in (None: a server, or in memory)."""
        return None

    def on_connect(self, dbapi_connection: Any) -> None:
        """Settings for each new driver connection."""

    def describe(self, dialect: sa.Dialect) -> str:
        """The database's kind as `purchases db current` shows it."""
        return dialect.name

    # --- errors

    def is_transient(self, error: BaseException) -> bool:
        """Whether retrying may fix this driver error (one of `driver_modules`)."""
        return False

    def hint(self, error: BaseException) -> str:
        """What the user can do about this driver error, when its own text does not say
        (appended to it in parentheses); empty when there is nothing to add."""
        return ""

    # --- migrations

    def migration_lock(self, con: sa.Connection) -> Release:
        """Take the database-wide lock schema upgraders serialise on; returns its release."""
        return lambda: None

    # --- staging

    def load_staging(self, engine: sa.Engine, load: StagingLoad) -> int:
        """Replace the batch's staging rows with `load`'s, in one transaction; rows loaded."""
        with engine.begin() as con:
            self.clear_staging(con, load.tables.staging, load.batch_id)
            return self.bulk_load(con, load)

    def bulk_load(self, con: sa.Connection, load: StagingLoad) -> int:
        """Insert the batch's rows into staging inside the caller's transaction.

        The default: one executemany per chunk, values converted by SQLAlchemy's bind
        processors column by column, each distinct value once, without a dict per row.
        """
        dialect = con.dialect
        columns = load.columns
        names = [c.name for c in columns]
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
        bind = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns}
        fixed = {c: bind[c](v) if bind[c] else v for c, v in load.constants.items()}
        quote = dialect.identifier_preparer.quote
        statement = (
            # Bandit B608: names quoted by the dialect; values are bound
            f"INSERT INTO {quote(load.tables.staging.name)} ({', '.join(map(quote, names))}) "
            f"VALUES ({', '.join([marker or '?'] * len(names))})"  # nosec B608
        )
        loaded = 0
        for table in load.chunks(with_constants=False):
            values = [
                repeat(fixed[c.name], table.num_rows) if c.name in fixed
                else processed(bind[c.name], table.column(load.tables.source(c)).to_pylist())
                for c in columns
            ]
            params = list(zip(*values, strict=True))
            if marker is None:  # a paramstyle of another kind: let SQLAlchemy render it
                con.execute(load.tables.staging.insert(),
                            [dict(zip(names, r, strict=True)) for r in params])
            else:
                con.exec_driver_sql(statement, params)
            loaded += len(params)
        return loaded

    def clear_staging(self, con: sa.Connection, staging: sa.Table, batch_id: int) -> None:
        """Delete the batch's staging rows inside the caller's transaction."""
        con.execute(staging.delete().where(staging.c.batch_id == batch_id))

    # --- upsert

    def upsert(
        self, target: sa.Table, source: sa.Select, columns: list[str], *, version: str,
        dialect: sa.Dialect,
    ) -> sa.Executable:
        """INSERT INTO `target` (`columns`) the rows of `source`, replacing a row with the same
        primary key only when the incoming `version` column is greater."""
        raise PermanentError(f"serving database dialect {self.name!r} has no upsert form")

    def upsert_order(self, staging: sa.Table) -> list[sa.ColumnElement[Any]]:
        """The order the upsert reads a batch's staged rows in (none: the database's choice)."""
        return []

    @contextmanager
    def bulk_upsert(self, con: sa.Connection, tables: ServingTables, rows: int) -> Iterator[None]:
        """Around the upsert of `rows` staged rows: maintaining a secondary index row by row
        costs several times what building it costs once, so from `index_rebuild_percent` of
        the table on, the indexes are dropped and built again. A failure rolls the DDL back
        with the rest of the transaction, so the indexes are never left missing."""
        percent = self.index_rebuild_percent
        indexes = sorted(tables.summary.indexes, key=lambda ix: str(ix.name))
        if percent is None or not indexes or not rows:
            yield
            return
        present = int(con.scalar(sa.select(sa.func.count()).select_from(tables.summary)) or 0)
        if rows * 100 < percent * present:
            yield
            return
        for index in indexes:
            con.execute(sa.schema.DropIndex(index))
        yield
        for index in indexes:
            con.execute(sa.schema.CreateIndex(index))


class OnConflictUpsert:
    """The upsert as INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE newer."""

    insert: ClassVar[Callable[[sa.Table], Any]]
    """The dialect's insert() construct (it has on_conflict_do_update)."""

    def upsert(
        self, target: sa.Table, source: sa.Select, columns: list[str], *, version: str,
        dialect: sa.Dialect,
    ) -> sa.Executable:
        """See DialectCapabilities.upsert."""
        key = [c.name for c in target.primary_key.columns]
        stmt = self.insert(target).from_select(columns, source)
        return stmt.on_conflict_do_update(
            index_elements=key,
            set_={c: stmt.excluded[c] for c in columns if c not in key},
            where=stmt.excluded[version] > target.c[version],
        )
