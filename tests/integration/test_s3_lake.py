"""An s3:// lake (issue 9 item 3, acceptance 1), in moto's real S3 server on 127.0.0.1.

Configured the AWS way only: the endpoint, region and credentials come from AWS_ENDPOINT_URL,
AWS_REGION / AWS_DEFAULT_REGION and the credential chain (fixture `aws_env`), never from a
product setting. The same multi-run data gives the same summary, quarantine and run history
on an s3:// lake as on a local one; every command works there; a missing bucket, missing
credentials or a wrong region is one line naming the lake and the fix.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import s3fs
from lakecheck import PURCHASES, cli_env, purchases
from test_serving import throwaway_database

from conftest import HEADER, unique_name, write_file
from purchases import bronze, history, serving
from purchases.config import Settings
from purchases.engines.duckdb_engine import DuckDBEngine
from purchases.engines.duckdb_lake import lake_query
from purchases.errors import ConfigError
from purchases.generate import generate
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake

pytestmark = pytest.mark.s3

# An FX change inside the data: USD and EUR purchases from 2024-01-16 on convert at new rates.
FX = (
    "currency,rate_to_aud,valid_from\n"
    "AUD,1.00000000,1970-01-01\nUSD,1.50000000,1970-01-01\nEUR,1.65000000,1970-01-01\n"
    "GBP,1.90000000,1970-01-01\nNZD,0.92000000,1970-01-01\nJPY,0.01020000,1970-01-01\n"
    "CAD,1.10000000,1970-01-01\nSGD,1.12000000,1970-01-01\nCHF,1.70000000,1970-01-01\n"
    "HKD,0.19500000,1970-01-01\nCNY,0.21000000,1970-01-01\nINR,0.01800000,1970-01-01\n"
    "USD,1.61000000,2024-01-16\nEUR,1.70250000,2024-01-16\n"
)
# Hand-written edge files: a row again in a later run (exact and conflicting duplicates of
# day 1), a duplicate inside one file, and two files rejected whole.
ACROSS_RUNS = "cross.csv"
REJECTED = {
    "empty.csv": "",
    "wrong_header.csv": "id,name,amount\n1,Ann,10.00\n",
    "latin1.csv": (HEADER + "5,Jos\u00e9,Ru\u00edz,j@x.io,55001,2024-01-10,1.00,AUD\n"
                   ).encode("latin-1"),
}


def s3_bucket() -> str:
    name = unique_name("lake").replace("_", "-")
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(aws_env: str) -> str:
    return s3_bucket()


def first_row(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1].split(",")


def multi_run_inputs(tmp_path: Path) -> list[tuple[date, list[Path]]]:
    """Three runs of holdout-style data: generated days (duplicates within and across days,
    every kind of bad row) plus edge files; what each run lands, in order."""
    days = generate(tmp_path / "gen", rows=900, days=3, seed=7, bad_ratio=0.05)
    day1 = first_row(days[0].path)
    again = ",".join(day1)
    conflicting = ",".join([*day1[:6], "999.99", day1[7]])
    edge = tmp_path / "edge"
    cross = write_file(edge / ACROSS_RUNS, HEADER + f"{again}\n{again}\n{conflicting}\n"
                       "77001,Zoe,Ng,zoe@x.io,770001,2024-01-16,12.34,USD\n"
                       "77001,Zoe,Ng,zoe@x.io,770001,2024-01-16,12.34,USD\n")
    rejected = [write_file(edge / name, text) for name, text in REJECTED.items()]
    return [
        (days[0].ingestion_date, [days[0].path]),
        (days[1].ingestion_date, [days[1].path, cross, *rejected]),
        (days[2].ingestion_date, [days[2].path]),
    ]


def run_all(settings: Settings, inputs: list[tuple[date, list[Path]]]) -> None:
    lake = Lake(settings.lake_uri)
    for day, paths in inputs:
        bronze.land(lake, paths, day)
        assert run_pipeline(settings).status == "succeeded"


def outcome(settings: Settings) -> dict[str, Any]:
    """What must not depend on where the lake is: ids and times left out."""
    lake = Lake(settings.lake_uri)
    with serving.connect(settings) as db:
        summary = db.summary()
    runs = [
        (r.status, r.trigger, r.counts(), [(s.step, s.status, s.attempts) for s in r.steps],
         sorted((f["path"], f["file_rejection"], f["rows_in"], f["accepted"], f["duplicates"])
                for f in r.files))
        for r in history.load_all(lake)
    ]
    return {
        "summary": summary,
        "quarantine": Counter(tuple(sorted(r.items())) for r in
                              lake_query(lake, "SELECT * FROM quarantine")),
        "silver": lake_query(lake, "SELECT purchase_id, amount_aud FROM silver ORDER BY 1"),
        "runs": runs,
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                             marks=pytest.mark.postgres)])
def test_multi_run_data_gives_the_same_results_on_s3_as_on_disk(
    request: pytest.FixtureRequest, settings: Settings, bucket: str, tmp_path: Path,
    backend: str,
) -> None:
    fx = write_file(tmp_path / "fx.csv", FX)
    inputs = multi_run_inputs(tmp_path)
    results = []
    for where, lake in (("local", str(tmp_path / "local-lake")), ("s3", f"s3://{bucket}/lake")):
        with throwaway_database(request, backend, tmp_path / where) as url:
            (tmp_path / where).mkdir(exist_ok=True)
            s = settings.model_copy(update={"lake": lake, "database_url": url, "fx_rates": fx})
            run_all(s, inputs)
            results.append(outcome(s))
    on_disk, on_s3 = results
    assert on_s3 == on_disk
    # The data did exercise what it is meant to: duplicates within and across runs, files
    # rejected whole, both FX rates, and rows of every run in the summary.
    assert {r[0] for r in on_s3["runs"]} == {"succeeded"} and len(on_s3["runs"]) == 3
    counts = [r[2] for r in on_s3["runs"]]
    assert all(c["duplicates"] > 0 for c in counts)
    assert {q["reason"] for q in lake_query(Lake(f"s3://{bucket}/lake"),
                                            "SELECT DISTINCT reason FROM quarantine")} >= {
        "conflicting_duplicate", "unknown_currency", "malformed_row"}
    rejected_whole = {f[0].rsplit("/", 1)[-1]: f[1] for f in on_s3["runs"][1][4] if f[1]}
    assert rejected_whole == {"empty.csv": "empty", "wrong_header.csv": "missing_columns",
                              "latin1.csv": "not_utf8"}
    zoe = [r for r in on_s3["summary"] if r["customer_id"] == 77001]
    assert [str(r["total_spent_aud"]) for r in zoe] == ["19.87"]  # 12.34 USD x 1.61, once


# --- every command, as a user runs it -------------------------------------------------------


class Watcher:
    """`purchases watch` in a subprocess, its output collected as it comes."""

    def __init__(self, home: Path, inbox: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [PURCHASES, "watch", str(inbox), "--settle", "0.2", "--debounce", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=cli_env(home, **env))
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stdout)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


@pytest.fixture
def watcher() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


@pytest.mark.slow
def test_every_command_works_on_an_s3_lake(
    bucket: str, tmp_path: Path, watcher: list[Watcher]
) -> None:
    home, uri = tmp_path / "home", f"s3://{bucket}/lake"
    fx = write_file(tmp_path / "fx.csv", FX)
    env = {"PURCHASES_LAKE": uri, "PURCHASES_FX_RATES": str(fx)}
    files = generate(tmp_path / "in", rows=300, days=2, seed=3, bad_ratio=0.05)
    xyz = write_file(tmp_path / "xyz" / "xyz.csv", HEADER + "".join(
        f"8800{i},Kim,Ho,kim@x.io,88000{i},2024-01-12,10.00,QQQ\n" for i in range(3)))

    def ok(*args: str, **more: str) -> str:
        done = purchases(home, *args, **env, **more)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    landed = ok("ingest", str(files[0].path), str(xyz), "--date", "2024-01-15")
    assert "2 file(s) landed" in landed
    ok("run")
    assert sorted(o.path for o in Lake(uri).list_bronze()) == sorted(
        f"bronze/year=2024/month=01/day=15/{f.name}" for f in (files[0].path, xyz))
    assert not (home / "lake").exists()  # nothing of the lake on local disk
    top = ok("top", "-n", "3", "-f", "csv").splitlines()
    assert top[0] == "customer_id,full_name,email,total_spent_aud" and len(top) == 4
    rejects = ok("rejects", "-f", "csv", "--limit", "1000000").splitlines()
    assert any(",unknown_currency," in line for line in rejects)
    runs = ok("runs", "-f", "csv").splitlines()
    assert len(runs) == 2 and ",succeeded," in runs[1]
    run_id = runs[1].split(",", 1)[0]
    assert f"run {run_id}" in ok("runs", "show", run_id)
    silver = ok("query", "SELECT COUNT(*) AS n FROM silver", "-f", "csv").splitlines()
    n_before = int(silver[1])
    # A QQQ rate appears: reprocess accepts the three rows that only lacked it.
    write_file(fx, FX + "QQQ,2.00000000,1970-01-01\n")
    ok("reprocess", "--reason", "unknown_currency")  # XYZ stays unknown
    silver = ok("query", "SELECT COUNT(*) AS n FROM silver", "-f", "csv").splitlines()
    assert int(silver[1]) == n_before + 3
    kim = ok("query", "SELECT SUM(amount_aud) AS t FROM silver WHERE customer_id >= 88000",
             "-f", "csv").splitlines()
    assert kim[1] == "60.00"

    # watch: a local inbox feeding the s3:// lake.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    w = Watcher(home, inbox, **env)
    watcher.append(w)
    (inbox / files[1].path.name).write_bytes(files[1].path.read_bytes())
    deadline = time.monotonic() + 120
    while not any(" succeeded: 1 file(s)" in line for line in w.lines):
        assert w.proc.poll() is None, "\n".join(w.lines)
        assert time.monotonic() < deadline, "\n".join(w.lines)
        time.sleep(0.2)
    assert w.stop() in (0, 130), "\n".join(w.lines)
    records = history.load_all(Lake(uri))
    assert [(r.trigger, r.status) for r in records] == [
        ("cli", "succeeded"), ("reprocess", "succeeded"), ("watch", "succeeded")]
    assert len(Lake(uri).list_bronze()) == 3


# --- configuration the AWS way, and its errors ---------------------------------------------


def test_a_missing_bucket_is_one_line_naming_the_lake_and_the_fix(
    aws_env: str, tmp_path: Path
) -> None:
    """A typo in the bucket name must not look like an empty lake, nor create a bucket."""
    missing = unique_name("no-such").replace("_", "-")
    uri = f"s3://{missing}/lake"
    csv = write_file(tmp_path / "a.csv", HEADER + "1,Ann,Lee,a@x.io,1,2024-01-10,1.00,AUD\n")
    for args in (("runs",), ("ingest", str(csv), "--date", "2024-01-15"), ("run",),
                 ("query", "SELECT * FROM silver")):
        done = purchases(tmp_path / "home", *args, PURCHASES_LAKE=uri)
        assert done.returncode == 1, (args, done.stdout)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert f"lake {uri}: bucket {missing} does not exist" in lines[0]
        assert "create it" in lines[0] and "PURCHASES_LAKE" in lines[0]
    names = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert missing not in names


def test_no_credentials_is_one_line_naming_the_lake_and_the_fix(
    bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/lake"
    done = purchases(tmp_path / "home", "runs", PURCHASES_LAKE=uri, AWS_ACCESS_KEY_ID="",
                     AWS_SECRET_ACCESS_KEY="", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no"),
                     AWS_CONFIG_FILE=str(tmp_path / "no"), AWS_EC2_METADATA_DISABLED="true")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"lake {uri}: no usable AWS credentials" in lines[0]
    assert "AWS_ACCESS_KEY_ID" in lines[0] and "AWS_PROFILE" in lines[0]


def test_a_malformed_region_is_one_line_naming_the_lake_and_the_fix(
    bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/lake"
    done = purchases(tmp_path / "home", "runs", PURCHASES_LAKE=uri,
                     AWS_REGION="not a region!")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"lake {uri}:" in lines[0] and "not a region!" in lines[0]
    assert "set AWS_REGION" in lines[0]


def test_aws_region_is_honoured_where_botocore_reads_only_aws_default_region(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    s3fs.S3FileSystem.clear_instance_cache()
    lake = Lake(f"s3://{bucket}/lake")
    assert lake.fs.s3.meta.region_name == "ap-southeast-2"
    lake.write_json("x.json", {"a": 1})
    assert lake.read_json("x.json") == {"a": 1}


def test_the_endpoint_is_the_standard_aws_setting(bucket: str, aws_env: str) -> None:
    """s3fs (aiobotocore) reads AWS_ENDPOINT_URL itself: the lake's client talks to moto."""
    lake = Lake(f"s3://{bucket}/lake")
    assert lake.fs.s3.meta.endpoint_url == aws_env
    lake.write_json("x.json", {"a": 1})
    assert boto3.client("s3").get_object(Bucket=bucket, Key="lake/x.json")["Body"].read()


def test_no_duckdb_extension_is_loaded_or_installed_for_s3(bucket: str) -> None:
    """The engine reads s3:// through the lake's fsspec file system, never httpfs."""
    lake = Lake(f"s3://{bucket}/lake")
    engine = DuckDBEngine(lake)
    try:
        engine.write_parquet("SELECT 1 AS a", lake.url("t"))
        engine.register_parquet("t", [lake.url("t/part-0.parquet")], {"a": "INTEGER"})
        assert engine.fetch("SELECT a FROM t") == [(1,)]
        settings = dict(engine.fetch(
            "SELECT name, value FROM duckdb_settings() WHERE name = 'autoinstall_known_extensions'"
        ))
        assert settings == {"autoinstall_known_extensions": "false"}
        loaded = {name for (name,) in engine.fetch(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded OR installed")}
        assert "httpfs" not in loaded and "aws" not in loaded
    finally:
        engine.close()


def test_a_lake_on_a_missing_bucket_raises_config_error(aws_env: str) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it"):
        Lake(f"s3://{unique_name('gone').replace('_', '-')}/lake")


class _OtherRegion(BaseHTTPRequestHandler):
    """Answers as S3 does for a bucket in another region that it will not redirect to."""

    def _answer(self, body: bytes = b"") -> None:
        self.send_response(301)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(b"<?xml version='1.0'?><Error><Code>PermanentRedirect</Code>"
                     b"<Message>use the bucket's region</Message></Error>")

    def log_message(self, *args: Any) -> None:
        pass


def test_a_wrong_region_is_one_line_naming_the_lake_the_region_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint that keeps answering 301 with the bucket's region (botocore's own redirect
    has been tried): the error names the bucket's region and the setting to change."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherRegion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_REGION", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(ConfigError) as caught:
            Lake("s3://far-away-bucket/lake")
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("lake s3://far-away-bucket/lake: bucket far-away-bucket is "
                                  "in eu-west-1, not the configured region us-east-1")
        assert message.endswith("set AWS_REGION (and AWS_DEFAULT_REGION) to eu-west-1")
    finally:
        server.shutdown()
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_record_replaced_while_it_is_read_gives_the_old_or_the_new_version(
    bucket: str,
) -> None:
    # Another run rewrites its run record while this run reads it (run_is_dead, recovery):
    # the read must give one whole version, never fail because the object changed under it.
    lake = Lake(f"s3://{bucket}/lake")
    rel = "_state/runs/20240115T000000Z-race.json"
    versions = [{"run_id": "race", "step": i, "pad": "x" * (i % 7) * 100} for i in range(60)]
    lake.write_json(rel, versions[0])
    stop = threading.Event()

    def rewrite() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            lake.write_json(rel, versions[i % len(versions)])

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = [lake.read_json(rel) for _ in range(150)]
    finally:
        stop.set()
        writer.join()
    assert all(record in versions for record in seen)
    assert len({record["step"] for record in seen}) > 1  # the writer did race the reads


def test_file_names_with_glob_characters_are_read_as_written_on_s3(
    settings: Settings, bucket: str, tmp_path: Path
) -> None:
    """The engine's escaped patterns go through the lake's fsspec glob on S3: each still
    names one object (tests/unit/test_bronze_files.py checks a local lake)."""
    s = settings.model_copy(update={"lake": f"s3://{bucket}/lake"})
    lake = Lake(s.lake_uri)
    names = ["sales1.csv", "sales[1].csv", "s*.csv", "s?les1.csv"]
    paths = [write_file(tmp_path / "in" / n,
                        HEADER + f"{pid},A,B,a@x.io,{pid},2024-01-10,4.00,AUD\n")
             for pid, n in enumerate(names, start=100)]
    bronze.land(lake, paths, date(2024, 1, 15))
    record = run_pipeline(s)
    assert sorted((f["path"].rsplit("/", 1)[1], f["accepted"], f["duplicates"])
                  for f in record.files) == sorted((n, 1, 0) for n in names)
    rows = lake_query(lake, "SELECT purchase_id, source_file FROM silver ORDER BY 1")
    assert [(r["purchase_id"], r["source_file"].rsplit("/", 1)[1]) for r in rows] == list(
        enumerate(names, start=100))
    [bronze_count] = lake_query(lake, "SELECT count(*) AS n FROM bronze")
    assert bronze_count["n"] == 4
    with serving.connect(s) as db:
        assert sum(r["total_spent_aud"] for r in db.summary()) == 16
