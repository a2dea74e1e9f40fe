"""Gold -> serving database: staging load, replace-upsert and batch ledger (DESIGN §5).

One SQLAlchemy code path for SQLite, PostgreSQL and MySQL 8 / MariaDB; only the bulk load and
the upsert statement are dialect-specific. A batch is applied in one transaction together
with its ledger row, so applying it twice is a no-op, and a row only takes values from a
batch newer than the one it already reflects. The schema is created and evolved by the
Alembic revisions in `purchases.migrations`, applied on first use. Driver errors become
TransientError (worth a retry: dropped connection, deadlock, lock wait, failover) or
PermanentError, told apart by driver error code.

Credentials: the password comes from the URL, else the file PURCHASES_DATABASE_PASSWORD_FILE
names, else the environment variable PURCHASES_DATABASE_PASSWORD. Any URL this module shows
goes through `masked_url`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
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
    ledger_table,
    staging_table,
    summary_table,
)
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.faults import fault_point

if TYPE_CHECKING:
    from purchases.catalog import Commit
    from purchases.config import Settings
    from purchases.storage import Lake

log = logging.getLogger(__name__)

PASSWORD_ENV = "PURCHASES_DATABASE_PASSWORD"
STAGING_CHUNK = 10_000
"""Gold rows read, converted and sent per round trip: bounds memory, whatever the batch size."""

MYSQL_LOAD_DATA_LOCAL = True
"""Load MySQL/MariaDB staging with LOAD DATA LOCAL INFILE where the server allows it (about
twice the rate of multi-row INSERT, see bench/serving.py); False: always multi-row INSERT."""

RETRY_ATTEMPTS = 4
RETRY_WAIT_SECONDS = 0.25
"""Retries inside serving are short: they ride out a dropped connection or a deadlock; the
orchestrator's step retries (longer waits) cover an outage."""

STAGING_COLUMNS: tuple[str, ...] = tuple(staging_table.c.keys())
_GOLD_STAGING_COLUMNS = tuple(c for c in STAGING_COLUMNS if c not in ("batch_id", "load_date"))
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


def masked_url(url: str | sa.URL) -> str:
    """The URL as it may be shown: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown not at all rather than leaked
        return "<database URL>"


def database_url(settings: Settings) -> sa.URL:
    """The configured URL with its password resolved (URL, then password file, then env)."""
    try:
        url = make_url(settings.db_url)
    except Exception:
        raise ConfigError("PURCHASES_DATABASE_URL is not a valid SQLAlchemy URL") from None
    url = url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))
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
        extra = "mysql" if url.get_backend_name() in _MYSQL else url.get_backend_name()
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
            return set(con.scalars(sa.select(ledger_table.c.batch_id)))

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger row, oldest batch first."""
        with self.engine.connect() as con:
            rows = con.execute(sa.select(ledger_table).order_by(ledger_table.c.batch_id))
            return [dict(r._mapping) for r in rows]

    def staged_rows(self) -> int:
        """Rows waiting in staging (0 after every applied batch)."""
        with self.engine.connect() as con:
            return int(con.scalar(sa.select(sa.func.count()).select_from(staging_table)) or 0)

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The business query of DESIGN §5 (ties broken by customer_id for a stable order)."""
        query = (
            sa.select(*(summary_table.c[c] for c in TOP_CUSTOMERS_COLUMNS))
            .order_by(summary_table.c.total_spent_aud.desc(), summary_table.c.customer_id)
            .limit(n)
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def summary(self) -> list[dict[str, Any]]:
        """Every summary row, by customer_id (for checks and exports)."""
        query = sa.select(*(summary_table.c[c] for c in SERVING_COLUMNS)).order_by(
            summary_table.c.customer_id
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    # --- writes

    def load_staging(self, lake: Lake, commit: Commit) -> int:
        """Replace the staging rows of a batch with its gold change set; returns rows loaded.

        Streams the gold Parquet in chunks of STAGING_CHUNK rows, in one transaction, on the
        backend's bulk path: PostgreSQL COPY FROM STDIN; MySQL/MariaDB LOAD DATA LOCAL INFILE
        where the server allows it, else multi-row INSERT; SQLite executemany.
        """
        from purchases.catalog import gold_files

        files = gold_files(commit)
        return self._retrying(lambda: self._load_staging(lake, files, commit.batch_id))

    def apply_batch(self, commit: Commit) -> int:
        """Upsert a staged batch into the summary, once; returns customers written.

        One transaction: claim the batch in the ledger, upsert, clear its staging rows. A
        connection lost on the way rolls all of it back and the retry redoes it; a batch
        already in the ledger (applied before, or committed just before the connection
        dropped) is a no-op.
        """
        return self._retrying(lambda: self._apply_batch(commit))

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
        infile = self.dialect in _MYSQL and self._local_infile_allowed()
        # LOCAL INFILE lets the server ask the client for a file: allowed only on a connection
        # of its own, opened for this load and closed after it.
        engine = self._infile_engine() if infile else self.engine
        try:
            with engine.begin() as con:
                con.execute(staging_table.delete().where(staging_table.c.batch_id == batch_id))
                if self.dialect == "postgresql":
                    return _copy_into_staging(con, _gold_batches(lake, files, batch_id, now))
                if infile:
                    # DATETIME keeps whole seconds; sub-second text would count as a warning.
                    batches = _gold_batches(lake, files, batch_id, now, time_unit="s")
                    return _load_data_local(con, batches)
                return _insert_into_staging(
                    con, _gold_batches(lake, files, None),
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

    @staticmethod
    def _in_ledger(con: sa.Connection, batch_id: int) -> bool:
        query = sa.select(ledger_table.c.batch_id).where(ledger_table.c.batch_id == batch_id)
        return con.scalar(query) is not None


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- bulk staging load -------------------------------------------------------------------------


def _gold_batches(
    lake: Lake, files: list[str], batch_id: int | None, now: datetime | None = None, *,
    time_unit: str = "us",
) -> Iterator[pa.Table]:
    """Gold rows as staging columns (STAGING_COLUMNS order), STAGING_CHUNK rows at a time;
    batch_id and load_date appended unless batch_id is None."""
    for rel in files:
        with lake.open(rel) as fh:
            pf = pq.ParquetFile(fh)
            money = pf.schema_arrow.field("total_spent_aud").type
            if not pa.types.is_decimal(money):
                # A float here would already have lost cents; refuse rather than load it.
                raise PermanentError(f"{rel}: total_spent_aud is {money}, expected a decimal")
            for batch in pf.iter_batches(batch_size=STAGING_CHUNK, columns=_GOLD_STAGING_COLUMNS):
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
    buf = pa.BufferOutputStream()
    pa_csv.write_csv(table, buf, pa_csv.WriteOptions(
        include_header=False, quoting_style="all_valid", null_string=null))
    return buf.getvalue().to_pybytes()


def _copy_into_staging(con: sa.Connection, batches: Iterator[pa.Table]) -> int:
    """PostgreSQL: COPY ... FROM STDIN (psycopg 3) inside the caller's transaction."""
    from psycopg import sql

    # CSV: an unquoted empty field is NULL, a quoted one the empty string.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(STAGING_TABLE), sql.SQL(", ").join(map(sql.Identifier, STAGING_COLUMNS))
    )
    loaded = 0
    with con.connection.dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for table in batches:
            copy.write(_csv_bytes(table, null=""))
            loaded += table.num_rows
    return loaded


def _load_data_local(con: sa.Connection, batches: Iterator[pa.Table]) -> int:
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
        f"LINES TERMINATED BY '\\n' ({', '.join(map(quote, STAGING_COLUMNS))})"
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
        raise PermanentError(
            f"LOAD DATA into {STAGING_TABLE}: {loaded} of {written} rows"
            + (f", {warning[0]} {warning[1]}: {warning[2]}" if warning else "")
        )
    return loaded


def _insert_into_staging(
    con: sa.Connection, batches: Iterator[pa.Table], constants: dict[str, Any]
) -> int:
    """SQLite, or MySQL without LOCAL INFILE: one executemany per chunk (PyMySQL rewrites it
    into multi-row INSERT ... VALUES). `batches` hold the gold columns; `constants` the rest."""
    dialect = con.dialect
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    processors = {
        c: staging_table.c[c].type.dialect_impl(dialect).bind_processor(dialect)
        for c in STAGING_COLUMNS
    }
    fixed = {c: processors[c](v) if processors[c] else v for c, v in constants.items()}
    if marker is None:  # pragma: no cover - every supported driver has one of the above
        statement: Any = staging_table.insert()
    else:
        quote = dialect.identifier_preparer.quote
        statement = (
            f"INSERT INTO {quote(STAGING_TABLE)} ({', '.join(map(quote, STAGING_COLUMNS))}) "
            f"VALUES ({', '.join([marker] * len(STAGING_COLUMNS))})"
        )
    loaded = 0
    for table in batches:
        # Bind processing as SQLAlchemy would do it (money to cents on SQLite, dates to text),
        # but column by column, each distinct value once, and without a dict per row.
        columns = [
            repeat(fixed[c], table.num_rows) if c in fixed
            else _processed(processors[c], table.column(c).to_pylist())
            for c in STAGING_COLUMNS
        ]
        params = list(zip(*columns, strict=True))
        if marker is None:  # pragma: no cover
            con.execute(statement, [dict(zip(STAGING_COLUMNS, r, strict=True)) for r in params])
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


def upsert_statement(dialect: sa.Dialect, now: datetime) -> Any:
    """INSERT ... SELECT the staged rows of :batch_id into the summary, replacing a row only
    with values from a newer batch than the one it reflects."""
    cols = [*SERVING_COLUMNS, "batch_id"]
    source = sa.select(
        *(staging_table.c[c] for c in cols), sa.literal(now, sa.DateTime()).label("updated_at")
    ).where(staging_table.c.batch_id == sa.bindparam("batch_id"))
    target_cols = [*cols, "updated_at"]
    updated = [c for c in target_cols if c != "customer_id"]
    target = summary_table
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
