"""MySQL 8 and MariaDB 10.11 (RDS, Aurora MySQL) through PyMySQL."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from purchases.errors import ConfigError, TransientError
from purchases.serving.dialects.base import DialectCapabilities, Release
from purchases.serving.staging import LoadRefused, StagingLoad, csv_bytes

_TRANSIENT_CODES = frozenset({
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
_LOCK_NAME = "purchases_schema_migration"


# MySQL's own rule: these may store a column but never be a connection's character set.
_NOT_CLIENT_CHARSETS = frozenset({"ucs2", "utf16", "utf16le", "utf32"})


def _charset_problem(name: str) -> str | None:
    """Why a connection cannot use MySQL character set `name` (None when it can)."""
    from pymysql.charset import charset_by_name

    if name.lower() in _NOT_CLIENT_CHARSETS:
        return "is a MySQL character set that cannot be a connection's (MySQL refuses it)"
    charset = charset_by_name(name)
    if charset is None:
        return "is not a MySQL character set"
    if charset.is_binary:
        return "is bytes, not text: names and emails would not be text"
    return None


class MySQLDialect(DialectCapabilities):
    """MySQL 8 and MariaDB: one dialect, which tells them apart where it must."""

    name = "mysql"
    also_serves = ("mariadb",)
    driver = "pymysql"
    extra = "mysql"
    url_example = "mysql+pymysql://... for MySQL 8 / MariaDB"
    # Bare schemes get PyMySQL rather than SQLAlchemy's default mysqlclient (not shipped).
    default_drivers = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
    # Fail over to the retry policy quickly rather than hang on an unreachable host.
    connect_args = {"connect_timeout": 10}
    driver_modules = ("pymysql", "MySQLdb", "mysql", "mariadb")

    load_data_local: ClassVar[bool] = True
    """Load staging with LOAD DATA LOCAL INFILE where the server allows it (about twice the
    rate of multi-row INSERT, see bench/serving.py); False: always multi-row INSERT."""

    def __init__(self) -> None:
        self._server_local_infile: bool | None = None

    def prepare_url(self, url: sa.URL) -> sa.URL:
        """utf8mb4 unless the URL names a charset: names are Unicode, and MySQL's legacy utf8
        (3-byte) would reject or mangle some.

        Raises:
            ConfigError: a charset the client cannot talk in (PyMySQL would fail inside its
                connect with an AttributeError or a LookupError that names nothing).
        """
        if "charset" not in url.query:
            return url.update_query_dict({"charset": "utf8mb4"})
        given = url.query["charset"]
        for name in (given,) if isinstance(given, str) else given:
            problem = _charset_problem(name)
            if problem:
                raise ConfigError(f"PURCHASES_DATABASE_URL: charset {name!r} {problem}; leave "
                                  "it out for utf8mb4")
        return url

    def describe(self, dialect: sa.Dialect) -> str:
        """`mysql`, `mariadb`, or `mysql (MariaDB)` where a mysql:// URL reaches MariaDB."""
        mariadb = getattr(dialect, "is_mariadb", False) and dialect.name != "mariadb"
        return dialect.name + (" (MariaDB)" if mariadb else "")

    def is_transient(self, error: BaseException) -> bool:
        """Lock wait, deadlock, a lost, refused, killed or timed-out connection, or a use of a
        connection already closed underneath us (InterfaceError)."""
        code = getattr(error, "errno", None)
        if code is None and error.args and isinstance(error.args[0], int):
            code = error.args[0]
        return code in _TRANSIENT_CODES or type(error).__name__ == "InterfaceError"

    def migration_lock(self, con: sa.Connection) -> Release:
        """A session-level named lock: MySQL commits DDL implicitly, so only that spans it."""
        got = con.execute(sa.text("SELECT GET_LOCK(:name, 120)"), {"name": _LOCK_NAME}).scalar()
        if got != 1:
            raise TransientError("another process has been migrating the schema for 2 minutes")
        return lambda: con.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})

    # --- staging

    def load_staging(self, engine: sa.Engine, load: StagingLoad) -> int:
        """LOAD DATA LOCAL INFILE where the server allows it, else multi-row INSERT (PyMySQL
        rewrites executemany into INSERT ... VALUES (...), (...))."""
        if not self._local_infile_allowed(engine):
            return super().load_staging(engine, load)
        # LOCAL INFILE lets the server ask the client for a file: allowed only on a connection
        # of its own, opened for this load and closed after it.
        infile = sa.create_engine(
            engine.url, poolclass=NullPool,
            connect_args={**self.connect_args, "local_infile": True})
        try:
            with infile.begin() as con:
                self.clear_staging(con, load.tables.staging, load.batch_id)
                return _load_data_local(con, load)
        finally:
            infile.dispose()

    def _local_infile_allowed(self, engine: sa.Engine) -> bool:
        if not self.load_data_local:
            return False
        if self._server_local_infile is None:
            with engine.connect() as con:
                value = con.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
            self._server_local_infile = str(value).upper() in ("1", "ON")
        return self._server_local_infile

    # --- upsert

    def row_alias(self, dialect: sa.Dialect) -> bool:
        """True on MySQL >= 8.0.19, where the inserted row is named by an alias; MariaDB (and
        older MySQL) use VALUES(col) instead, which MySQL 8 deprecates."""
        version = dialect.server_version_info or (0,)
        return not getattr(dialect, "is_mariadb", False) and tuple(version) >= (8, 0, 19)

    def upsert(
        self, target: sa.Table, source: sa.Select, columns: list[str], *, version: str,
        dialect: sa.Dialect,
    ) -> sa.Executable:
        """INSERT ... SELECT ... ON DUPLICATE KEY UPDATE col = IF(newer, incoming, current)."""
        # Imported on first use, as PostgreSQLDialect.insert's (every process registers this
        # class; one serving SQLite need not load SQLAlchemy's MySQL dialect).
        from sqlalchemy.dialects import mysql

        key = {c.name for c in target.primary_key.columns}
        if self.row_alias(dialect):
            # MySQL 8 names the incoming row through a derived table alias (INSERT ... SELECT
            # has no `AS new` row alias of its own).
            new = source.subquery("new")
            stmt = mysql.insert(target).from_select(columns, sa.select(*new.c))
            incoming: Any = new.c
        else:
            stmt = mysql.insert(target).from_select(columns, source)
            incoming = stmt.inserted  # renders VALUES(col)
        newer = incoming[version] > target.c[version]
        # ON DUPLICATE KEY UPDATE has no WHERE: each column keeps its value unless the batch
        # is newer. Assignments run left to right and later ones see earlier results, so the
        # version column, which every condition reads, is assigned last.
        assignments = [(c, sa.func.IF(newer, incoming[c], target.c[c]))
                       for c in columns if c not in key and c != version]
        assignments.append((version, sa.func.IF(newer, incoming[version], target.c[version])))
        return stmt.on_duplicate_key_update(assignments)


def _load_data_local(con: sa.Connection, load: StagingLoad) -> int:
    """LOAD DATA LOCAL INFILE from a CSV spooled to a temporary file.

    The file grows with the batch; memory does not. LOCAL turns data errors into warnings
    (as IGNORE would), so any warning fails the load instead of passing a mangled row.
    """
    quote = con.dialect.identifier_preparer.quote
    table = load.tables.staging.name
    # With ENCLOSED BY, an unquoted NULL is NULL and "NULL" the string; ESCAPED BY '' keeps
    # backslashes literal, since the CSV doubles quotes and escapes nothing else.
    statement = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {quote(table)} CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        f"LINES TERMINATED BY '\\n' ({', '.join(quote(c.name) for c in load.columns)})"
    )
    written = 0
    with tempfile.TemporaryDirectory(prefix="purchases-staging-") as tmp:
        path = Path(tmp) / "staging.csv"
        with path.open("wb") as fh:
            # DATETIME keeps whole seconds; sub-second text would count as a warning.
            for chunk in load.chunks(with_constants=True, time_unit="s"):
                fh.write(csv_bytes(chunk, null="NULL"))
                written += chunk.num_rows
        if not written:
            return 0
        with con.connection.dbapi_connection.cursor() as cursor:
            loaded = cursor.execute(statement, (str(path),))
            cursor.execute("SHOW WARNINGS LIMIT 1")
            warning = cursor.fetchone()
    if warning or loaded != written:
        raise LoadRefused(
            f"LOAD DATA into {table}: {loaded} of {written} rows"
            + (f", {warning[0]} {warning[1]}: {warning[2]}" if warning else "")
        )
    return loaded


__all__ = ["MySQLDialect"]
