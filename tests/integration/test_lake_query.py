"""`purchases query` / `rejects`: views of what the commit log publishes, read-only, robust to
bronze files that cannot be read (issue 8, defects 4 and 7). Real DuckDB over a real lake."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from lakecheck import purchases

from conftest import HEADER, Harness
from purchases import commit_log, faults
from purchases.config import load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.errors import InputError
from purchases.storage import Lake

GOOD = HEADER + (
    "1,Ann,Lee,ann@x.io,100,2024-01-10,16.00,AUD\n"
    "2,Bo,Li,bo@x.io,101,2024-01-10,-1,AUD\n"
)
_ROWS = "".join(f"{i},C{i * 7919:x},W{i * 104729:x},c{i}@x.io,{5000 + i},2024-01-10,1.00,AUD\n"
                for i in range(1, 20_001))
TRUNCATED_GZ = gzip.compress((HEADER + _ROWS).encode(), mtime=0)[:150_000]  # cut mid-stream


def _q(lake: Lake, sql: str, params: list | None = None) -> list[dict]:
    return lake_query(lake, sql, params)


def _files(lake: Lake) -> dict[str, dict]:
    rows = _q(lake, "SELECT * FROM bronze_files ORDER BY path")
    return {r["path"].rsplit("/", 1)[-1]: r for r in rows}


def test_a_rejected_unreadable_file_breaks_no_view(harness: Harness) -> None:
    """Defect 4: a truncated .csv.gz rejected whole by `run` used to make every query fail."""
    harness.land("a.csv", GOOD)
    harness.land("t.csv.gz", TRUNCATED_GZ)
    harness.run()
    lake = harness.lake

    assert _q(lake, "SELECT purchase_id, amount_aud FROM silver") == [
        {"purchase_id": 100, "amount_aud": Decimal("16.00")}
    ]
    assert [r["purchase_id"] for r in _q(lake, "SELECT purchase_id FROM quarantine")] == ["101"]
    assert [r["customer_id"] for r in _q(lake, "SELECT customer_id FROM gold")] == [1]
    assert [r["customer_id"] for r in _q(lake, "SELECT customer_id FROM customers")] == [1]
    bronze = _q(lake, "SELECT source_file, ingestion_date, purchase_id, amount FROM bronze "
                      "ORDER BY purchase_id")
    assert [(r["source_file"], r["purchase_id"], r["amount"]) for r in bronze] == [
        ("bronze/year=2024/month=01/day=15/a.csv", "100", "16.00"),
        ("bronze/year=2024/month=01/day=15/a.csv", "101", "-1"),
    ]
    files = _files(lake)
    assert files["a.csv"]["status"] == "processed" and files["a.csv"]["in_bronze_view"]
    t = files["t.csv.gz"]
    (outcome,) = [f for c in commit_log.load_commits(lake) for f in c.files if f.path == t["path"]]
    assert outcome.file_rejection  # rejected whole by the run
    assert (t["status"], t["file_rejection"], t["detail"], t["in_bronze_view"], t["batch_id"]) == (
        "rejected", outcome.file_rejection, outcome.detail, False, 1)


def test_pending_files_are_in_bronze_unless_unreadable(harness: Harness) -> None:
    harness.land("a.csv", GOOD)
    harness.run()
    # Landed after the run: pending. One is readable, one is cut short.
    harness.land("b.csv", HEADER.upper().replace(",", " , ")
                 + "4,Di,Ng,di@x.io,103,2024-01-11,2.50,EUR\n", day="2024-01-16")
    harness.land("t.csv.gz", TRUNCATED_GZ, day="2024-01-16")
    lake = harness.lake

    files = _files(lake)
    assert (files["b.csv"]["status"], files["b.csv"]["in_bronze_view"]) == ("pending", True)
    t = files["t.csv.gz"]
    assert (t["status"], t["in_bronze_view"], t["batch_id"]) == ("pending", False, None)
    assert t["read_error"].startswith(("unreadable: ", "not_utf8: "))
    rows = _q(lake, "SELECT purchase_id, currency, ingestion_date::VARCHAR AS d FROM bronze "
                    "WHERE source_file LIKE '%b.csv'")
    # Parsed as the pipeline parses it: header names matched case-insensitively, trimmed.
    assert rows == [{"purchase_id": "103", "currency": "EUR", "d": "2024-01-16"}]


def test_a_file_unreadable_at_query_time_is_skipped_and_shown(harness: Harness, caplog) -> None:
    """A processed file damaged in place (same size and stamp): the query still answers."""
    body = "".join(f"{i},N{i:07x}q,L{i * 7919:09x},e{i:x}@x.io,{1000 + i},2024-01-10,1.00,AUD\n"
                   for i in range(1, 15_001))
    harness.land("a.csv", GOOD)
    harness.land("big.csv.gz", HEADER + body)
    harness.run()
    lake = harness.lake
    big = "bronze/year=2024/month=01/day=15/big.csv.gz"
    path = Path(lake.full(big))
    assert _q(lake, "SELECT COUNT(*) AS n FROM bronze") == [{"n": 15_002}]
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # header intact, body gone
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    with caplog.at_level(logging.WARNING):
        rows = _q(lake, "SELECT purchase_id, (SELECT in_bronze_view FROM bronze_files "
                        "WHERE path = ?) AS big_read, (SELECT read_error FROM bronze_files "
                        "WHERE path = ?) AS why FROM bronze ORDER BY purchase_id",
                  [big, big])
    assert [(r["purchase_id"], r["big_read"]) for r in rows] == [("100", False), ("101", False)]
    assert rows[0]["why"].startswith("cannot read it now:") and "GZIP" in rows[0]["why"]
    assert f"bronze view leaves out {big}: cannot read it now" in caplog.text
    # The commit log still says the run processed it; only this read failed.
    assert _files(lake)["big.csv.gz"]["status"] == "processed"


def test_a_file_with_a_3_mb_line_breaks_no_view(harness: Harness) -> None:
    harness.land("a.csv", GOOD)
    harness.land("long.csv", HEADER + "5,Ed," + "x" * 3_000_000 + ",ed@x.io,104,2024-01-10,1,AUD\n"
                 + "6,Fi,Oh,fi@x.io,105,2024-01-10,3.00,AUD\n")
    harness.run()
    lake = harness.lake
    silver = {r["purchase_id"] for r in _q(lake, "SELECT purchase_id FROM silver")}
    assert 100 in silver
    assert _q(lake, "SELECT COUNT(*) AS n FROM quarantine WHERE purchase_id = '101'") == [{"n": 1}]
    # Whatever the run decided about the long record, bronze answers, without that record.
    bronze = {r["purchase_id"] for r in _q(lake, "SELECT purchase_id FROM bronze")}
    assert {"100", "101"} <= bronze and "104" not in bronze


def test_a_query_writes_nothing_to_the_lake(harness: Harness) -> None:
    harness.land("a.csv", GOOD)
    harness.run()
    # Pending, with a record over the bound: a run would write a copy without it; a query not.
    harness.land("long.csv", HEADER + "5,Ed," + "x" * 3_000_000 + ",ed@x.io,104,2024-01-10,1,AUD\n"
                 + "6,Fi,Oh,fi@x.io,105,2024-01-10,3.00,AUD\n", day="2024-01-16")
    lake = harness.lake
    before = lake.list_files("")
    rows = _q(lake, "SELECT purchase_id FROM bronze WHERE source_file LIKE '%long.csv'")
    assert rows == [{"purchase_id": "105"}]
    assert _files(lake)["long.csv"]["status"] == "pending"
    assert lake.list_files("") == before


def test_views_read_only_what_the_commit_log_publishes(harness: Harness) -> None:
    harness.land("a.csv", GOOD)
    harness.run()
    lake = harness.lake
    commits = commit_log.load_commits(lake)
    # A file left in a layer folder by a run that never committed (or half moved) is not read.
    for layer in ("silver", "quarantine", "gold"):
        published = Path(lake.full(commit_log.published_files(commits, layer)[0]))
        shutil.copy(published, published.with_name("batch-000000000009-stray.parquet"))
    assert _q(lake, "SELECT COUNT(*) AS n FROM silver") == [{"n": 1}]
    assert _q(lake, "SELECT COUNT(*) AS n FROM quarantine") == [{"n": 1}]
    assert _q(lake, "SELECT COUNT(*) AS n FROM gold") == [{"n": 1}]
    # A published file a later commit supersedes (as `purchases reprocess` does) is not read.
    record = commit_log.commit_path(commits[-1].batch_id)
    data = lake.read_json(record)
    data["superseded"] = commit_log.published_files(commits, "quarantine")
    lake.write_json(record, data)
    assert _q(lake, "SELECT COUNT(*) AS n FROM quarantine") == [{"n": 0}]
    assert _q(lake, "SELECT COUNT(*) AS n FROM silver") == [{"n": 1}]


@pytest.mark.slow  # a killed CLI run
@pytest.mark.parametrize("fault", ["after_commit_record", "mid_publication:2"])
def test_views_of_a_batch_whose_publication_was_killed(harness: Harness, fault: str) -> None:
    """Committed but not (all) moved into place yet: the views read the outputs where they
    are, the same rows as once the next run has finished the publication."""
    harness.land("a.csv", GOOD)
    killed = purchases(harness.settings.home, "run", PURCHASES_FAULT=fault)
    assert killed.returncode == faults.KILLED_EXIT_CODE, killed.stderr
    lake = harness.lake
    assert lake.list_children(commit_log.RUNS_STAGING_DIR)  # the publication is unfinished
    sql = ("SELECT (SELECT list(purchase_id) FROM silver) AS s, (SELECT list(purchase_id) "
           "FROM quarantine) AS q, (SELECT list((customer_id, year, month, day)) FROM gold) AS g")
    during = _q(lake, sql)
    harness.run()  # finishes the publication first
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
    assert during == _q(lake, sql) == [
        {"s": [100], "q": ["101"], "g": [(1, 2024, 1, 15)]}]


def test_a_query_of_silver_does_not_touch_bronze(harness: Harness, monkeypatch) -> None:
    harness.land("a.csv", GOOD)
    harness.run()

    def untouchable(*_args, **_kwargs):
        raise AssertionError("bronze was read for a query that does not name it")

    monkeypatch.setattr(Lake, "list_bronze", untouchable)
    monkeypatch.setattr("purchases.bronze.inspect", untouchable)
    monkeypatch.setattr("purchases.bronze.read_layout", untouchable)
    assert _q(harness.lake, "SELECT COUNT(*) AS n FROM silver s JOIN gold g USING (customer_id)"
                            " WHERE s.ingestion_date = ?", ["2024-01-15"]) == [{"n": 1}]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One lake, run once, for the tests that only read it."""
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith("PURCHASES_")]:
            env.delenv(key)
        root = tmp_path_factory.mktemp("ran")
        harness = Harness(load_settings(home=root / "home"), root)
        harness.land("a.csv", GOOD)
        harness.run()
        yield harness


def test_read_only_statements_work(ran: Harness) -> None:
    lake = ran.lake
    assert _q(lake, "WITH s AS (SELECT * FROM silver) SELECT COUNT(*) AS n FROM s") == [{"n": 1}]
    assert _q(lake, "VALUES (1)") == [{"col0": 1}]
    assert {r["column_name"] for r in _q(lake, "DESCRIBE silver")} >= {"amount_aud"}
    assert {r["name"] for r in _q(lake, "SHOW TABLES")} == {
        "bronze", "bronze_files", "customers", "gold", "quarantine", "silver"}
    assert _q(lake, "EXPLAIN SELECT * FROM gold")
    assert _q(lake, "EXPLAIN ANALYZE SELECT * FROM gold")
    assert _q(lake, "EXPLAIN (ANALYZE, FORMAT json) (SELECT * FROM gold)")
    assert _q(lake, "EXPLAIN (FORMAT json) SELECT * FROM silver")
    assert _q(lake, "SUMMARIZE quarantine")
    assert _q(lake, "FROM silver SELECT purchase_id;;") == [{"purchase_id": 100}]
    # A PIVOT without an IN list, which DuckDB runs as CREATE TYPE + SELECT (was "MULTI is
    # not allowed"), bare and inside a query.
    pivot = "PIVOT silver ON currency USING sum(amount_aud) GROUP BY customer_id"
    assert _q(lake, pivot) == [{"customer_id": 1, "AUD": Decimal("16.00")}]
    assert _q(lake, f"WITH p AS ({pivot}) SELECT count(*) AS n FROM p") == [{"n": 1}]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY (SELECT 1) TO '{out}/x.csv'", "COPY is not allowed"),
        ("COPY silver TO '{out}/x.parquet'", "COPY is not allowed"),
        ("EXPORT DATABASE '{out}/db'", "EXPORT is not allowed"),
        ("ATTACH '{out}/x.db' AS x", "ATTACH is not allowed"),
        ("INSTALL httpfs", "INSTALL/LOAD is not allowed"),
        ("LOAD httpfs", "INSTALL/LOAD is not allowed"),
        ("SET enable_external_access = true", "SET/RESET/USE is not allowed"),
        ("PRAGMA version", "PRAGMA is not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE is not allowed"),
        ("CREATE TABLE t AS PIVOT silver ON currency USING count(*)", "CREATE is not allowed"),
        ("CREATE OR REPLACE VIEW silver AS SELECT 1", "CREATE is not allowed"),
        ("INSERT INTO bronze_files SELECT * FROM bronze_files", "INSERT is not allowed"),
        ("CALL pragma_version()", "CALL/CHECKPOINT is not allowed"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/x.csv'", "EXPLAIN of a statement"),
        ("EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1) TO '{out}/x.csv'", "EXPLAIN of a"),
        ("EXPLAIN (ANALYZE) CREATE TABLE t AS SELECT 1", "EXPLAIN of a statement"),
        ("SELECT 1; COPY (SELECT 1) TO '{out}/x.csv'", "one SQL statement at a time, got 2"),
        ("", "no SQL given"),
        ("  \n\t", "no SQL given"),
        (" ; ;", "no SQL given"),
        ("-- just a comment", "no SQL given"),
        ("SELECT * FROM read_text('{out}/secret.txt')", "reads only the lake's views"),
        ("SELECT * FROM read_text('/etc/passwd')", "reads only the lake's views"),
        ("SELECT * FROM read_csv('{out}/secret.txt')", "reads only the lake's views"),
        ("SELECT * FROM '{out}/secret.txt'", "SQL error: Catalog Error"),  # no file scan
        ("SELECT * FROM glob('{out}/*')", "reads only the lake's views"),
        # The lake's own files other than the views' (the commit log, run history): refused too.
        ("SELECT * FROM read_text('{lake}/_state/commits/*.json')", "reads only the lake's views"),
        ("SELECT * FROM read_text('{tmp}/*')", "reads only the lake's views"),
        ("SELEC 1", "SQL error: Parser Error"),
        ("SELECT * FROM nowhere", "SQL error: Catalog Error"),
    ],
)
def test_query_is_read_only_over_the_views(ran: Harness, tmp_path: Path, sql: str,
                                           message: str) -> None:
    """Defect 7: `query` read /etc/shadow and wrote files with COPY."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.txt").write_text("s3cr3t\n")
    sql = sql.format(out=out, lake=ran.lake.root, tmp=os.path.dirname(out))
    with pytest.raises(InputError) as caught:
        _q(ran.lake, sql)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "s3cr3t" not in text
    assert sorted(p.name for p in out.iterdir()) == ["secret.txt"]


@pytest.mark.slow  # two CLI subprocesses
def test_cli_query_and_rejects_after_a_bad_file(harness: Harness, tmp_path: Path) -> None:
    harness.land("a.csv", GOOD)
    harness.land("t.csv.gz", TRUNCATED_GZ)
    harness.run()
    purchases = str(Path(sys.executable).with_name("purchases"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["PURCHASES_HOME"] = str(harness.settings.home)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([purchases, *args], capture_output=True, text=True, env=env,
                              timeout=120)

    rejects = cli("rejects", "--format", "csv")
    assert rejects.returncode == 0, rejects.stderr
    assert "negative_amount" in rejects.stdout
    proc = cli("query", "SELECT * FROM read_text('/etc/passwd')")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("Error:") and "reads only the lake's views" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "root:" not in proc.stdout


@pytest.mark.s3
@pytest.mark.slow
def test_views_on_an_s3_lake_with_external_access_off(settings, tmp_path: Path,
                                                      monkeypatch) -> None:
    """The lake's fsspec file system is registered before access is locked: views still read."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("lake-bucket")
        fs.pipe("lake-bucket/elsewhere/secret.txt", b"s3cr3t")
        harness = Harness(settings.model_copy(update={"lake": "s3://lake-bucket/lake"}),
                          tmp_path)
        harness.land("a.csv", GOOD)
        harness.land("t.csv.gz", TRUNCATED_GZ)
        harness.run()
        lake = harness.lake
        assert not lake.is_local
        assert _q(lake, "SELECT purchase_id FROM silver") == [{"purchase_id": 100}]
        assert [r["year"] for r in _q(lake, "SELECT year FROM gold")] == [2024]
        assert [r["purchase_id"] for r in _q(lake, "SELECT purchase_id FROM bronze "
                                                   "ORDER BY 1")] == ["100", "101"]
        assert {r["status"] for r in _q(lake, "SELECT status FROM bronze_files")} == {
            "processed", "rejected"}
        with pytest.raises(InputError, match="reads only the lake's views"):
            _q(lake, "SELECT * FROM read_text('s3://lake-bucket/elsewhere/secret.txt')")
        with pytest.raises(InputError, match="COPY is not allowed"):
            _q(lake, "COPY (SELECT 1) TO 's3://lake-bucket/elsewhere/x.csv'")
    finally:
        server.stop()


def test_a_large_result_is_streamed_and_a_table_says_what_it_left_out(harness: Harness) -> None:
    """`query` held the whole result as Python dicts (3M rows: 7.5 GB) and drew all of it
    as a table (456 s); it ignored PURCHASES_MEMORY_LIMIT."""
    harness.land("a.csv", GOOD)
    harness.run()
    home = harness.settings.home
    sql = "SELECT i AS n, CAST(i * 0.01 AS DECIMAL(12,2)) AS aud FROM range(2500) AS t(i)"
    table = purchases(home, "query", sql)
    assert table.returncode == 0, table.stderr
    assert "│ 999 │" in table.stdout and "│ 1000 │" not in table.stdout
    assert table.stdout.rstrip().endswith(
        "... and 1,500 more row(s) not shown: the table stops at 1,000; add a LIMIT, or give "
        "--format csv or json for all")
    csv_out = purchases(home, "query", sql, "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "n,aud" and len(csv_out) == 2501 and csv_out[-1] == "2499,24.99"
    rows = json.loads(purchases(home, "query", sql, "--format", "json").stdout)
    assert len(rows) == 2500 and rows[-1] == {"n": 2499, "aud": "24.99"}
    assert sum(Decimal(r["aud"]) for r in rows) == Decimal("31237.50")
    # Column names even for no rows; duplicate names kept in CSV.
    assert purchases(home, "query", "SELECT 1 AS a, 2 AS a WHERE false", "--format", "csv"
                     ).stdout == "a,a\n"
    # An error DuckDB meets in a later batch, as it computes rows while they are fetched:
    # it escaped as "unexpected ConversionException".
    late = ("SELECT CAST(CASE WHEN i = 200000 THEN 'x' ELSE '1' END AS INT) AS v "
            "FROM range(300000) AS t(i)")
    for fmt in ("table", "csv"):
        failed = purchases(home, "query", late, "--format", fmt)
        assert failed.returncode == 1 and failed.stderr == (
            "Error: SQL error: Conversion Error: Could not convert string 'x' to INT32\n"), fmt
    # DuckDB's limit comes from PURCHASES_MEMORY_LIMIT (less what the process holds).
    limit = purchases(home, "query", "SELECT current_setting('memory_limit') AS m", "--format",
                      "json", PURCHASES_MEMORY_LIMIT="300MiB")
    [shown] = json.loads(limit.stdout)
    assert shown["m"].endswith("MiB") and 150 <= float(shown["m"].split()[0]) <= 300, shown


def test_a_reader_that_stops_early_ends_the_query_quietly_with_0(harness: Harness) -> None:
    """`query ... | head`: click exited 1 once the result was written as it was read."""
    harness.land("a.csv", GOOD)
    harness.run()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["PURCHASES_HOME"] = str(harness.settings.home)
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("purchases")), "query",
         "SELECT * FROM range(2000000)", "--format", "csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == b"range\n"
    proc.stdout.close()  # as head does once it has its lines
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, b"")
