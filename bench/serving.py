"""Serving-database throughput: load and upsert N changed customers on each backend.

For SQLite, PostgreSQL and MariaDB/MySQL (each in a throw-away database), prints rows/s of

* staging load: the naive path (one INSERT per row) against the bulk path the pipeline uses
  (`ServingDatabase.load_staging`: COPY on PostgreSQL, LOAD DATA LOCAL on MySQL/MariaDB,
  multi-row INSERT on SQLite), plus the alternatives considered (executemany on PostgreSQL,
  multi-row INSERT on MySQL);
* upsert into the summary: the naive path (one upsert statement per customer) against
  `apply_batch` (one set-based INSERT ... SELECT from staging), for new customers and for N
  customers that all changed;
* load + upsert of N changed customers (what the pipeline's last two steps do for a batch),
  `--repeat` times on fresh batches: each time and the median, wall clock and CPU seconds of
  this process (the CPU figure is steadier on a shared machine; the server's own CPU is not
  in it).

Figures only; nothing is asserted. Usage:

    python bench/serving.py [--rows 200000] [--backends sqlite,postgresql,mysql] [--shuffle]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
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
from purchases.serving.dialects import MySQLDialect
from purchases.storage import Lake

SERVER_URLS = {
    "postgresql": os.environ.get(
        "PURCHASES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get(
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


def write_gold(lake: Lake, batch_id: int, rows: int, seed: int, *, shuffle: bool = False) -> Commit:
    """A gold change set of `rows` customers (ids 1..rows) as the pipeline would publish it;
    in id order (as the pipeline writes it), or `shuffle`d."""
    rnd = random.Random(seed)
    first = date(2024, 1, 1)
    ids = list(range(1, rows + 1))
    if shuffle:
        rnd.shuffle(ids)
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
    saved, MySQLDialect.load_data_local = MySQLDialect.load_data_local, False
    try:
        return db.load_staging(lake, commit)
    finally:
        MySQLDialect.load_data_local = saved


def naive_upsert(db: serving.ServingDatabase, lake: Lake, commit: Commit) -> int:
    """The dialect's upsert form, one statement per customer with its values bound, in one
    transaction."""
    t = db.tables.summary
    names = [c.name for c in db.tables.written(t)]
    one_row = sa.select(*(sa.bindparam(c, type_=t.c[c].type).label(c) for c in names)).where(
        sa.true())  # SQLite: an upsert's SELECT needs a WHERE to parse
    stmt = db.capabilities.upsert(t, one_row, names, version="batch_id",
                                  dialect=db.engine.dialect)
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
    started, cpu = time.perf_counter(), time.process_time()
    n = work()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if isinstance(n, str):
        results.append((label, n, ""))
    else:
        results.append((label, f"{n:,} rows in {seconds:6.2f}s (cpu {cpu:5.2f}s)",
                        f"{n / seconds:10,.0f} rows/s"))
    print(f"    {label:<50} {results[-1][1]:<36} {results[-1][2]}", flush=True)


def bench_backend(kind: str, rows: int, naive_rows: int, repeat: int, shuffle: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="purchases-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        lake = Lake(str(tmp / "lake"))
        batches = [write_gold(lake, b, rows, seed=b, shuffle=shuffle) for b in range(1, 4)]
        again = [write_gold(lake, b, rows, seed=b, shuffle=shuffle)
                 for b in range(4, 4 + repeat)]
        small = write_gold(lake, 99, naive_rows, seed=99, shuffle=shuffle)
        with throwaway(kind, tmp) as url:
            if url is None:
                return
            settings = load_settings(home=tmp / "home").model_copy(update={"database_url": url})
            with serving.connect(settings) as db:
                dialect = db.engine.dialect
                server = ".".join(map(str, dialect.server_version_info or ()))
                flavour = "MariaDB" if getattr(dialect, "is_mariadb", False) else dialect.name
                order = "shuffled" if shuffle else "in id order"
                print(f"\n{kind} ({flavour} {server}), {rows:,} customers per batch ({order})")
                results: list[tuple[str, str, str]] = []
                timed("staging load, naive (INSERT per row)",
                      lambda: naive_load(db, lake, small), results)
                clear(db, db.tables.staging)
                if kind == "postgresql":
                    timed("staging load, executemany (no COPY)",
                          lambda: executemany_load(db, lake, batches[0]), results)
                    clear(db, db.tables.staging)
                if kind == "mysql":
                    timed("staging load, bulk multi-row INSERT",
                          lambda: bulk_load_without_load_data(db, lake, batches[0]), results)
                    clear(db, db.tables.staging)
                path = {"postgresql": "COPY", "mysql": "LOAD DATA LOCAL"}.get(kind, "INSERT")
                timed(f"staging load, bulk ({path}, load_staging)",
                      lambda: db.load_staging(lake, batches[0]), results)
                timed("upsert, bulk, new customers (apply_batch)",
                      lambda: db.apply_batch(batches[0]), results)
                db.load_staging(lake, batches[1])
                timed("upsert, bulk, changed customers (apply_batch)",
                      lambda: db.apply_batch(batches[1]), results)
                timed("upsert, naive (statement per customer), changed",
                      lambda: naive_upsert(db, lake, small), results)
                walls, cpus = [], []
                for commit in again:
                    started, cpu = time.perf_counter(), time.process_time()
                    timed("load + upsert, bulk, changed customers",
                          lambda commit=commit: load_and_apply(db, lake, commit), results)
                    walls.append(time.perf_counter() - started)
                    cpus.append(time.process_time() - cpu)
                label = f"load + upsert, changed: median of {repeat}"
                print(f"    {label:<50} {statistics.median(walls):6.2f}s "
                      f"(cpu {statistics.median(cpus):5.2f}s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="customers per batch")
    parser.add_argument("--naive-rows", type=int, default=None,
                        help="rows for the naive paths (default: --rows)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="load + upsert runs of changed customers (the median is printed)")
    parser.add_argument("--shuffle", action="store_true",
                        help="gold rows in random customer order (as gold written before it "
                             "was ordered by customer_id)")
    parser.add_argument("--backends", default="sqlite,postgresql,mysql",
                        help="serving dialects (mariadb: the mysql one)")
    args = parser.parse_args()
    if args.rows < 1 or args.repeat < 1 or (args.naive_rows or 1) < 1:
        parser.error("--rows, --naive-rows and --repeat must be at least 1")
    for kind in args.backends.split(","):
        kind = {"mariadb": "mysql"}.get(kind.strip(), kind.strip())
        if kind not in ("sqlite", *SERVER_URLS):
            parser.error(f"--backends: {kind!r} is not one of sqlite, postgresql, mysql")
        bench_backend(kind, args.rows, args.naive_rows or args.rows, args.repeat, args.shuffle)


if __name__ == "__main__":
    main()
