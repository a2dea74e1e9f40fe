"""Gold -> serving database: staging load, replace-upsert and batch ledger (DESIGN §5).

One SQLAlchemy code path for SQLite, PostgreSQL and MySQL 8 / MariaDB; only the bulk load and
the upsert statement are dialect-specific. A batch is applied in one transaction together
with its ledger row, so applying it twice is a no-op, and a row only takes values from a
batch newer than the one it already reflects. The schema is created and evolved by the
Alembic revisions in `purchases.migrations`, applied on first use; the tables themselves, per
dialect, come from `contract.serving_tables` (SQLite keeps money as integer cents beside a
computed AUD column). Driver errors become TransientError (worth a retry: dropped connection,
deadlock, lock wait, failover) or PermanentError, told apart by driver error code. A batch
the database refuses for good is retried in small rolled-back transactions to name the first
refused customer and field, and reported with the batches waiting behind it.

Credentials: from the Secrets Manager secret PURCHASES_DATABASE_SECRET_ARN names when it is
set (`purchases.secrets`); else the password comes from the URL, else the file
PURCHASES_DATABASE_PASSWORD_FILE names, else the environment variable
PURCHASES_DATABASE_PASSWORD. Any URL this module shows goes through `masked_url`.

pyarrow is imported only by the staging load (the functions that read gold Parquet), so the
upsert alone (the AWS Lambda) runs without it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from purchases import migrations
from purchases.contract import (
    SERVING_COLUMNS,
    STAGING_TABLE,
    TOP_CUSTOMERS_COLUMNS,
    ServingTables,
    serving_tables,
)
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.faults import fault_point

if TYPE_CHECKING:
    import pyarrow as pa

    from purchases.commit_log import Commit
    from purchases.config import Settings
    from purchases.storage import Lake

log = logging.getLogger(__name__)

PASSWORD_ENV = "PURCHASES_DATABASE_PASSWORD"
STAGING_CHUNK = 10_000
"""Gold rows read, converted and sent per round trip: bounds memory, whatever the batch size."""

MYSQL_LOAD_DATA_LOCAL = True
"""Load MySQL/MariaDB staging with LOAD DATA LOCAL INFILE where the server allows it (about
twice the rate of multi-row INSERT, see bench/serving.py); False: always multi-row INSERT."""

REFUSAL_CHUNK = 1000
"""Rows tried per rolled-back transaction while looking for the row a database refuses."""

RETRY_ATTEMPTS = 4
RETRY_WAIT_SECONDS = 0.25
"""Retries inside serving are short: they ride out a dropped connection or a deadlock; the
orchestrator's step retries (longer waits) cover an outage."""

_BATCH_COLUMNS = ("batch_id", "load_date")
_MYSQL = ("mysql", "mariadb")

T = TypeVar("T")


# --- URL and engine ------------------------------------------------------------------------

# Bare scheme names resolve to the drivers the project ships (psycopg 3, PyMySQL) instead of
# SQLAlchemy's defaults (psycopg2, mysqlclient), which are not installed.
_DEFAULT_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


# Backend -> (the one driver the product ships and tests for it, the extra that installs it).
_SUPPORTED = {
    "sqlite": ("pysqlite", None),
    "postgresql": ("psycopg", "postgres"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
}
_SUPPORTED_HINT = (
    "supported: sqlite:///<file>, postgresql+psycopg://... (pip install 'purchases[postgres]'), "
    "mysql+pymysql://... for MySQL 8 / MariaDB (pip install 'purchases[mysql]')"
)


def _check_supported(url: sa.URL) -> None:
    """A backend or driver the product does not support is a setting to fix, said so."""
    backend, _, driver = url.drivername.partition("+")
    if backend not in _SUPPORTED:
        raise ConfigError(
            f"PURCHASES_DATABASE_URL: database {backend!r} is not supported; {_SUPPORTED_HINT}")
    shipped, extra = _SUPPORTED[backend]
    if driver and driver != shipped:
        install = f" (pip install 'purchases[{extra}]')" if extra else ""
        raise ConfigError(
            f"PURCHASES_DATABASE_URL: driver {driver!r} is not supported for {backend}; use "
            f"{backend}+{shipped}://...{install}")


def masked_url(url: str | sa.URL) -> str:
    """The URL as it may be shown: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown not at all rather than leaked
        return "<database URL>"


def database_url(settings: Settings) -> sa.URL:
    """The configured URL with its password resolved (the Secrets Manager secret; else the
    URL, then the password file, then the environment)."""
    if settings.database_secret_arn:
        from purchases import secrets  # boto3 only when a secret is configured

        url = secrets.database_url(settings.database_secret_arn, settings.database_url)
    else:
        try:
            url = make_url(settings.db_url)
        except Exception:
            raise ConfigError("PURCHASES_DATABASE_URL is not a valid SQLAlchemy URL") from None
    url = url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    _check_supported(url)
    backend = url.get_backend_name()
    if url.password is None and backend != "sqlite":
        if settings.database_password_file:
            try:
                secret = Path(settings.database_password_file).read_text().strip()
            except OSError:
                raise ConfigError(
                    f"PURCHASES_DATABASE_PASSWORD_FILE {settings.database_password_file}: "
                    "unreadable"
                ) from None
            url = url.set(password=secret)
        elif os.environ.get(PASSWORD_ENV):
            url = url.set(password=os.environ[PASSWORD_ENV])
    if backend in _MYSQL and "charset" not in url.query:
        # Names are Unicode; MySQL's legacy utf8 (3-byte) would reject or mangle some.
        url = url.update_query_dict({"charset": "utf8mb4"})
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def create_db_engine(settings: Settings) -> sa.Engine:
    """An engine for the configured serving database (nothing is connected yet)."""
    url = database_url(settings)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() in ("postgresql", *_MYSQL):
        # Fail over to the retry policy quickly rather than hang on an unreachable host.
        connect_args["connect_timeout"] = 10
    try:
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        extra = _SUPPORTED[url.get_backend_name()][1]
        raise ConfigError(
            f"no driver {exc.name!r} for {masked_url(url)}: "
            f"install it (pip install 'purchases[{extra}]')"
        ) from None
    except Exception as exc:  # e.g. an unknown dialect name: the message never holds the URL
        raise ConfigError(f"cannot use database {masked_url(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_con: Any, _: Any) -> None:
            # Readers (purchases top) must not fail while a run writes; wait instead.
            dbapi_con.execute("PRAGMA busy_timeout = 30000")
            dbapi_con.execute("PRAGMA journal_mode = WAL")

    return engine


# --- errors ----------------------------------------------------------------------------------

_PG_TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown: also what pg_terminate_backend and RDS failover send
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up / recovering
    "53300",  # too_many_connections
})
_MYSQL_TRANSIENT_CODES = frozenset({
    1040,  # ER_CON_COUNT_ERROR: too many connections
    1053,  # ER_SERVER_SHUTDOWN
    1205,  # ER_LOCK_WAIT_TIMEOUT
    1213,  # ER_LOCK_DEADLOCK
    1927,  # MariaDB ER_CONNECTION_KILLED
    2003,  # CR_CONN_HOST_ERROR: cannot connect
    2006,  # CR_SERVER_GONE_ERROR
    2013,  # CR_SERVER_LOST: lost connection during query
    2055,  # CR_SERVER_LOST_EXTENDED
    4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8): disconnected for inactivity
})
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
# libpq reports connection failures without a SQLSTATE; these words mark the ones a retry
# cannot fix (wrong database, user, password or TLS settings).
_PG_PERMANENT_CONNECT = re.compile(
    r"does not exist|authentication failed|pg_hba\.conf|permission denied|no password supplied"
    r"|invalid (?:dsn|connection option|sslmode)|SSL (?:is )?required|unsupported",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may succeed: a dropped connection, deadlock, lock wait, failover."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    module = type(orig).__module__ or ""
    sqlstate = getattr(orig, "sqlstate", None)
    if module.startswith("psycopg"):
        if sqlstate:
            return sqlstate in _PG_TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        # No SQLSTATE: libpq-level trouble (refused, reset, closed, timed out).
        return type(orig).__name__ in ("OperationalError", "InterfaceError") and not (
            _PG_PERMANENT_CONNECT.search(str(orig))
        )
    if module.startswith(("pymysql", "MySQLdb", "mysql", "mariadb")):
        code = getattr(orig, "errno", None)
        if code is None and orig.args and isinstance(orig.args[0], int):
            code = orig.args[0]
        # An InterfaceError is a use of a connection already closed underneath us.
        return code in _MYSQL_TRANSIENT_CODES or type(orig).__name__ == "InterfaceError"
    if module.startswith("sqlite3"):
        code = getattr(orig, "sqlite_errorcode", None)
        return code in _SQLITE_BUSY_CODES or "database is locked" in str(orig)
    return False


def translate(exc: BaseException, url: str | sa.URL) -> Exception:
    """A driver or SQLAlchemy error as the product's Transient/PermanentError, URL masked."""
    where = masked_url(url)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(orig).strip()
    detail = text.splitlines()[0].strip() if text else type(orig).__name__
    try:
        secret = make_url(url).password
    except Exception:
        secret = None
    if secret:  # drivers never echo it as far as we know; this makes sure
        detail = detail.replace(str(secret), "***")
    if is_transient(exc):
        return TransientError(f"database {where}: {detail}")
    return PermanentError(f"database {where}: {detail}")


# --- the serving database ------------------------------------------------------------------


class ServingDatabase:
    """The serving tables of one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.tables: ServingTables = serving_tables(engine.dialect.name)
        self._server_local_infile: bool | None = None

    @property
    def dialect(self) -> str:
        """SQLAlchemy dialect name: sqlite, postgresql, mysql or mariadb."""
        return self.engine.dialect.name

    @cached_property
    def db_errors(self) -> tuple[type[BaseException], ...]:
        """Every exception type the database layer raises (SQLAlchemy's and the driver's own,
        which a raw cursor, as for COPY, raises unwrapped)."""
        return (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error)

    # --- schema

    def ensure_schema(self) -> None:
        """Migrate the database to the newest revision if it is not there yet."""
        head = migrations.head_revision()
        with self.engine.connect() as con:
            current = migrations.current_revision(con)
        if current == head:
            return
        if current is not None and not migrations.is_known(current):
            raise PermanentError(
                f"database {masked_url(self.engine.url)} has schema revision {current}, newer "
                f"than this version of purchases knows (head {head}): upgrade purchases"
            )
        migrations.upgrade(self.engine)

    def schema_revision(self) -> str | None:
        """The migration revision the database is at (None: never migrated)."""
        with self.engine.connect() as con:
            return migrations.current_revision(con)

    # --- reads

    def applied_batches(self) -> set[int]:
        """Batch ids in the ledger."""
        with self.engine.connect() as con:
            return set(con.scalars(sa.select(self.tables.ledger.c.batch_id)))

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger row, oldest batch first."""
        with self.engine.connect() as con:
            ledger = self.tables.ledger
            rows = con.execute(sa.select(ledger).order_by(ledger.c.batch_id))
            return [dict(r._mapping) for r in rows]

    def staged_rows(self) -> int:
        """Rows waiting in staging (0 after every applied batch)."""
        with self.engine.connect() as con:
            query = sa.select(sa.func.count()).select_from(self.tables.staging)
            return int(con.scalar(query) or 0)

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The business query of DESIGN §5 (ties broken by customer_id for a stable order)."""
        summary = self.tables.summary
        # Sorted by the indexed column the business query names; where an exact twin holds the
        # amount (SQLite cents) it breaks the ties the display column could round together.
        order = dict.fromkeys([
            summary.c.total_spent_aud, self.tables.exact(summary, "total_spent_aud")])
        query = (
            sa.select(*self._exact_columns(TOP_CUSTOMERS_COLUMNS))
            .order_by(*(c.desc() for c in order), summary.c.customer_id)
            .limit(n)
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def summary(self) -> list[dict[str, Any]]:
        """Every summary row, by customer_id (for checks and exports)."""
        query = sa.select(*self._exact_columns(SERVING_COLUMNS)).order_by(
            self.tables.summary.c.customer_id
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def _exact_columns(self, names: tuple[str, ...]) -> list[Any]:
        """Summary columns by name, money read from its exact column (a Decimal everywhere)."""
        summary = self.tables.summary
        return [self.tables.exact(summary, name).label(name) for name in names]

    # --- writes

    def load_staging(self, lake: Lake, commit: Commit) -> int:
        """Replace the staging rows of a batch with its gold change set; returns rows loaded.

        Streams the gold Parquet in chunks of STAGING_CHUNK rows, in one transaction, on the
        backend's bulk path: PostgreSQL COPY FROM STDIN; MySQL/MariaDB LOAD DATA LOCAL INFILE
        where the server allows it, else multi-row INSERT; SQLite executemany.
        """
        from purchases.commit_log import gold_files, load_commits

        files = gold_files(commit)
        try:
            return self._retrying(lambda: self._load_staging(lake, files, commit.batch_id))
        except PermanentError as exc:
            if not _refused_by_database(exc, self.db_errors):
                raise
            applied = self.applied_batches()
            waiting = sum(1 for c in load_commits(lake) if c.batch_id > commit.batch_id
                          and c.batch_id not in applied and gold_files(c))
            culprit = self._refused_staging_row(lake, files, commit.batch_id)
            raise self._refusal(exc, commit.batch_id, "loading staging", waiting, culprit) from exc

    def apply_batch(self, commit: Commit) -> int:
        """Upsert a staged batch into the summary, once; returns customers written.

        One transaction: claim the batch in the ledger, upsert, clear its staging rows. A
        connection lost on the way rolls all of it back and the retry redoes it; a batch
        already in the ledger (applied before, or committed just before the connection
        dropped) is a no-op.
        """
        try:
            return self._retrying(lambda: self._apply_batch(commit))
        except PermanentError as exc:
            if not _refused_by_database(exc, self.db_errors):
                raise
            culprit = self._refused_summary_row(commit.batch_id)
            waiting = self._staged_batches_after(commit.batch_id)
            raise self._refusal(exc, commit.batch_id, "upserting", waiting, culprit) from exc

    def _retrying(self, work: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=RETRY_WAIT_SECONDS, max=5),
            before_sleep=lambda state: log.warning(
                "retrying after transient error: %s", state.outcome.exception()
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return work()
                except self.db_errors as exc:
                    raise translate(exc, self.engine.url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _load_staging(self, lake: Lake, files: list[str], batch_id: int) -> int:
        now = _utcnow()
        staging = self.tables.staging
        columns = self.tables.written(staging)
        sources = [self.tables.source(c) for c in columns if c.name not in _BATCH_COLUMNS]
        infile = self.dialect in _MYSQL and self._local_infile_allowed()
        # LOCAL INFILE lets the server ask the client for a file: allowed only on a connection
        # of its own, opened for this load and closed after it.
        engine = self._infile_engine() if infile else self.engine
        try:
            with engine.begin() as con:
                con.execute(staging.delete().where(staging.c.batch_id == batch_id))
                if self.dialect == "postgresql":
                    batches = _gold_batches(lake, files, sources, batch_id, now)
                    return _copy_into_staging(con, batches, columns)
                if infile:
                    # DATETIME keeps whole seconds; sub-second text would count as a warning.
                    batches = _gold_batches(lake, files, sources, batch_id, now, time_unit="s")
                    return _load_data_local(con, batches, columns)
                return _insert_into_staging(
                    con, _gold_batches(lake, files, sources, None), columns,
                    {"batch_id": batch_id, "load_date": now},
                )
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _local_infile_allowed(self) -> bool:
        if not MYSQL_LOAD_DATA_LOCAL:
            return False
        if self._server_local_infile is None:
            with self.engine.connect() as con:
                value = con.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
            self._server_local_infile = str(value).upper() in ("1", "ON")
        return self._server_local_infile

    def _infile_engine(self) -> sa.Engine:
        return sa.create_engine(
            self.engine.url, poolclass=NullPool,
            connect_args={"local_infile": True, "connect_timeout": 10},
        )

    def _apply_batch(self, commit: Commit) -> int:
        batch_id = commit.batch_id
        now = _utcnow()
        staging_table, ledger_table = self.tables.staging, self.tables.ledger
        try:
            with self.engine.begin() as con:
                if self._in_ledger(con, batch_id):
                    # A replayed load of an applied batch: its rows must not linger.
                    con.execute(staging_table.delete().where(staging_table.c.batch_id == batch_id))
                    return 0
                staged = int(con.scalar(
                    sa.select(sa.func.count()).where(staging_table.c.batch_id == batch_id)
                ) or 0)
                if staged != commit.customers_changed:
                    raise PermanentError(
                        f"batch {batch_id}: staging holds {staged} rows but the batch changed "
                        f"{commit.customers_changed} customers; reload it (purchases run)"
                    )
                # The ledger row goes first: a concurrent applier of the same batch then waits
                # on its key and fails instead of upserting a second time.
                con.execute(ledger_table.insert().values(
                    batch_id=batch_id,
                    run_id=commit.run_id,
                    ingestion_date=date.fromisoformat(commit.ingestion_date[:10]),
                    customers=staged,
                    applied_at=now,
                ))
                con.execute(upsert_statement(self.engine.dialect, now), {"batch_id": batch_id})
                fault_point("inside_upsert")
                con.execute(staging_table.delete().where(staging_table.c.batch_id == batch_id))
        except IntegrityError:
            if batch_id in self.applied_batches():
                return 0
            raise
        fault_point("after_upsert")
        return staged

    def _in_ledger(self, con: sa.Connection, batch_id: int) -> bool:
        ledger = self.tables.ledger
        query = sa.select(ledger.c.batch_id).where(ledger.c.batch_id == batch_id)
        return con.scalar(query) is not None

    # --- a batch the database refuses

    def _refusal(
        self, exc: PermanentError, batch_id: int, doing: str, waiting: int,
        culprit: tuple[int, str, BaseException] | None,
    ) -> PermanentError:
        """The one-line report of a batch that cannot be applied: which row and field the
        database refuses and why, what waits behind it, and the way out (README)."""
        where = f"database refused batch {batch_id} while {doing}"
        reason = str(exc)
        fix = "the cause in the database"
        if culprit is not None:
            customer_id, field, cause = culprit
            where += f", customer_id {customer_id}, field {field}"
            reason = str(translate(cause, self.engine.url))
            fix = f"the database's {field} column (type, constraint or trigger) to accept the value"
        waits = "batch waits" if waiting == 1 else "batches wait"
        return PermanentError(
            f"{where}: {reason}; {waiting} later committed {waits} behind it. Fix {fix}, then "
            "`purchases run` applies the batches in order (README: when the database refuses "
            "a batch)"
        )

    def _staged_batches_after(self, batch_id: int) -> int:
        staging = self.tables.staging
        query = sa.select(sa.func.count(sa.distinct(staging.c.batch_id))).where(
            staging.c.batch_id > batch_id)
        try:
            with self.engine.connect() as con:
                return int(con.scalar(query) or 0)
        except self.db_errors:
            return 0

    def _rejects(self, work: Callable[[sa.Connection], Any]) -> BaseException | None:
        """Run `work` in a transaction that is always rolled back; the database error it
        raised, if any."""
        with self.engine.connect() as con:
            tx = con.begin()
            try:
                work(con)
            except self.db_errors as exc:
                return exc
            finally:
                tx.rollback()
        return None

    def _first_refused(
        self, items: list[Any], work: Callable[[sa.Connection, list[Any]], Any]
    ) -> tuple[Any, BaseException] | None:
        """The first of `items` the database refuses when `work` writes it (halving a failing
        chunk until one item is left), with the error; None if it refuses none alone."""
        for start in range(0, len(items), REFUSAL_CHUNK):
            chunk = items[start:start + REFUSAL_CHUNK]
            if self._rejects(lambda con, chunk=chunk: work(con, chunk)) is None:
                continue
            while len(chunk) > 1:
                left = chunk[: len(chunk) // 2]
                failed = self._rejects(lambda con, left=left: work(con, left)) is not None
                chunk = left if failed else chunk[len(left):]
            error = self._rejects(lambda con, chunk=chunk: work(con, chunk))
            return (chunk[0], error) if error is not None else None
        return None

    def _refused_field(
        self, columns: list[sa.Column], fails: Callable[[str, Any], bool]
    ) -> str | None:
        """The first column whose value, replaced by a harmless one, makes the row pass (None:
        the refusal is not about one value, e.g. a dropped table)."""
        for column in columns:
            if not fails(column.name, _harmless(column)):
                return ServingTables.source(column)
        return None

    def _refused_staging_row(
        self, lake: Lake, files: list[str], batch_id: int
    ) -> tuple[int, str, BaseException] | None:
        """Re-insert the batch's gold rows in small rolled-back transactions (plain INSERT: the
        bulk paths name no row) to find the first one staging refuses, and its field."""
        staging = self.tables.staging
        columns = self.tables.written(staging)
        sources = [self.tables.source(c) for c in columns if c.name not in _BATCH_COLUMNS]
        constants = {"batch_id": batch_id, "load_date": _utcnow()}

        def insert(con: sa.Connection, rows: list[dict[str, Any]]) -> None:
            con.execute(staging.insert(), rows)

        try:
            for table in _gold_batches(lake, files, sources, None):  # STAGING_CHUNK at a time
                rows = [{c.name: constants[c.name] if c.name in constants
                         else r[self.tables.source(c)] for c in columns}
                        for r in table.to_pylist()]
                found = self._first_refused(rows, insert)
                if found is None:
                    continue
                row, error = found
                field = self._refused_field(
                    [c for c in columns if c.name not in ("customer_id", *_BATCH_COLUMNS)],
                    lambda name, value, row=row: self._rejects(
                        lambda con: insert(con, [{**row, name: value}])) is not None,
                )
                return (row["customer_id"], field, error) if field else None
        except (*self.db_errors, PermanentError):  # the diagnosis is best effort
            return None
        return None

    def _refused_summary_row(self, batch_id: int) -> tuple[int, str, BaseException] | None:
        """Re-run the upsert for the batch's staged customers in small rolled-back transactions
        to find the first one the summary refuses, and its field."""
        staging = self.tables.staging
        upsert = upsert_statement(self.engine.dialect, _utcnow(), by_customer=True)
        ids_query = sa.select(staging.c.customer_id).where(
            staging.c.batch_id == batch_id).order_by(staging.c.customer_id)

        def apply(con: sa.Connection, ids: list[int]) -> None:
            con.execute(upsert, {"batch_id": batch_id, "first": ids[0], "last": ids[-1]})

        try:
            with self.engine.connect() as con:
                ids = list(con.scalars(ids_query))
            found = self._first_refused(ids, apply)
            if found is None:
                return None
            customer_id, error = found
            row = (staging.c.batch_id == batch_id) & (staging.c.customer_id == customer_id)

            def fails(name: str, value: Any) -> bool:
                def work(con: sa.Connection) -> None:
                    con.execute(staging.update().where(row).values({name: value}))
                    apply(con, [customer_id])
                return self._rejects(work) is not None

            columns = [c for c in self.tables.written(staging)
                       if c.name not in ("customer_id", *_BATCH_COLUMNS)]
            field = self._refused_field(columns, fails)
        except (*self.db_errors, PermanentError):  # the diagnosis is best effort
            return None
        return (customer_id, field, error) if field else None


def _refused_by_database(exc: PermanentError, db_errors: tuple[type[BaseException], ...]) -> bool:
    """Whether the database itself refused (a driver error, or LOAD DATA's warnings)."""
    return isinstance(exc.__cause__, db_errors) or isinstance(exc, _LoadRefused)


def _harmless(column: sa.Column) -> Any:
    """A value any sane constraint accepts, to tell which field a refused row fails on."""
    if column.nullable:
        return None
    python_type = column.type.python_type
    if python_type is Decimal:
        return Decimal("0.00")
    if python_type in (date, datetime):
        return python_type(2000, 1, 1)
    return python_type()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- bulk staging load -------------------------------------------------------------------------


def _gold_batches(
    lake: Lake, files: list[str], sources: list[str], batch_id: int | None,
    now: datetime | None = None, *, time_unit: str = "us",
) -> Iterator[pa.Table]:
    """Gold columns `sources` (in staging column order), STAGING_CHUNK rows at a time;
    batch_id and load_date appended unless batch_id is None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for rel in files:
        with lake.open(rel) as fh:
            pf = pq.ParquetFile(fh)
            money = pf.schema_arrow.field("total_spent_aud").type
            if not pa.types.is_decimal(money):
                # A float here would already have lost cents; refuse rather than load it.
                raise PermanentError(f"{rel}: total_spent_aud is {money}, expected a decimal")
            for batch in pf.iter_batches(batch_size=STAGING_CHUNK, columns=sources):
                n = batch.num_rows
                if n and batch_id is None:
                    yield pa.Table.from_batches([batch])
                elif n:
                    yield pa.Table.from_batches([batch]).append_column(
                        "batch_id", pa.repeat(pa.scalar(batch_id, pa.int64()), n)
                    ).append_column(
                        "load_date", pa.repeat(pa.scalar(now, pa.timestamp(time_unit)), n)
                    )


def _csv_bytes(table: pa.Table, null: str) -> bytes:
    """RFC 4180 CSV, every non-NULL value quoted, NULL as `null` unquoted.

    Arrow renders decimals and dates exactly ("1234.50", "2024-01-15"): money never passes
    through a float, nor through a Python object per value.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    buf = pa.BufferOutputStream()
    pa_csv.write_csv(table, buf, pa_csv.WriteOptions(
        include_header=False, quoting_style="all_valid", null_string=null))
    return buf.getvalue().to_pybytes()


def _copy_into_staging(
    con: sa.Connection, batches: Iterator[pa.Table], columns: list[sa.Column]
) -> int:
    """PostgreSQL: COPY ... FROM STDIN (psycopg 3) inside the caller's transaction."""
    from psycopg import sql

    # CSV: an unquoted empty field is NULL, a quoted one the empty string.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(STAGING_TABLE),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
    )
    loaded = 0
    with con.connection.dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for table in batches:
            copy.write(_csv_bytes(table, null=""))
            loaded += table.num_rows
    return loaded


class _LoadRefused(PermanentError):
    """LOAD DATA LOCAL passed rows with warnings (a value the column cannot hold)."""


def _load_data_local(
    con: sa.Connection, batches: Iterator[pa.Table], columns: list[sa.Column]
) -> int:
    """MySQL/MariaDB: LOAD DATA LOCAL INFILE from a CSV spooled to a temporary file.

    The file grows with the batch; memory does not. LOCAL turns data errors into warnings
    (as IGNORE would), so any warning fails the load instead of passing a mangled row.
    """
    quote = con.dialect.identifier_preparer.quote
    # With ENCLOSED BY, an unquoted NULL is NULL and "NULL" the string; ESCAPED BY '' keeps
    # backslashes literal, since the CSV doubles quotes and escapes nothing else.
    statement = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {quote(STAGING_TABLE)} CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        f"LINES TERMINATED BY '\\n' ({', '.join(quote(c.name) for c in columns)})"
    )
    written = 0
    with tempfile.TemporaryDirectory(prefix="purchases-staging-") as tmp:
        path = Path(tmp) / "staging.csv"
        with path.open("wb") as fh:
            for table in batches:
                fh.write(_csv_bytes(table, null="NULL"))
                written += table.num_rows
        if not written:
            return 0
        with con.connection.dbapi_connection.cursor() as cursor:
            loaded = cursor.execute(statement, (str(path),))
            cursor.execute("SHOW WARNINGS LIMIT 1")
            warning = cursor.fetchone()
    if warning or loaded != written:
        raise _LoadRefused(
            f"LOAD DATA into {STAGING_TABLE}: {loaded} of {written} rows"
            + (f", {warning[0]} {warning[1]}: {warning[2]}" if warning else "")
        )
    return loaded


def _insert_into_staging(
    con: sa.Connection, batches: Iterator[pa.Table], columns: list[sa.Column],
    constants: dict[str, Any],
) -> int:
    """SQLite, or MySQL without LOCAL INFILE: one executemany per chunk (PyMySQL rewrites it
    into multi-row INSERT ... VALUES). `batches` hold the gold columns the staging `columns`
    take their values from (ServingTables.source); `constants` the rest."""
    dialect = con.dialect
    names = [c.name for c in columns]
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    processors = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns}
    fixed = {c: processors[c](v) if processors[c] else v for c, v in constants.items()}
    if marker is None:  # pragma: no cover - every supported driver has one of the above
        statement: Any = columns[0].table.insert()
    else:
        quote = dialect.identifier_preparer.quote
        statement = (
            # Bandit B608: names quoted by the dialect; values are bound
            f"INSERT INTO {quote(STAGING_TABLE)} ({', '.join(map(quote, names))}) "
            f"VALUES ({', '.join([marker] * len(names))})"  # nosec B608
        )
    loaded = 0
    for table in batches:
        # Bind processing as SQLAlchemy would do it (money to cents on SQLite, dates to text),
        # but column by column, each distinct value once, and without a dict per row.
        values = [
            repeat(fixed[c.name], table.num_rows) if c.name in fixed
            else _processed(processors[c.name], table.column(ServingTables.source(c)).to_pylist())
            for c in columns
        ]
        params = list(zip(*values, strict=True))
        if marker is None:  # pragma: no cover
            con.execute(statement, [dict(zip(names, r, strict=True)) for r in params])
        else:
            con.exec_driver_sql(statement, params)
        loaded += len(params)
    return loaded


def _processed(processor: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    if processor is None:
        return values
    done: dict[Any, Any] = {}  # dates repeat a lot within a chunk
    return [done[v] if v in done else done.setdefault(v, processor(v)) for v in values]


# --- upsert ------------------------------------------------------------------------------------


def mysql_row_alias(dialect: sa.Dialect) -> bool:
    """True on MySQL >= 8.0.19, where the inserted row is named by an alias; MariaDB (and
    older MySQL) use VALUES(col) instead, which MySQL 8 deprecates."""
    version = dialect.server_version_info or (0,)
    return not getattr(dialect, "is_mariadb", False) and tuple(version) >= (8, 0, 19)


def upsert_statement(dialect: sa.Dialect, now: datetime, *, by_customer: bool = False) -> Any:
    """INSERT ... SELECT the staged rows of :batch_id into the summary, replacing a row only
    with values from a newer batch than the one it reflects; `by_customer` limits it to
    customer_id :first..:last (to find a row the database refuses)."""
    tables = serving_tables(dialect.name)
    target, staging = tables.summary, tables.staging
    cols = [c.name for c in tables.written(target) if c.name != "updated_at"]
    source = sa.select(
        *(staging.c[c] for c in cols), sa.literal(now, sa.DateTime()).label("updated_at")
    ).where(staging.c.batch_id == sa.bindparam("batch_id"))
    if by_customer:
        source = source.where(
            staging.c.customer_id.between(sa.bindparam("first"), sa.bindparam("last")))
    target_cols = [*cols, "updated_at"]
    updated = [c for c in target_cols if c != "customer_id"]
    name = dialect.name
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(target).from_select(target_cols, source)
        return stmt.on_conflict_do_update(
            index_elements=[target.c.customer_id],
            set_={c: stmt.excluded[c] for c in updated},
            where=stmt.excluded.batch_id > target.c.batch_id,
        )
    if name in _MYSQL:
        from sqlalchemy.dialects.mysql import insert

        if mysql_row_alias(dialect):
            # MySQL 8 names the incoming row through a derived table alias (INSERT ... SELECT
            # has no `AS new` row alias of its own).
            new = source.subquery("new")
            stmt = insert(target).from_select(target_cols, sa.select(*new.c))
            incoming: Any = new.c
        else:
            stmt = insert(target).from_select(target_cols, source)
            incoming = stmt.inserted  # renders VALUES(col)
        newer = incoming.batch_id > target.c.batch_id
        # ON DUPLICATE KEY UPDATE has no WHERE: each column keeps its value unless the batch
        # is newer. Assignments run left to right and later ones see earlier results, so
        # batch_id, which every condition reads, is assigned last.
        assignments = [
            (c, sa.func.IF(newer, incoming[c], target.c[c])) for c in updated if c != "batch_id"
        ]
        assignments.append(("batch_id", sa.func.IF(newer, incoming.batch_id, target.c.batch_id)))
        return stmt.on_duplicate_key_update(assignments)
    raise PermanentError(
        f"serving database dialect {name!r} is not supported (use sqlite, postgresql or mysql)"
    )


# --- entry points --------------------------------------------------------------------------------


@contextmanager
def connect(settings: Settings) -> Iterator[ServingDatabase]:
    """Open the serving database, migrate its schema if needed, and translate driver errors."""
    engine = create_db_engine(settings)
    db = ServingDatabase(engine)
    try:
        db.ensure_schema()
        yield db
    except db.db_errors as exc:
        raise translate(exc, engine.url) from exc
    finally:
        engine.dispose()


def upgrade_schema(settings: Settings, revision: str = "head") -> tuple[str, str | None]:
    """Apply migrations up to `revision`; returns (masked URL, revision now)."""
    engine = create_db_engine(settings)
    db = ServingDatabase(engine)
    try:
        return masked_url(engine.url), migrations.upgrade(engine, revision)
    except db.db_errors as exc:
        raise translate(exc, engine.url) from exc
    finally:
        engine.dispose()


def schema_status(settings: Settings) -> dict[str, Any]:
    """Where the database's schema is against the shipped head, without changing anything."""
    engine = create_db_engine(settings)
    db = ServingDatabase(engine)
    try:
        current = db.schema_revision()
        head = migrations.head_revision()
        status = {
            "database": masked_url(engine.url),
            "dialect": engine.dialect.name + (
                " (MariaDB)" if getattr(engine.dialect, "is_mariadb", False) else ""
            ),
            "revision": current or "none",
            "head": head,
            "up_to_date": current == head,
        }
        if current is not None:
            ledger = db.ledger()
            status["batches_applied"] = len(ledger)
            status["latest_batch"] = ledger[-1]["batch_id"] if ledger else None
        return status
    except db.db_errors as exc:
        raise translate(exc, engine.url) from exc
    finally:
        engine.dispose()


def upgrade_sql(settings: Settings, revision: str = "head") -> str:
    """The migration DDL for the configured database's dialect, without connecting."""
    return migrations.upgrade_sql(database_url(settings), revision)
