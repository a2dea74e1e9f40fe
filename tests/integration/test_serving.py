"""The serving database on every registered serving dialect (SQLite, PostgreSQL, MySQL/MariaDB):
one suite, every backend, through conftest's db_url fixture.

Each test gets its own throw-away database (the table names are fixed by the contract), and
checks the summary against a Decimal oracle computed here from the silver Parquet files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import forked_cli
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from conftest import throwaway_database
from purchases import bronze, commit_log, migrations, serving
from purchases.commit_log import Commit
from purchases.config import Settings
from purchases.contract import MoneyStorage
from purchases.errors import TransientError
from purchases.generate import generate
from purchases.orchestrator import run_pipeline
from purchases.serving.dialects import MySQLDialect
from purchases.storage import Lake

pytest_plugins = ["pytester"]


def admin_engine(url: str) -> sa.Engine:
    """A second, independent connection pool to the same database (to watch and to kill)."""
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


# --- the pipeline and the oracle -----------------------------------------------------------------


def run_days(settings: Settings, incoming: Path, *, rows: int = 1500, days: int = 3,
             seed: int = 11) -> None:
    """Generate `days` files and land + run them one day at a time."""
    files = generate(incoming, rows=rows, days=days, seed=seed, bad_ratio=0.02)
    lake = Lake(settings.lake_uri)
    for f in files:
        bronze.land(lake, [f.path], f.ingestion_date)
        record = run_pipeline(settings)
        assert record.status == "succeeded"


def oracle(settings: Settings) -> list[dict[str, Any]]:
    """The summary DESIGN §4 defines, in Decimal, from every silver Parquet file."""
    silver = Path(settings.lake_uri) / "silver"
    cols = ["purchase_id", "customer_id", "full_name", "email", "purchase_date", "amount_aud"]
    rows = [r for f in sorted(silver.rglob("*.parquet"))
            for r in pq.ParquetFile(f).read(columns=cols).to_pylist()]
    assert rows, "no silver rows: the oracle would prove nothing"
    acc: dict[int, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["purchase_date"], r["purchase_id"])):
        assert isinstance(r["amount_aud"], Decimal)
        c = acc.setdefault(r["customer_id"], {
            "customer_id": r["customer_id"], "full_name": None, "email": None,
            "total_spent_aud": Decimal("0.00"), "first_purchase_date": r["purchase_date"],
            "last_purchase_date": r["purchase_date"], "purchase_count": 0,
        })
        c["total_spent_aud"] += r["amount_aud"]
        c["last_purchase_date"] = r["purchase_date"]  # rows come in date order
        c["purchase_count"] += 1
        c["full_name"] = r["full_name"] if r["full_name"] is not None else c["full_name"]
        c["email"] = r["email"] if r["email"] is not None else c["email"]
    for c in acc.values():
        c["total_spent_aud"] = c["total_spent_aud"].quantize(Decimal("0.01"))
    return [acc[k] for k in sorted(acc)]


def summary(settings: Settings) -> list[dict[str, Any]]:
    with serving.connect(settings) as db:
        return db.summary()


def summary_table_of(url: str) -> sa.Table:
    return serving.dialects.for_url(sa.make_url(url)).tables.summary


def keeps_cents(url: str | sa.URL) -> bool:
    """Whether the database keeps money as integer cents (contract.MoneyStorage.CENTS)."""
    return serving.dialects.for_url(sa.make_url(url)).money is MoneyStorage.CENTS


def summary_rows(url: str) -> list[tuple]:
    """Every stored column (batch_id, updated_at included), straight from the table."""
    engine = sa.create_engine(url)
    table = summary_table_of(url)
    try:
        with engine.connect() as con:
            return [tuple(r) for r in con.execute(
                sa.select(table).order_by(table.c.customer_id))]
    finally:
        engine.dispose()


def ledger_ids(settings: Settings) -> list[int]:
    with serving.connect(settings) as db:
        return [r["batch_id"] for r in db.ledger()]


def lake_with_commits(settings: Settings, incoming: Path, **kw: Any) -> list[Commit]:
    """A lake holding committed batches, served to the default SQLite only; the backend
    under test then gets its batches by hand, in the order a test chooses."""
    run_days(settings.model_copy(update={"database_url": None}), incoming, **kw)
    commits = commit_log.load_commits(Lake(settings.lake_uri))
    assert len(commits) >= 2
    return commits


def apply(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    db.load_staging(lake, commit)
    return db.apply_batch(commit)


def gold_rows(lake: Lake, commit: Commit) -> dict[int, dict[str, Any]]:
    rows = [r for rel in commit_log.gold_files(commit)
            for r in pq.ParquetFile(lake.full(rel)).read().to_pylist()]
    return {r["customer_id"]: r for r in rows}


# --- schema --------------------------------------------------------------------------------------


def index_is_descending(con: sa.Connection) -> bool:
    name = con.dialect.name
    if name == "postgresql":
        ddl = con.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_total_spent_desc'"
        ).scalar()
        return "total_spent_aud DESC" in ddl
    if name == "sqlite":
        info = con.exec_driver_sql("PRAGMA index_xinfo('idx_total_spent_desc')").all()
        return any(r[2] == "total_spent_aud" and r[3] == 1 for r in info)
    collation = con.exec_driver_sql(
        "SELECT collation FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "AND index_name = 'idx_total_spent_desc' AND column_name = 'total_spent_aud'"
    ).scalar()
    return collation == "D"


def test_schema_is_migrated_on_first_use(settings: Settings, db_url: str) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    with serving.connect(s) as db:
        assert db.schema_revision() == migrations.head_revision()
        insp = sa.inspect(db.engine)
        tables = set(insp.get_table_names())
        assert {"customer_purchase_summary", "customer_purchase_summary_staging",
                "purchases_batch_ledger", migrations.VERSION_TABLE} <= tables
        assert "load_date" in {c["name"] for c in insp.get_columns(
            "customer_purchase_summary_staging")}
        summary_cols = {c["name"]: c for c in insp.get_columns("customer_purchase_summary")}
        assert "updated_at" in summary_cols
        assert insp.get_pk_constraint("customer_purchase_summary")["constrained_columns"] == [
            "customer_id"]
        money = summary_cols["total_spent_aud"]["type"]
        if keeps_cents(db.engine.url):  # AUD computed from exact cents (contract.MoneyStorage)
            assert isinstance(money, sa.REAL)
            assert "total_spent_aud_cents" in summary_cols["total_spent_aud"]["computed"]["sqltext"]
            assert isinstance(summary_cols["total_spent_aud_cents"]["type"], sa.BigInteger)
        else:
            assert (money.precision, money.scale) == (18, 2)
            assert "total_spent_aud_cents" not in summary_cols
        with db.engine.connect() as con:
            assert index_is_descending(con)


def test_migrations_match_the_contract(settings: Settings, db_url: str) -> None:
    """The revisions build exactly the tables contract.py describes (no drift either way)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    s = settings.model_copy(update={"database_url": db_url})
    with serving.connect(s) as db, db.engine.connect() as con:
        ctx = MigrationContext.configure(con, opts={"compare_type": False})
        metadata = db.tables.metadata
        diff = [d for d in compare_metadata(ctx, metadata)
                if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)]
    assert diff == []


def test_db_upgrade_is_repeatable_and_adopts_pre_migration_tables(
    settings: Settings, db_url: str
) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    engine = serving.create_db_engine(s)
    try:
        # A database from before migrations existed: the tables, no version table.
        migrations.upgrade(engine, migrations.BASELINE)
        with engine.begin() as con:
            con.exec_driver_sql(f"DROP TABLE {migrations.VERSION_TABLE}")
            # Money as revision 0001 stored it: integer cents on SQLite, DECIMAL elsewhere.
            money = "110" if keeps_cents(engine.url) else "1.10"
            con.exec_driver_sql(
                "INSERT INTO customer_purchase_summary (customer_id, full_name, email, "
                "total_spent_aud, first_purchase_date, last_purchase_date, purchase_count, "
                f"batch_id, updated_at) VALUES (1, 'Kept Row', NULL, {money}, '2024-01-01', "
                "'2024-01-01', 1, 1, '2024-01-01 00:00:00')")
    finally:
        engine.dispose()
    assert serving.upgrade_schema(s)[2] == migrations.head_revision()
    assert serving.upgrade_schema(s)[2] == migrations.head_revision()
    assert summary(s)[0]["full_name"] == "Kept Row"
    assert summary(s)[0]["total_spent_aud"] == Decimal("1.10")
    status = serving.schema_status(s)
    assert status["up_to_date"] is True and status["batches_applied"] == 0


MIGRATED_AMOUNTS = ["53111.89", "0.00", "0.01", "-0.01", "100.10", "9999999999999.99",
                    "9999999999999999.99", "-9999999999999999.99"]


def test_revision_0002_keeps_every_amount_exact_and_shows_aud_raw(
    settings: Settings, db_url: str
) -> None:
    """A database served by revision 0001 (SQLite: cents in total_spent_aud) upgraded to head:
    the product reads every amount back exactly; the raw business query returns AUD."""
    s = settings.model_copy(update={"database_url": db_url})
    engine = serving.create_db_engine(s)
    sqlite = keeps_cents(engine.url)
    try:
        migrations.upgrade(engine, "0001")
        with engine.begin() as con:
            for i, amount in enumerate(MIGRATED_AMOUNTS, start=1):
                stored = int(Decimal(amount).scaleb(2)) if sqlite else Decimal(amount)
                for table, last in (("customer_purchase_summary", "updated_at"),
                                    ("customer_purchase_summary_staging", "load_date")):
                    con.execute(sa.text(
                        f"INSERT INTO {table} (customer_id, full_name, email, total_spent_aud, "
                        "first_purchase_date, last_purchase_date, purchase_count, batch_id, "
                        f"{last}) VALUES (:i, 'n', NULL, :m, '2024-01-01', '2024-01-01', 1, 1, "
                        "'2024-01-01 00:00:00')"), {"i": i, "m": stored})
    finally:
        engine.dispose()
    assert serving.upgrade_schema(s)[2] == "0002"
    expected = {i: Decimal(a) for i, a in enumerate(MIGRATED_AMOUNTS, start=1)}
    with serving.connect(s) as db:
        assert {r["customer_id"]: r["total_spent_aud"] for r in db.summary()} == expected
        assert [r["customer_id"] for r in db.top(8)] == sorted(
            expected, key=lambda i: (-expected[i], i))
        with db.engine.connect() as con:
            staged = con.execute(sa.select(
                db.tables.exact(db.tables.staging, "total_spent_aud"),
                db.tables.staging.c.customer_id)).all()
            assert {cid: m for m, cid in staged} == expected
            raw = con.exec_driver_sql(
                "SELECT customer_id, total_spent_aud FROM customer_purchase_summary "
                "ORDER BY total_spent_aud DESC, customer_id").all()
            assert index_is_descending(con)
    # Raw, every backend returns the AUD amount: exact below 10^13 AUD (15 digits) where SQLite
    # holds a double, and in numeric order.
    for cid, value in raw:
        if abs(expected[cid]) < 10**13:
            assert Decimal(repr(value) if sqlite else value) == expected[cid]
    assert [cid for cid, _ in raw] == sorted(expected, key=lambda i: (-expected[i], i))


def test_concurrent_first_use_migrates_once(settings: Settings, db_url: str) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def first_use() -> None:
        try:
            barrier.wait()
            with serving.connect(s) as db:
                db.top()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert serving.schema_status(s)["revision"] == migrations.head_revision()


# --- the summary, to the cent --------------------------------------------------------------------


def test_pipeline_summary_equals_the_decimal_oracle(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    run_days(s, tmp_path / "incoming")
    got = summary(s)
    expected = oracle(s)
    assert got == expected
    for row in got:
        assert isinstance(row["total_spent_aud"], Decimal)
        assert row["total_spent_aud"].as_tuple().exponent == -2
    assert ledger_ids(s) == [1, 2, 3]
    with serving.connect(s) as db:
        assert db.staged_rows() == 0
        top = db.top(5)
    by_total = sorted(expected, key=lambda r: (-r["total_spent_aud"], r["customer_id"]))[:5]
    assert [r["customer_id"] for r in top] == [r["customer_id"] for r in by_total]


@pytest.mark.postgres
@pytest.mark.mysql
def test_identical_summary_on_every_backend(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> None:
    """The same files give the same table, every column to the cent, on all three."""
    tables = {}
    for kind in ("sqlite", "postgresql", "mysql"):
        with throwaway_database(request, kind, tmp_path) as url:
            s = settings.model_copy(update={"home": tmp_path / kind, "database_url": url})
            run_days(s, tmp_path / "incoming", rows=1200, seed=5)
            tables[kind] = summary(s)
            if kind == "sqlite":
                expected = oracle(s)
    assert tables["sqlite"] == expected
    assert tables["postgresql"] == tables["sqlite"]
    assert tables["mysql"] == tables["sqlite"]


# --- exactly once --------------------------------------------------------------------------------


def test_applying_a_batch_twice_changes_nothing(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    run_days(s, tmp_path / "incoming")
    before = summary_rows(db_url)
    lake = Lake(s.lake_uri)
    with serving.connect(s) as db:
        for commit in commit_log.load_commits(lake):
            assert db.load_staging(lake, commit) == commit.customers_changed
            assert db.apply_batch(commit) == 0
            assert db.apply_batch(commit) == 0
        assert db.staged_rows() == 0
    assert summary_rows(db_url) == before  # updated_at included: not even touched
    assert ledger_ids(s) == [1, 2, 3]
    # And a whole pipeline run with nothing new is a no-op as well.
    assert run_pipeline(s).counts()["customers_upserted"] == 0
    assert summary_rows(db_url) == before


def test_an_older_batch_never_overwrites_a_newer_one(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    check_batches_out_of_order(settings.model_copy(update={"database_url": db_url}), tmp_path)


@pytest.mark.mysql
def test_mysql8_row_alias_upsert_keeps_the_guarantees(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No MySQL 8 server here, but MariaDB runs the derived-table alias form MySQL 8 gets."""
    monkeypatch.setattr(MySQLDialect, "row_alias", lambda self, dialect: True)
    seen: list[str] = []

    def capture(conn, cursor, statement, *args) -> None:
        if conn.dialect.name == "mysql":  # not the SQLite the lake is first built with
            seen.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", capture)
    try:
        with throwaway_database(request, "mysql", tmp_path) as url:
            check_batches_out_of_order(settings.model_copy(update={"database_url": url}),
                                       tmp_path)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", capture)
    upserts = [q for q in seen if q.startswith("INSERT INTO customer_purchase_summary (")]
    assert upserts and all(") AS new ON DUPLICATE KEY UPDATE" in q for q in upserts)
    assert not any("VALUES(" in q for q in upserts)


def check_batches_out_of_order(s: Settings, tmp_path: Path) -> None:
    """Newest batch first, then the older ones: the older never overwrite the newer."""
    commits = lake_with_commits(s, tmp_path / "incoming")
    lake = Lake(s.lake_uri)
    newest, older = commits[-1], commits[-2]
    newest_rows, older_rows = gold_rows(lake, newest), gold_rows(lake, older)
    both = set(newest_rows) & set(older_rows)
    assert both, "the batches share no customer: the test would prove nothing"
    with serving.connect(s) as db:
        assert apply(db, lake, newest) == len(newest_rows)
        assert apply(db, lake, older) == len(older_rows)
        current = {r["customer_id"]: r for r in db.summary()}
        for cid in both:
            want = newest_rows[cid]
            assert current[cid]["total_spent_aud"] == want["total_spent_aud"]
            assert current[cid]["purchase_count"] == want["purchase_count"]
            assert current[cid]["last_purchase_date"] == want["last_purchase_date"]
        for cid in set(older_rows) - set(newest_rows):
            assert current[cid]["purchase_count"] == older_rows[cid]["purchase_count"]
        for commit in reversed(commits[:-2]):
            apply(db, lake, commit)
        assert db.summary() == oracle(s)
        assert [r["batch_id"] for r in db.ledger()] == [c.batch_id for c in commits]
    stored = {r[0]: r for r in summary_rows(s.database_url)}
    batch_col = list(summary_table_of(s.database_url).c.keys()).index("batch_id")
    assert all(stored[cid][batch_col] == newest.batch_id for cid in newest_rows)


# --- connection lost mid-upsert ------------------------------------------------------------------


def session_id(dbapi_connection: Any) -> int:
    if hasattr(dbapi_connection, "info") and hasattr(dbapi_connection.info, "backend_pid"):
        return dbapi_connection.info.backend_pid  # psycopg 3
    return dbapi_connection.thread_id()  # PyMySQL


def kill_session(admin: sa.Engine, sid: int) -> None:
    """Kill a session from another connection, and wait until the server has ended it."""
    with admin.connect() as con:
        if con.dialect.name == "postgresql":
            con.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": sid})
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = :sid"
        else:
            con.exec_driver_sql(f"KILL CONNECTION {int(sid)}")
            alive = "SELECT count(*) FROM information_schema.processlist WHERE id = :sid"
        for _ in range(200):
            if not con.execute(sa.text(alive), {"sid": sid}).scalar():
                return
            threading.Event().wait(0.05)
    raise AssertionError(f"session {sid} survived being killed")


@contextmanager
def killer(db: serving.ServingDatabase, admin: sa.Engine, snapshot: list) -> Iterator[list]:
    """Kill the session the first time it has run the summary upsert, transaction still open.

    Before killing, records what another session sees of the summary: the pre-batch table.
    """
    killed: list[int] = []

    def after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        if killed or not statement.startswith("INSERT INTO customer_purchase_summary ("):
            return
        snapshot.extend(summary_rows(admin.url.render_as_string(hide_password=False)))
        sid = session_id(conn.connection.dbapi_connection)
        kill_session(admin, sid)
        killed.append(sid)

    sa.event.listen(db.engine, "after_cursor_execute", after_execute)
    try:
        yield killed
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", after_execute)


def test_connection_killed_mid_upsert_rolls_back_and_rerun_completes(
    settings: Settings, server_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"database_url": server_db_url})
    commits = lake_with_commits(s, tmp_path / "incoming")
    lake = Lake(s.lake_uri)
    admin = admin_engine(server_db_url)
    monkeypatch.setattr(serving.database, "RETRY_ATTEMPTS", 1)  # see the failure, then re-run
    try:
        with serving.connect(s) as db:
            apply(db, lake, commits[0])
            before = summary_rows(server_db_url)
            db.load_staging(lake, commits[1])
            seen_inside: list = []
            with killer(db, admin, seen_inside) as killed, pytest.raises(TransientError):
                db.apply_batch(commits[1])
            assert killed
            assert seen_inside == before  # uncommitted upsert invisible to others
            assert summary_rows(server_db_url) == before  # ... and rolled back
            assert [r["batch_id"] for r in db.ledger()] == [commits[0].batch_id]
            # The re-run: staging survived the rollback, the batch applies exactly once.
            assert db.apply_batch(commits[1]) == commits[1].customers_changed
            for commit in commits[2:]:
                apply(db, lake, commit)
            assert db.summary() == oracle(s)
            assert [r["batch_id"] for r in db.ledger()] == [c.batch_id for c in commits]
            assert db.staged_rows() == 0
    finally:
        admin.dispose()


def test_connection_killed_mid_upsert_is_retried_inside_serving(
    settings: Settings, server_db_url: str, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"database_url": server_db_url})
    commits = lake_with_commits(s, tmp_path / "incoming")
    lake = Lake(s.lake_uri)
    admin = admin_engine(server_db_url)
    try:
        with serving.connect(s) as db:
            apply(db, lake, commits[0])
            db.load_staging(lake, commits[1])
            with killer(db, admin, []) as killed:
                assert db.apply_batch(commits[1]) == commits[1].customers_changed
            assert killed
            for commit in commits[2:]:
                apply(db, lake, commit)
            assert db.summary() == oracle(s)
            assert [r["batch_id"] for r in db.ledger()] == [c.batch_id for c in commits]
    finally:
        admin.dispose()


def cli(home: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    environ |= {"PURCHASES_HOME": str(home), "PURCHASES_DATABASE_URL": url, **env}
    return forked_cli.run(list(args), environ, timeout=300)


def test_process_killed_inside_the_upsert_transaction_then_rerun(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    files = generate(tmp_path / "incoming", rows=1500, days=2, seed=3, bad_ratio=0.02)
    lake = Lake(s.lake_uri)
    bronze.land(lake, [files[0].path], files[0].ingestion_date)
    assert cli(s.home, db_url, "run").returncode == 0
    before = summary_rows(db_url)
    bronze.land(lake, [files[1].path], files[1].ingestion_date)
    died = cli(s.home, db_url, "run", PURCHASES_FAULT="inside_upsert")
    assert died.returncode == 137, died.stderr
    assert summary_rows(db_url) == before
    assert ledger_ids(s) == [1]
    rerun = cli(s.home, db_url, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert summary(s) == oracle(s)
    assert ledger_ids(s) == [1, 2]


# --- the CLI on each backend ---------------------------------------------------------------------


def test_every_cli_command_works_on_the_backend(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    import json

    s = settings.model_copy(update={"database_url": db_url})
    files = generate(tmp_path / "incoming", rows=800, days=2, seed=9, bad_ratio=0.02)
    home = s.home

    def ok(*args: str) -> str:
        done = cli(home, db_url, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "to revision 0002" in ok("db", "upgrade")
    for f in files:
        ok("ingest", str(f.path), "--date", str(f.ingestion_date))
        assert "succeeded" in ok("run")
    top = json.loads(ok("top", "-n", "5", "-f", "json"))
    expected = sorted(oracle(s), key=lambda r: (-r["total_spent_aud"], r["customer_id"]))[:5]
    assert [(r["customer_id"], r["total_spent_aud"]) for r in top] == [
        (r["customer_id"], format(r["total_spent_aud"], "f")) for r in expected]
    runs = json.loads(ok("runs", "-f", "json"))
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    ok("runs", "show", runs[-1]["run_id"])
    status = json.loads(ok("db", "current", "-f", "json"))[0]
    assert status["up_to_date"] is True and status["batches_applied"] == 2
    assert ok("rejects", "--limit", "5")
    assert ok("query", "SELECT count(*) AS n FROM gold")


def test_db_upgrade_says_where_it_went_and_refuses_what_it_cannot_do(
    settings: Settings, db_url: str
) -> None:
    """`db upgrade --sql` printed the DDL for an empty database whatever the database held;
    a revision it does not know (zzz, -1, or a newer release's 0099 in the database) was an
    "unexpected CommandError"."""
    s = settings.model_copy(update={"database_url": db_url})

    def db(*args: str, code: int = 0) -> str:
        done = cli(s.home, db_url, "db", "upgrade", *args, COLUMNS="200")
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
        return done.stdout if code == 0 else done.stderr

    first = db("--revision", "0001")
    assert first.endswith(" to revision 0001\n") and "schema upgraded from a" in first, first
    ddl = db("--sql")
    assert "Running upgrade 0001 -> 0002" in ddl and "Running upgrade  -> 0001" not in ddl
    assert "Running upgrade  -> 0001" in db("--sql", "--from", "base")
    assert db("--sql", "--revision", "0001") == (
        "-- the database is at revision 0001: nothing to apply for 0001\n")
    assert db().endswith("schema upgraded from revision 0001 to revision 0002\n")
    assert db().endswith("schema at revision 0002; nothing to apply\n")
    assert db("--revision", "0001").endswith(
        "schema at revision 0002, past 0001 already (upgrade never goes back); nothing to "
        "apply\n")
    for bad in ("zzz", "-1", "base"):
        said = db("--revision", bad, code=2)
        assert f"Invalid value for '--revision': '{bad}' is not a revision this version of " \
               "purchases ships: give head or one of 0001, 0002" in said, said
    assert "'--from': goes with --sql" in db("--from", "0001", code=2)
    engine = serving.create_db_engine(s)
    try:
        with engine.begin() as con:
            con.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099'")
    finally:
        engine.dispose()
    for args in ((), ("--sql",)):
        said = db(*args, code=1)
        assert "has schema revision 0099, newer than this version of purchases knows (head " \
               "0002): upgrade purchases" in said and len(said.strip().splitlines()) == 1, said


# --- bulk load: values that trip up text formats ------------------------------------------------

AWKWARD_NAMES = [
    None, "", "NULL", "null", "\\N", 'Quote "Q" O\'Brien', "comma, separated", "back\\slash\\",
    "tab\there", "new\nline", "crlf\r\nend", " padded ", "Zoë Ñúñez", "李小龍", "emoji 🎉 ok",
    "semi;colon", "percent %s %(x)s", "x" * 255,
]


def write_gold(lake: Lake, batch_id: int, rows: list[dict[str, Any]]) -> Commit:
    """A gold file holding exactly `rows`, published as batch `batch_id`."""
    import pyarrow as pa

    schema = pa.schema([
        ("customer_id", pa.int64()), ("full_name", pa.string()), ("email", pa.string()),
        ("total_spent_aud", pa.decimal128(18, 2)), ("first_purchase_date", pa.date32()),
        ("last_purchase_date", pa.date32()), ("purchase_count", pa.int64()),
        ("batch_id", pa.int64()),
    ])
    rel = f"{Lake.gold_dir(date(2024, 1, 15))}/batch-{batch_id:012d}-data_0.parquet"
    lake.makedirs(rel.rsplit("/", 1)[0])
    table = pa.Table.from_pylist([{**r, "batch_id": batch_id} for r in rows], schema=schema)
    pq.write_table(table, lake.full(rel))
    return Commit(batch_id=batch_id, run_id=f"test-{batch_id}", ingestion_date="2024-01-15",
                  files=[], moves=[(rel, rel)], customers_changed=len(rows))


def awkward_rows() -> list[dict[str, Any]]:
    amounts = ["0.00", "0.01", "-0.01", "9999999999999999.99", "-9999999999999999.99",
               "1234567.89", "100.10"]
    return [{
        "customer_id": 2**63 - 1 if i == 1 else i + 1,
        "full_name": name,
        "email": None if i % 4 == 0 else f"user{i}@example.com",
        "total_spent_aud": Decimal(amounts[i % len(amounts)]),
        "first_purchase_date": date(1970, 1, 1) if i % 2 else date(2024, 2, 29),
        "last_purchase_date": date(9999, 12, 31) if i % 5 == 0 else date(2024, 3, 1),
        "purchase_count": i + 1,
    } for i, name in enumerate(AWKWARD_NAMES)]


def load_paths(url: str) -> list[bool]:
    """Values of MySQLDialect.load_data_local worth testing: MySQL has two load paths (LOAD
    DATA LOCAL, and multi-row INSERT for servers that forbid it); the others one."""
    return [True, False] if url.startswith("mysql") else [True]


def test_bulk_load_round_trips_awkward_values_exactly(
    settings: Settings, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    lake = Lake(str(tmp_path / "lake"))
    rows = awkward_rows()
    for batch_id, load_data_local in enumerate(load_paths(db_url), start=1):
        monkeypatch.setattr(MySQLDialect, "load_data_local", load_data_local)
        commit = write_gold(lake, batch_id, rows)
        with serving.connect(s) as db:
            assert db.load_staging(lake, commit) == len(rows)
            assert db.apply_batch(commit) == len(rows)
            got = db.summary()
        assert got == sorted(rows, key=lambda r: r["customer_id"]), load_data_local


def test_a_value_the_column_cannot_hold_fails_the_load_loudly(
    settings: Settings, server_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never truncated in silence (LOAD DATA LOCAL would only warn): the load fails."""
    from purchases.errors import PermanentError

    s = settings.model_copy(update={"database_url": server_db_url})
    lake = Lake(str(tmp_path / "lake"))
    commit = write_gold(lake, 1, [{**awkward_rows()[1], "full_name": "y" * 256}])
    for load_data_local in load_paths(server_db_url):
        monkeypatch.setattr(MySQLDialect, "load_data_local", load_data_local)
        with serving.connect(s) as db:
            with pytest.raises(PermanentError, match="full_name|too long"):
                db.load_staging(lake, commit)
            assert db.staged_rows() == 0


def customers(ids: range, batch_id: int) -> list[dict[str, Any]]:
    """Gold rows for customers `ids`, their values depending on the batch."""
    return [{
        "customer_id": i, "full_name": f"Customer {i} b{batch_id}", "email": None,
        "total_spent_aud": Decimal(i * 100 + batch_id).scaleb(-2),
        "first_purchase_date": date(2024, 1, 1), "last_purchase_date": date(2024, 1, batch_id),
        "purchase_count": batch_id,
    } for i in ids]


KILL_INSIDE_UPSERT = """
import json, sys
from purchases import serving
from purchases.commit_log import Commit
from purchases.config import load_settings
from purchases.storage import Lake

url, lake, commit = sys.argv[1], Lake(sys.argv[2]), Commit(**json.loads(sys.argv[3]))
settings = load_settings(home=sys.argv[4]).model_copy(update={"database_url": url})
with serving.connect(settings) as db:
    db.apply_batch(commit)
"""


def test_an_upsert_of_most_of_the_table_keeps_its_index_even_when_killed_inside(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    """Where the dialect rebuilds the summary's index for a large upsert (SQLite: from half the
    table on), it does so inside the upsert's transaction: the index is there afterwards, and
    after a kill inside the transaction too (rolled back with it); a small batch keeps it."""
    import json

    s = settings.model_copy(update={"database_url": db_url})
    lake = Lake(str(tmp_path / "lake"))
    first = write_gold(lake, 1, customers(range(1, 41), 1))
    most = write_gold(lake, 2, customers(range(1, 31), 2))  # 75% of the table
    few = write_gold(lake, 3, customers(range(1, 6), 3))  # 12.5%
    ddl: list[str] = []

    def capture(conn, cursor, statement, *args) -> None:
        if statement.lstrip().startswith(("DROP INDEX", "CREATE INDEX")):
            ddl.append(statement.split()[0])

    with serving.connect(s) as db:
        rebuilds = db.capabilities.index_rebuild_percent is not None
        sa.event.listen(db.engine, "before_cursor_execute", capture)
        assert apply(db, lake, first) == 40
        assert ddl == (["DROP", "CREATE"] if rebuilds else [])
        db.load_staging(lake, most)
    before = summary_rows(db_url)
    died = subprocess.run(
        [sys.executable, "-c", KILL_INSIDE_UPSERT, db_url, lake.uri,
         json.dumps({"batch_id": 2, "run_id": "test-2", "ingestion_date": "2024-01-15",
                     "files": [], "moves": most.moves, "customers_changed": 30}),
         str(s.home)],
        env={**os.environ, "PURCHASES_FAULT": "inside_upsert"}, capture_output=True, text=True,
        timeout=120)
    assert died.returncode == 137, died.stderr
    assert summary_rows(db_url) == before
    with serving.connect(s) as db:
        with db.engine.connect() as con:
            assert index_is_descending(con)
        ddl.clear()
        sa.event.listen(db.engine, "before_cursor_execute", capture)
        assert db.apply_batch(most) == 30
        assert ddl == (["DROP", "CREATE"] if rebuilds else [])
        ddl.clear()
        assert apply(db, lake, few) == 5
        assert ddl == []
        with db.engine.connect() as con:
            assert index_is_descending(con)
        newest = {r["customer_id"]: r for r in [
            *customers(range(1, 41), 1), *customers(range(1, 31), 2), *customers(range(1, 6), 3)]}
        assert db.summary() == [newest[i] for i in sorted(newest)]
        assert [r["customer_id"] for r in db.top(3)] == [40, 39, 38]
        assert [r["batch_id"] for r in db.ledger()] == [1, 2, 3] and db.staged_rows() == 0


def test_a_fraction_of_a_cent_is_refused_never_rounded(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    """Gold with a sub-cent amount (a bug upstream) fails the load where the database keeps
    cents, and stages nothing."""
    import pyarrow as pa

    from purchases.errors import PermanentError

    s = settings.model_copy(update={"database_url": db_url})
    if not keeps_cents(db_url):
        pytest.skip("DECIMAL(18,2) columns: the database itself decides (not this dialect)")
    lake = Lake(str(tmp_path / "lake"))
    rel = f"{Lake.gold_dir(date(2024, 1, 15))}/batch-{1:012d}-data_0.parquet"
    lake.makedirs(rel.rsplit("/", 1)[0])
    row = {**customers(range(1, 2), 1)[0], "total_spent_aud": Decimal("10.005"), "batch_id": 1}
    table = pa.Table.from_pylist([row], schema=pa.schema([
        ("customer_id", pa.int64()), ("full_name", pa.string()), ("email", pa.string()),
        ("total_spent_aud", pa.decimal128(18, 4)), ("first_purchase_date", pa.date32()),
        ("last_purchase_date", pa.date32()), ("purchase_count", pa.int64()),
        ("batch_id", pa.int64())]))
    pq.write_table(table, lake.full(rel))
    commit = Commit(batch_id=1, run_id="t-1", ingestion_date="2024-01-15", files=[],
                    moves=[(rel, rel)], customers_changed=1)
    with serving.connect(s) as db:
        with pytest.raises(PermanentError, match="total_spent_aud.*whole number of cents"):
            db.load_staging(lake, commit)
        assert db.staged_rows() == 0


# --- transient failures through the orchestrator -------------------------------------------------


def test_unreachable_server_is_retried_then_the_run_resumes(
    settings: Settings, server_db_url: str, tmp_path: Path
) -> None:
    from purchases.orchestrator import RunFailed

    good = settings.model_copy(update={"database_url": server_db_url})
    # Same server kind, a port nothing listens on: connection refused, a transient error.
    refused = sa.make_url(server_db_url).set(port=1, password="pw-never-shown")
    down = good.model_copy(update={"database_url": refused.render_as_string(False)})
    files = generate(tmp_path / "incoming", rows=500, days=1, seed=4, bad_ratio=0.02)
    bronze.land(Lake(good.lake_uri), [files[0].path], files[0].ingestion_date)
    waits: list[float] = []
    with pytest.raises(RunFailed) as failed:
        run_pipeline(down, sleep=waits.append)
    record = failed.value.record
    assert record.failed_step == "gold_to_staging"
    assert record.error_class == "TransientError"
    step = next(s for s in record.steps if s.step == "gold_to_staging")
    assert step.attempts > 1 and len(waits) == step.attempts - 1  # retried, with backoff
    assert waits == sorted(waits) and waits[-1] > waits[0]
    assert "pw-never-shown" not in str(failed.value) and ":***@" in str(failed.value)
    assert run_pipeline(good).status == "succeeded"
    assert summary(good) == oracle(good)


# --- a batch the database refuses ----------------------------------------------------------------


def refuse_evil_names(url: str, table: str) -> Callable[[], None]:
    """Make `table` really refuse a full_name containing 'Evil' (a constraint, or a trigger on
    SQLite, which cannot add one); returns how to lift it."""
    engine = admin_engine(url)
    with engine.connect() as con:
        if con.dialect.name == "sqlite":
            con.exec_driver_sql(
                f"CREATE TRIGGER no_evil BEFORE INSERT ON {table} WHEN instr(NEW.full_name, "
                "'Evil') > 0 BEGIN SELECT RAISE(ABORT, 'no evil names'); END")
            lift = "DROP TRIGGER no_evil"
        else:
            con.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT no_evil "
                                "CHECK (POSITION('Evil' IN full_name) = 0)")
            lift = f"ALTER TABLE {table} DROP CONSTRAINT no_evil"

    def undo() -> None:
        with engine.connect() as con:
            con.exec_driver_sql(lift)
        engine.dispose()

    return undo


@pytest.mark.parametrize("table", ["customer_purchase_summary_staging",
                                   "customer_purchase_summary"])
def test_a_refused_batch_names_its_row_and_field_and_what_waits_behind_it(
    settings: Settings, db_url: str, tmp_path: Path, table: str
) -> None:
    from conftest import HEADER, Harness
    from purchases.orchestrator import RunFailed

    s = settings.model_copy(update={"database_url": db_url})
    harness = Harness(s, tmp_path)
    harness.land("a.csv", HEADER + "1,Ann,Lee,a@x.io,1,2024-01-10,10.00,AUD\n")
    assert harness.run().status == "succeeded"
    lift = refuse_evil_names(db_url, table)
    harness.land("b.csv", HEADER + "2,Bo,Good,b@x.io,2,2024-01-11,2.00,AUD\n"
                 "3,Evil,Knievel,e@x.io,3,2024-01-11,3.00,AUD\n", day="2024-01-16")
    with pytest.raises(RunFailed):
        harness.run()
    harness.land("c.csv", HEADER + "4,Cy,Later,c@x.io,4,2024-01-12,4.00,AUD\n", day="2024-01-17")
    with pytest.raises(RunFailed) as failed:
        harness.run()
    message = str(failed.value)
    assert "\n" not in message
    step = "loading staging" if table.endswith("staging") else "upserting"
    assert f"refused batch 2 while {step}, customer_id 3, field full_name: " in message
    assert "1 later committed batch waits behind it" in message
    assert "no_evil" in message or "no evil names" in message  # the database's own reason
    assert "then `purchases run` applies the batches in order" in message
    assert ledger_ids(s) == [1]
    with serving.connect(s) as db:
        assert {r["customer_id"] for r in db.summary()} == {1}
        staged = db.staged_rows()
    assert staged == (0 if step == "loading staging" else 3)  # the diagnosis left no trace
    lift()
    assert harness.run().status == "succeeded"  # the way out: fix the database, run again
    assert ledger_ids(s) == [1, 2, 3]
    assert {cid: r["total_spent_aud"] for cid, r in harness.summary().items()} == {
        1: Decimal("10.00"), 2: Decimal("2.00"), 3: Decimal("3.00"), 4: Decimal("4.00")}


# --- a fourth dialect: one class and one registry line -------------------------------------------

LITECOPY_PLUGIN = '''
"""SQLite under another name: a dialect of its own, registered from outside the package."""
import sqlalchemy as sa

from purchases.serving import dialects

# SQLAlchemy's side: URLs litecopy:///<file> open SQLite files.
sa.dialects.registry.register("litecopy", "sqlalchemy.dialects.sqlite.pysqlite",
                              "SQLiteDialect_pysqlite")


@dialects.register
class LiteCopy(dialects.SQLiteDialect):
    """Loads staging on the generic executemany path rather than SQLite's own."""

    name = "litecopy"
    url_example = None
    bulk_load = dialects.DialectCapabilities.bulk_load
'''

LITECOPY_TEST = '''
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from purchases import serving
from purchases.commit_log import Commit
from purchases.storage import Lake


def gold(lake, batch_id, rows):
    rel = f"gold/year=2024/month=01/day=15/batch={batch_id:012d}/part-0.parquet"
    lake.makedirs(rel.rsplit("/", 1)[0])
    schema = pa.schema([
        ("customer_id", pa.int64()), ("full_name", pa.string()), ("email", pa.string()),
        ("total_spent_aud", pa.decimal128(18, 2)), ("first_purchase_date", pa.date32()),
        ("last_purchase_date", pa.date32()), ("purchase_count", pa.int64()),
        ("batch_id", pa.int64())])
    table = pa.Table.from_pylist([{**r, "batch_id": batch_id} for r in rows], schema=schema)
    pq.write_table(table, lake.full(rel))
    return Commit(batch_id=batch_id, run_id=f"t-{batch_id}", ingestion_date="2024-01-15",
                  files=[], moves=[(rel, rel)], customers_changed=len(rows))


def row(cid, name, total, count):
    return {"customer_id": cid, "full_name": name, "email": None,
            "total_spent_aud": Decimal(total), "first_purchase_date": date(2024, 1, 1),
            "last_purchase_date": date(2024, 1, count), "purchase_count": count}


def test_staging_and_upsert(settings, db_url, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    newer = gold(lake, 2, [row(1, "Ann 2", "20.05", 2), row(2, "Bo", "9999999999999999.99", 1)])
    older = gold(lake, 1, [row(1, "Ann 1", "10.00", 1), row(3, 'Cy "Q" \\\\ O\\'Neil', "0.01", 1)])
    with serving.connect(settings.model_copy(update={"database_url": db_url})) as db:
        print("DIALECT", db_url.split(":")[0], type(db.capabilities).__name__)
        for commit in (newer, older):
            assert db.load_staging(lake, commit) == commit.customers_changed
            assert db.apply_batch(commit) == commit.customers_changed
        assert db.apply_batch(older) == 0
        got = {r["customer_id"]: (r["full_name"], r["total_spent_aud"]) for r in db.summary()}
        assert db.staged_rows() == 0 and [r["batch_id"] for r in db.ledger()] == [1, 2]
    assert got == {1: ("Ann 2", Decimal("20.05")), 2: ("Bo", Decimal("9999999999999999.99")),
                   3: ('Cy "Q" \\\\ O\\'Neil', Decimal("0.01"))}
'''


def test_a_newly_registered_dialect_is_served_and_tested_through_the_registry(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """db_url takes its backends from the registry, filtered by PURCHASES_TEST_DATABASES: a
    dialect registered by a plugin gets the serving suite's fixture, and staging + upsert run
    through its class (a real SQLite file, on the generic load path)."""
    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    pytester.makepyfile(litecopy_plugin=LITECOPY_PLUGIN, test_litecopy=LITECOPY_TEST)
    monkeypatch.setenv("PURCHASES_TEST_DATABASES", "litecopy,sqlite")
    result = pytester.runpytest_subprocess("-p", "litecopy_plugin", "-v", "-s",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines_random([  # -s: the test's print follows its name
        "*test_staging_and_upsert?sqlite? DIALECT sqlite SQLiteDialect",
        "*test_staging_and_upsert?litecopy? DIALECT litecopy LiteCopy",
    ])
    assert "postgresql" not in result.stdout.str() and "mysql" not in result.stdout.str()
