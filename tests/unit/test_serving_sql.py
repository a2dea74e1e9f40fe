"""Serving without a server: dialect upsert SQL, error classification, URLs and credentials."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from purchases import migrations, serving
from purchases.config import Settings
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.serving.dialects import MySQLDialect

NOW = datetime(2024, 1, 15, 12, 0, 0)


def mysql_dialect(version: tuple[int, ...], *, mariadb: bool) -> sa.Dialect:
    dialect = mysql.dialect()
    dialect.server_version_info = version
    dialect.is_mariadb = mariadb
    return dialect


def render(dialect: sa.Dialect) -> str:
    return str(serving.upsert_statement(dialect, NOW).compile(dialect=dialect))


def assignments(sql: str) -> list[str]:
    """Target columns of ON DUPLICATE KEY UPDATE, in order."""
    clause = sql.split("ON DUPLICATE KEY UPDATE", 1)[1]
    return re.findall(r"(?:^ |, )(\w+) = IF\(", clause)


# --- upsert statements ---------------------------------------------------------------------------


def test_postgres_upsert_is_on_conflict_guarded_by_batch() -> None:
    sql = render(postgresql.dialect())
    assert "INSERT INTO customer_purchase_summary (" in sql
    assert "FROM customer_purchase_summary_staging" in sql
    assert "ON CONFLICT (customer_id) DO UPDATE SET" in sql
    assert "WHERE excluded.batch_id > customer_purchase_summary.batch_id" in sql
    assert "%(batch_id)s" in sql  # bound, never formatted in


def test_sqlite_upsert_is_on_conflict_guarded_by_batch() -> None:
    sql = render(sqlite.dialect())
    assert "ON CONFLICT (customer_id) DO UPDATE SET" in sql
    assert "WHERE excluded.batch_id > customer_purchase_summary.batch_id" in sql


def test_mysql8_upsert_uses_the_row_alias_and_assigns_batch_id_last() -> None:
    sql = render(mysql_dialect((8, 0, 36), mariadb=False))
    assert ") AS new ON DUPLICATE KEY UPDATE " in sql
    assert "VALUES(" not in sql
    assert (
        "total_spent_aud = IF(new.batch_id > customer_purchase_summary.batch_id, "
        "new.total_spent_aud, customer_purchase_summary.total_spent_aud)"
    ) in sql
    cols = assignments(sql)
    assert cols[-1] == "batch_id"
    assert set(cols) == {
        "full_name", "email", "total_spent_aud", "first_purchase_date", "last_purchase_date",
        "purchase_count", "updated_at", "batch_id",
    }


def test_mariadb_upsert_uses_values_and_assigns_batch_id_last() -> None:
    sql = render(mysql_dialect((10, 11, 9), mariadb=True))
    assert " AS new" not in sql
    assert (
        "email = IF(VALUES(batch_id) > customer_purchase_summary.batch_id, "
        "VALUES(email), customer_purchase_summary.email)"
    ) in sql
    assert assignments(sql)[-1] == "batch_id"
    assert "%s" in sql


def test_old_mysql_falls_back_to_values() -> None:
    caps = MySQLDialect()
    assert not caps.row_alias(mysql_dialect((8, 0, 18), mariadb=False))
    assert caps.row_alias(mysql_dialect((8, 0, 19), mariadb=False))
    assert not caps.row_alias(mysql_dialect((11, 4, 2), mariadb=True))
    assert "VALUES(batch_id)" in render(mysql_dialect((5, 7, 44), mariadb=False))


def test_unknown_dialect_is_a_clear_permanent_error() -> None:
    from sqlalchemy.dialects import mssql

    with pytest.raises(PermanentError, match="not supported"):
        serving.upsert_statement(mssql.dialect(), NOW)


# --- error classification ------------------------------------------------------------------------


def wrapped(orig: Exception) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize("error", [
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.ConnectionFailure("connection failure"),  # class 08
    psycopg.OperationalError("connection failed: ... failed: Connection refused"),
    psycopg.OperationalError("consuming input failed: server closed the connection"),
    pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
    pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"),
    pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
    pymysql.err.OperationalError(1927, "Connection was killed"),
    pymysql.err.InterfaceError(0, ""),
])
def test_transient_driver_errors(error: Exception) -> None:
    assert serving.is_transient(error)
    assert serving.is_transient(wrapped(error))
    assert isinstance(serving.translate(wrapped(error), "sqlite://"), TransientError)


@pytest.mark.parametrize("error", [
    psycopg.errors.UniqueViolation("duplicate key"),
    psycopg.errors.UndefinedTable("relation does not exist"),
    psycopg.OperationalError('connection failed: FATAL:  database "nope" does not exist'),
    psycopg.OperationalError('FATAL:  password authentication failed for user "x"'),
    pymysql.err.OperationalError(1049, "Unknown database 'nope'"),
    pymysql.err.OperationalError(1045, "Access denied for user"),
    pymysql.err.ProgrammingError(1146, "Table doesn't exist"),
    pymysql.err.DataError(1406, "Data too long for column"),
])
def test_permanent_driver_errors(error: Exception) -> None:
    assert not serving.is_transient(error)
    assert isinstance(serving.translate(wrapped(error), "sqlite://"), PermanentError)


def test_sqlite_busy_is_transient_other_sqlite_errors_are_not() -> None:
    import sqlite3

    busy = sqlite3.OperationalError("database is locked")
    assert serving.is_transient(wrapped(busy))
    assert not serving.is_transient(wrapped(sqlite3.OperationalError("no such table: x")))


def test_sqlite_unable_to_open_says_what_the_folder_needs(tmp_path: Path) -> None:
    """SQLite's own text names no cause; a read-only home was the case met (a WAL database
    needs its -wal and -shm files beside it even to be read)."""
    import sqlite3

    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(tmp_path / "no-such-folder" / "purchases.db")
    msg = str(serving.translate(wrapped(caught.value), "sqlite:///x/purchases.db"))
    assert msg.startswith("database sqlite:///x/purchases.db: unable to open database file (")
    assert "its folder must be writable by this user)" in msg
    other = serving.translate(wrapped(sqlite3.OperationalError("no such table: x")), "sqlite://")
    assert str(other) == "database sqlite://: no such table: x"


def test_an_invalidated_connection_is_transient() -> None:
    exc = sa.exc.OperationalError("SELECT 1", {}, Exception("boom"), connection_invalidated=True)
    assert serving.is_transient(exc)


def test_translate_masks_the_url_and_any_echoed_password() -> None:
    url = "postgresql+psycopg://app:hunter2-secret@db.example:5432/shop"
    exc = wrapped(psycopg.OperationalError("weird: hunter2-secret\nsecond line"))
    msg = str(serving.translate(exc, url))
    assert "hunter2-secret" not in msg
    assert "app:***@db.example:5432/shop" in msg
    assert "second line" not in msg


# --- URL and credentials -------------------------------------------------------------------------


def make_settings(tmp_path: Path, url: str, **kw) -> Settings:
    return Settings(home=tmp_path, database_url=url, **kw)


def test_password_from_the_url_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(serving.PASSWORD_ENV, "from-env")
    url = serving.database_url(make_settings(tmp_path, "postgresql+psycopg://u:inurl@h/db"))
    assert url.password == "inurl"


def test_password_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv(serving.PASSWORD_ENV, "from-env")
    with_file = make_settings(tmp_path, "postgresql+psycopg://u@h/db",
                              database_password_file=secret)
    assert serving.database_url(with_file).password == "from-file"
    assert serving.database_url(make_settings(tmp_path, "postgresql+psycopg://u@h/db")).password \
        == "from-env"
    monkeypatch.delenv(serving.PASSWORD_ENV)
    assert serving.database_url(make_settings(tmp_path, "postgresql+psycopg://u@h/db")).password \
        is None


def test_unreadable_password_file_names_the_setting(tmp_path: Path) -> None:
    s = make_settings(tmp_path, "postgresql+psycopg://u@h/db",
                      database_password_file=tmp_path / "missing")
    with pytest.raises(PermanentError, match="PURCHASES_DATABASE_PASSWORD_FILE"):
        serving.database_url(s)


def test_bare_schemes_get_the_shipped_drivers_and_mysql_utf8mb4(tmp_path: Path) -> None:
    pg = serving.database_url(make_settings(tmp_path, "postgresql://u@h/db"))
    assert pg.drivername == "postgresql+psycopg"
    my = serving.database_url(make_settings(tmp_path, "mysql://u@h/db"))
    assert my.drivername == "mysql+pymysql"
    assert my.query["charset"] == "utf8mb4"
    kept = serving.database_url(make_settings(tmp_path, "mysql+pymysql://u@h/db?charset=latin1"))
    assert kept.query["charset"] == "latin1"


def test_masked_url_never_shows_the_password() -> None:
    assert serving.masked_url("mysql+pymysql://u:p%40ss@h/db") == "mysql+pymysql://u:***@h/db"
    assert serving.masked_url("::not a url::") == "<database URL>"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://bob@h:5432/db?password=s3cret&sslmode=require",
     "postgresql+psycopg://bob@h:5432/db?password=***&sslmode=require"),
    ("postgresql://h/db?sslpassword=s3cret", "postgresql://h/db?sslpassword=***"),
    ("mysql+pymysql://u:s3cret@h/db?passwd=s3cret&charset=utf8mb4",
     "mysql+pymysql://u:***@h/db?charset=utf8mb4&passwd=***"),
    ("postgresql://h/db?Access_Token=s3cret", "postgresql://h/db?Access_Token=***"),
    ("postgresql://h/db?options=-c%20password%3Ds3cret&application_name=etl",
     "postgresql://h/db?application_name=etl&options=***"),
    ("postgresql://h/db?dsn=password%3Ds3cret", "postgresql://h/db?dsn=***"),
    ("postgresql://h/db?a=1&a=pass%3Ds3cret", "postgresql://h/db?a=***"),
])
def test_masked_url_hides_a_password_given_as_a_query_parameter(url: str, shown: str) -> None:
    assert serving.masked_url(url) == shown


def test_invalid_url_is_a_config_error_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        serving.database_url(make_settings(tmp_path, "not a url with s3cr3t"))
    assert "s3cr3t" not in str(info.value)


# --- migrations ----------------------------------------------------------------------------------


def test_migrations_ship_one_linear_history() -> None:
    assert migrations.BASELINE == "0001"
    assert migrations.head_revision() == "0002"
    # HEAD spares each process Alembic; it must be the head of the scripts shipped.
    assert migrations.scripts_head() == migrations.HEAD
    assert migrations.is_known("0001") and migrations.is_known("0002")
    assert not migrations.is_known("9999")


def test_the_revision_is_read_as_alembic_reads_it(tmp_path: Path) -> None:
    """current_revision reads the version table without Alembic: the same answer as Alembic's
    MigrationContext for no table, an empty table and one row; two rows are refused."""
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'serving.db'}")

    def alembic_says(con: sa.Connection) -> str | None:
        opts = {"version_table": migrations.VERSION_TABLE}
        return MigrationContext.configure(con, opts=opts).get_current_revision()

    with engine.begin() as con:
        assert migrations.current_revision(con) is None
        assert alembic_says(con) is None
        con.exec_driver_sql(
            f"CREATE TABLE {migrations.VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)")
        assert migrations.current_revision(con) is None
        assert alembic_says(con) is None
        con.exec_driver_sql(f"INSERT INTO {migrations.VERSION_TABLE} VALUES ('0001')")
        assert migrations.current_revision(con) == alembic_says(con) == "0001"
        con.exec_driver_sql(f"INSERT INTO {migrations.VERSION_TABLE} VALUES ('0002')")
        with pytest.raises(PermanentError, match="holds 2 revisions \\(0001, 0002\\)"):
            migrations.current_revision(con)
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "postgresql+psycopg://u@h/db",
                                 "mysql+pymysql://u@h/db"])
def test_offline_ddl_has_the_seed_tables_and_index(url: str) -> None:
    ddl = migrations.upgrade_sql(sa.make_url(url))
    for table in ("customer_purchase_summary", "customer_purchase_summary_staging",
                  "purchases_batch_ledger"):
        assert f"CREATE TABLE {table} (" in ddl
    assert "CREATE INDEX idx_total_spent_desc ON customer_purchase_summary " \
           "(total_spent_aud DESC)" in ddl
    assert "load_date" in ddl and "updated_at" in ddl
    money = "BIGINT" if url.startswith("sqlite") else "NUMERIC(18, 2)"
    assert f"total_spent_aud {money} NOT NULL" in ddl  # revision 0001, frozen


def test_offline_ddl_gives_sqlite_an_aud_column_computed_from_cents() -> None:
    ddl = migrations.upgrade_sql(sa.make_url("sqlite://"))
    for table in ("customer_purchase_summary", "customer_purchase_summary_staging"):
        assert (f"ALTER TABLE {table} RENAME COLUMN total_spent_aud TO total_spent_aud_cents"
                in ddl)
        assert (f"ALTER TABLE {table} ADD COLUMN total_spent_aud REAL NOT NULL GENERATED ALWAYS "
                "AS (total_spent_aud_cents / 100.0) VIRTUAL") in ddl
    assert ddl.rindex("CREATE INDEX idx_total_spent_desc ON customer_purchase_summary "
                      "(total_spent_aud DESC)") > ddl.index("RENAME COLUMN")
    for url in ("postgresql+psycopg://u@h/db", "mysql+pymysql://u@h/db"):
        assert "total_spent_aud_cents" not in migrations.upgrade_sql(sa.make_url(url))


def test_sqlite_upsert_writes_the_cents_and_never_the_computed_column() -> None:
    sql = render(sqlite.dialect())
    insert_cols = [c.strip() for c in sql.split("(", 1)[1].split(")", 1)[0].split(",")]
    assert "total_spent_aud_cents" in insert_cols and "total_spent_aud" not in insert_cols
    assert "total_spent_aud_cents = excluded.total_spent_aud_cents" in sql
    assert "total_spent_aud = " not in sql


def test_cents_refuse_a_fraction_of_a_cent() -> None:
    from decimal import Decimal

    from purchases.contract import Cents

    cents = Cents()
    assert cents.process_bind_param(Decimal("-9999999999999999.99"), sqlite.dialect()) == \
        -999999999999999999
    assert cents.process_result_value(5311189, sqlite.dialect()) == Decimal("53111.89")
    with pytest.raises(ValueError, match="cents"):
        cents.process_bind_param(Decimal("0.001"), sqlite.dialect())


# --- unsupported databases ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["oracle://x", "mssql+pyodbc://u@h/db", "foo://x"])
def test_an_unsupported_database_names_the_supported_ones_and_their_extras(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(PermanentError) as info:
        serving.create_db_engine(make_settings(tmp_path, url))
    message = str(info.value)
    assert f"database {url.split(':')[0].split('+')[0]!r} is not supported" in message
    for hint in ("sqlite:///", "postgresql+psycopg://", "pip install 'purchases[postgres]'",
                 "mysql+pymysql://", "pip install 'purchases[mysql]'"):
        assert hint in message
    assert "purchases[oracle]" not in message and "\n" not in message


@pytest.mark.parametrize(("url", "use"), [
    ("postgresql+psycopg2://u@h/db",
     "postgresql+psycopg://... (pip install 'purchases[postgres]')"),
    ("mysql+mysqldb://u@h/db", "mysql+pymysql://... (pip install 'purchases[mysql]')"),
])
def test_an_unsupported_driver_names_the_shipped_one(tmp_path: Path, url: str, use: str) -> None:
    with pytest.raises(PermanentError, match="is not supported for") as info:
        serving.create_db_engine(make_settings(tmp_path, url))
    assert f"use {use}" in str(info.value)


def test_a_missing_driver_names_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(PermanentError) as info:
        serving.create_db_engine(make_settings(tmp_path, "postgresql://u:secret@h/db"))
    assert "pip install 'purchases[postgres]'" in str(info.value)
    assert "secret" not in str(info.value)


# --- the dialect registry -------------------------------------------------------------------------


def test_every_url_backend_finds_its_one_dialect_class() -> None:
    from purchases.serving import dialects

    assert dialects.names() == ["sqlite", "postgresql", "mysql"]
    assert dialects.find("mariadb") is dialects.MySQLDialect  # MariaDB: the MySQL dialect
    assert dialects.find_scheme("postgres") is dialects.PostgreSQLDialect
    assert dialects.find("postgres") is None and dialects.find("oracle") is None
    assert isinstance(dialects.for_url(sa.make_url("mariadb+pymysql://u@h/db")),
                      dialects.MySQLDialect)
    for error, dialect in [(psycopg.OperationalError("x"), dialects.PostgreSQLDialect),
                           (pymysql.err.OperationalError(2006, "x"), dialects.MySQLDialect)]:
        assert isinstance(dialects.for_error(error), dialect)
    assert dialects.for_error(ValueError("not a driver's")) is None


def test_registering_a_class_that_is_not_a_dialect_is_refused() -> None:
    from purchases.serving import dialects

    class Nameless(dialects.DialectCapabilities):
        pass

    for wrong in (object, Nameless, "sqlite"):
        with pytest.raises(TypeError, match="not a named DialectCapabilities subclass"):
            dialects.register(wrong)  # type: ignore[arg-type]
    assert dialects.names() == ["sqlite", "postgresql", "mysql"]


def test_each_dialect_keeps_money_as_its_database_can_exactly() -> None:
    from purchases.contract import MoneyStorage
    from purchases.serving import dialects

    assert {d.name: d.money for d in dialects.registered()} == {
        "sqlite": MoneyStorage.CENTS, "postgresql": MoneyStorage.DECIMAL,
        "mysql": MoneyStorage.DECIMAL}
    cents = dialects.SQLiteDialect().tables.summary.c
    assert "total_spent_aud_cents" in cents and cents.total_spent_aud.computed is not None
    assert "total_spent_aud_cents" not in dialects.MySQLDialect().tables.summary.c


def test_the_sqlite_upsert_reads_staging_in_load_order_the_servers_as_stored() -> None:
    # Load order is key order (gold is written in customer_id order): no sort of the batch.
    assert "ORDER BY customer_purchase_summary_staging.rowid ON CONFLICT" in render(
        sqlite.dialect())
    assert "ORDER BY" not in render(postgresql.dialect())
    assert "ORDER BY" not in render(mysql_dialect((10, 11, 9), mariadb=True))


@pytest.mark.parametrize(("charset", "said"), [
    # PyMySQL fails inside connect: "'NoneType' object has no attribute 'encoding'" ...
    ("bogus", "is not a MySQL character set"),
    ("utf16", "is a MySQL character set that cannot be a connection's (MySQL refuses it)"),
    ("UCS2", "is a MySQL character set that cannot be a connection's (MySQL refuses it)"),
    ("utf32", "is a MySQL character set that cannot be a connection's (MySQL refuses it)"),
    # ... or with "LookupError: unknown encoding: binary".
    ("binary", "is bytes, not text: names and emails would not be text"),
])
def test_a_mysql_charset_the_client_cannot_talk_in_is_a_setting_to_fix(
    charset: str, said: str
) -> None:
    prepare = MySQLDialect().prepare_url
    with pytest.raises(ConfigError) as refused:
        prepare(sa.make_url(f"mysql+pymysql://root@127.0.0.1/test?charset={charset}"))
    assert str(refused.value) == (f"PURCHASES_DATABASE_URL: charset {charset!r} {said}; leave "
                                  "it out for utf8mb4")
    kept = prepare(sa.make_url("mysql+pymysql://root@127.0.0.1/test?charset=latin1"))
    assert kept.query["charset"] == "latin1"
    assert prepare(sa.make_url("mysql+pymysql://root@h/t")).query["charset"] == "utf8mb4"


def test_a_sqlite_path_that_is_a_folder_is_said_so(tmp_path: Path) -> None:
    """SQLite's own answer is "unable to open database file", and the hint was about rights."""
    from purchases.serving.dialects.sqlite import SQLiteDialect

    with pytest.raises(ConfigError) as refused:
        SQLiteDialect().prepare_url(sa.make_url(f"sqlite:///{tmp_path}"))
    assert str(refused.value) == (f"PURCHASES_DATABASE_URL: {tmp_path} is a folder, not a "
                                  f"database file; name a file, such as "
                                  f"sqlite:///{tmp_path / 'purchases.db'}")
