"""Serving-database throughput: load and upsert N changed customers on each backend.

For SQLite, PostgreSQL and MariaDB/MySQL (each in a throw-away database), prints rows/s of

* staging load: the naive path (one INSERT per row) against the bulk path the pipeline uses
  (`ServingDatabase.load_staging`: COPY on PostgreSQL, LOAD DATA LOCAL on MySQL/MariaDB,
  multi-row INSERT on SQLite), plus the alternatives considered (executemany on PostgreSQL,
  multi-row INSERT on MySQL);
* upsert into the summary: the naive path (one INSERT ... ON CONFLICT / ON DUPLICATE KEY
  per row) against `apply_batch` (one set-based INSERT ... SELECT from staging), for new
  customers and for N customers that all changed.

Figures only; nothing is asserted. Usage:

    python bench/serving.py [--rows 200000] [--backends sqlite,postgresql,mariadb]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from purchases import serving
from purchases.commit_log import Commit
from purchases.config import load_settings
from purchases.storage import Lake

SERVER_URLS = {
    "postgresql": os.environ.get(
        "PURCHASES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get(
        "PURCHASES_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}

GOLD_SCHEMA = pa.schema([
    ("customer_id", pa.int64()),
    ("full_name", pa.string()),
    ("email", pa.string()),
    ("total_spent_aud", pa.decimal128(18, 2)),
    ("first_purchase_date", pa.date32()),
    ("last_purchase_date", pa.date32()),
    ("purchase_count", pa.int64()),
    ("batch_id", pa.int64()),
])


# --- data --------------------------------------------------------------------------------------


def write_gold(lake: Lake, batch_id: int, rows: int, seed: int) -> Commit:
    """A gold change set of `rows` customers (ids 1..rows) as the pipeline would publish it."""
    rnd = random.Random(seed)
    first = date(2024, 1, 1)
    ids = list(range(1, rows + 1))
    totals = [Decimal(rnd.randrange(100, 10_000_000)).scaleb(-2) for _ in ids]
    starts = [first + timedelta(days=rnd.randrange(0, 300)) for _ in ids]
    table = pa.table({
        "customer_id": ids,
        "full_name": [f"Customer Nümber {i} van der Berg" for i in ids],
        "email": [f"customer.{i}.b{batch_id}@example.com" for i in ids],
        "total_spent_aud": pa.array(totals, pa.decimal128(18, 2)),
        "first_purchase_date": starts,
        "last_purchase_date": [d + timedelta(days=rnd.randrange(0, 60)) for d in starts],
        "purchase_count": [rnd.randrange(1, 500) for _ in ids],
        "batch_id": [batch_id] * rows,
    }, schema=GOLD_SCHEMA)
    rel = f"{Lake.gold_dir(first)}/batch-{batch_id:012d}-data_0.parquet"
    lake.makedirs(rel.rsplit("/", 1)[0])
    pq.write_table(table, lake.full(rel), row_group_size=50_000)
    return Commit(batch_id=batch_id, run_id=f"bench-{batch_id}", ingestion_date=str(first),
                  files=[], moves=[(rel, rel)], customers_changed=rows)


def staging_dicts(
    db: serving.ServingDatabase, lake: Lake, commit: Commit
) -> Iterator[dict[str, Any]]:
    """Gold rows keyed by the staging columns of db's dialect (SQLite: cents, not AUD)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    columns = db.tables.written(db.tables.staging)
    for _, rel in commit.moves:
        for batch in pq.ParquetFile(lake.full(rel)).iter_batches(batch_size=10_000):
            for r in batch.to_pylist():
                r["load_date"] = now
                yield {c.name: r[db.tables.source(c)] for c in columns}


# --- databases ---------------------------------------------------------------------------------


@contextmanager
def throwaway(kind: str, home: Path) -> Iterator[str | None]:
    """URL of an empty database of `kind` (None when its server is not reachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{home / 'bench.db'}"
        return
    admin_url = SERVER_URLS[kind]
    name = f"purchases_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        print(f"  {kind}: skipped ({str(exc.orig).splitlines()[0]})")
        admin.dispose()
        yield None
        return
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if kind == "postgresql" else ""
        with admin.connect() as con:
            con.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def clear(db: serving.ServingDatabase, *tables: sa.Table) -> None:
    with db.engine.begin() as con:
        for t in tables:
            con.execute(t.delete())


# --- the paths measured ------------------------------------------------------------------------


def naive_load(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """One INSERT statement (one round trip) per row, in one transaction."""
    n = 0
    with db.engine.begin() as con:
        for row in staging_dicts(db, lake, commit):
            con.execute(db.tables.staging.insert().values(**row))
            n += 1
    return n


def executemany_load(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """SQLAlchemy executemany in chunks (psycopg 3 pipelines it; no COPY)."""
    n = 0
    with db.engine.begin() as con:
        chunk: list[dict[str, Any]] = []
        for row in staging_dicts(db, lake, commit):
            chunk.append(row)
            if len(chunk) == 10_000:
                con.execute(db.tables.staging.insert(), chunk)
                n, chunk = n + len(chunk), []
        if chunk:
            con.execute(db.tables.staging.insert(), chunk)
            n += len(chunk)
    return n


def bulk_load_without_load_data(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """`load_staging` forced onto its multi-row INSERT path (PyMySQL executemany)."""
    saved, serving.MYSQL_LOAD_DATA_LOCAL = serving.MYSQL_LOAD_DATA_LOCAL, False
    try:
        return db.load_staging(lake, commit)
    finally:
        serving.MYSQL_LOAD_DATA_LOCAL = saved


def naive_upsert(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """One single-row INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE per customer."""
    name = db.engine.dialect.name
    t = db.tables.summary
    names = [c.name for c in db.tables.written(t)]
    cols = [c for c in names if c != "customer_id"]
    params = {c: sa.bindparam(c, type_=t.c[c].type) for c in names}
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(t).values(params)
        newer = stmt.inserted.batch_id > t.c.batch_id
        stmt = stmt.on_duplicate_key_update(
            [(c, sa.func.IF(newer, stmt.inserted[c], t.c[c])) for c in cols if c != "batch_id"]
            + [("batch_id", sa.func.IF(newer, stmt.inserted.batch_id, t.c.batch_id))]
        )
    else:
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(t).values(params)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.customer_id], set_={c: stmt.excluded[c] for c in cols},
            where=stmt.excluded.batch_id > t.c.batch_id,
        )
    n = 0
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.engine.begin() as con:
        for row in staging_dicts(db, lake, commit):
            row.pop("load_date")
            con.execute(stmt, {**row, "updated_at": now})
            n += 1
    return n


def load_and_apply(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """What the pipeline's last two steps do for one batch."""
    db.load_staging(lake, commit)
    return db.apply_batch(commit)


# --- driver ------------------------------------------------------------------------------------


def timed(label: str, work: Callable[[], int | str], results: list[tuple[str, str, str]]) -> None:
    started = time.perf_counter()
    n = work()
    seconds = time.perf_counter() - started
    if isinstance(n, str):
        results.append((label, n, ""))
    else:
        results.append((label, f"{n:,} rows in {seconds:6.2f}s", f"{n / seconds:12,.0f} rows/s"))
    print(f"    {label:<44} {results[-1][1]:<26} {results[-1][2]}", flush=True)


def bench_backend(kind: str, rows: int, naive_rows: int) -> None:
    with tempfile.TemporaryDirectory(prefix="purchases-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        lake = Lake(str(tmp / "lake"))
        batches = [write_gold(lake, b, rows, seed=b) for b in (1, 2, 3, 4)]
        small = write_gold(lake, 5, naive_rows, seed=5) if naive_rows < rows else batches[3]
        with throwaway(kind, tmp) as url:
            if url is None:
                return
            settings = load_settings(home=tmp / "home").model_copy(update={"database_url": url})
            with serving.connect(settings) as db:
                dialect = db.engine.dialect
                server = ".".join(map(str, dialect.server_version_info or ()))
                flavour = "MariaDB" if getattr(dialect, "is_mariadb", False) else dialect.name
                print(f"\n{kind} ({flavour} {server}), {rows:,} customers per batch")
                results: list[tuple[str, str, str]] = []
                timed("staging load, naive (INSERT per row)",
                      lambda: naive_load(db, lake, small), results)
                clear(db, db.tables.staging)
                if kind == "postgresql":
                    timed("staging load, executemany (no COPY)",
                          lambda: executemany_load(db, lake, batches[0]), results)
                    clear(db, db.tables.staging)
                if kind == "mariadb":
                    timed("staging load, bulk multi-row INSERT",
                          lambda: bulk_load_without_load_data(db, lake, batches[0]), results)
                    clear(db, db.tables.staging)
                path = {"postgresql": "COPY", "mariadb": "LOAD DATA LOCAL"}.get(kind, "INSERT")
                timed(f"staging load, bulk ({path}, load_staging)",
                      lambda: db.load_staging(lake, batches[0]), results)
                timed("upsert, bulk, new customers (apply_batch)",
                      lambda: db.apply_batch(batches[0]), results)
                db.load_staging(lake, batches[1])
                timed("upsert, bulk, changed customers (apply_batch)",
                      lambda: db.apply_batch(batches[1]), results)
                timed("load + upsert, bulk, changed customers",
                      lambda: load_and_apply(db, lake, batches[2]), results)
                timed("upsert, naive (statement per row), changed",
                      lambda: naive_upsert(db, lake, small), results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="customers per batch")
    parser.add_argument("--naive-rows", type=int, default=None,
                        help="rows for the naive paths (default: --rows)")
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    args = parser.parse_args()
    for kind in args.backends.split(","):
        bench_backend(kind.strip(), args.rows, args.naive_rows or args.rows)


if __name__ == "__main__":
    main()
