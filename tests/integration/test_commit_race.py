"""Writers on different machines (different homes, so no shared flock) on one lake: the
commit record's conditional write lets exactly one commit a batch id, and nothing a run
writes before its commit can be overwritten or cleared by a racing run (issue 9, item 2)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from lakecheck import PURCHASES, cli_env, purchases

from conftest import HEADER, unique_name, write_file
from purchases import bronze, commit_log, history, serving
from purchases.commit_log import CommitConflict
from purchases.config import Settings, load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.orchestrator import run_pipeline
from purchases.steps import RunContext, bronze_to_silver, silver_to_gold
from purchases.storage import Lake


def _day_file(tmp: Path, name: str, first_id: int, n: int = 5) -> Path:
    rows = "".join(
        f"{i % 3 + 1},Ann,Lee,a{i}@x.io,{i},2024-01-15,{i}.25,AUD\n"
        for i in range(first_id, first_id + n)
    )
    return write_file(tmp / name, HEADER + rows)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "shared-lake")
    request.getfixturevalue("aws_env")
    import boto3

    bucket = unique_name("race")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


def _settings(tmp_path: Path, who: str, lake_uri: str) -> Settings:
    return load_settings(home=tmp_path / who, lake=lake_uri)


# --- the conditional write ---------------------------------------------------------------------


def test_exactly_one_of_many_racing_writers_creates_the_record(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    payloads = [json.dumps({"writer": i, "pad": "x" * 50_000}).encode() for i in range(8)]
    won: list[int] = []
    gate = threading.Barrier(len(payloads))

    def write(i: int) -> None:
        gate.wait()
        if lake.create_exclusive("_state/commits/000000000001.json", payloads[i]):
            won.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    # Whole, and the winner's: never a half file, never another writer's bytes.
    assert lake.read_json("_state/commits/000000000001.json")["writer"] == won[0]
    assert lake.list_children("_state/commits") == ["000000000001.json"]  # no temporaries
    assert not lake.create_exclusive("_state/commits/000000000001.json", b"{}")


def test_two_runs_planning_the_same_batch_only_one_commits_and_neither_clears_the_other(
    lake_uri: str, tmp_path: Path
) -> None:
    """Before: B's bronze_to_silver deleted A's `purchase_keys/batch-N` and both commits
    overwrote one record; now B gets CommitConflict and A's batch is whole."""
    a, b = _settings(tmp_path, "a", lake_uri), _settings(tmp_path, "b", lake_uri)
    lake = Lake(lake_uri)
    bronze.land(lake, [_day_file(tmp_path, "one.csv", 100)], date(
        2024, 1, 15))
    ctx_a, ctx_b = RunContext(a, lake, "run-a"), RunContext(b, lake, "run-b")
    bronze_to_silver(ctx_a)
    bronze_to_silver(ctx_b)  # plans the same batch 1 while A is still running
    silver_to_gold(ctx_a)
    with pytest.raises(CommitConflict, match="another run committed batch 1 first"):
        silver_to_gold(ctx_b)
    [commit] = commit_log.load_commits(lake)
    assert commit.run_id == "run-a"
    # A's in-place outputs survived B's planning; B left nothing behind.
    for p in commit.published:
        assert lake.exists(p), p
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
    assert lake.list_children(commit_log.PURCHASE_KEYS_DIR) == ["run-run-a"]
    assert lake.list_children(commit_log.CUSTOMERS_DIR) == ["run-run-a"]
    ids = lake_query(lake, "SELECT purchase_id FROM silver ORDER BY 1")
    assert [r["purchase_id"] for r in ids] == list(range(100, 105))


def test_recovery_leaves_a_live_run_on_another_machine_alone(
    lake_uri: str, tmp_path: Path
) -> None:
    """Before: every run's recovery deleted every uncommitted staging folder, including a
    live run's on another machine (which then committed a batch without its files)."""
    lake = Lake(lake_uri)
    day = date(2024, 1, 15)
    bronze.land(lake, [_day_file(tmp_path, "one.csv", 100)], day)
    a = _settings(tmp_path, "a", lake_uri)
    live = RunContext(a, lake, "live-elsewhere")
    history.save(lake, history.RunRecord("live-elsewhere", "glue", _now(), status="running"))
    bronze_to_silver(live)
    staged = lake.list_files(live.staging)
    # Another home runs meanwhile: a new file lands and is processed there.
    bronze.land(lake, [_day_file(tmp_path, "two.csv", 200)], day)
    record = run_pipeline(_settings(tmp_path, "b", lake_uri))
    assert record.recovered.get("discarded_runs") is None
    assert lake.list_files(live.staging) == staged
    # The live run then loses its race cleanly, and plans again: each file once.
    with pytest.raises(CommitConflict):
        silver_to_gold(live)
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
    again = RunContext(a, lake, "live-elsewhere-2")
    bronze_to_silver(again)
    assert silver_to_gold(again).counts["batch_id"] is None  # B processed both files
    files = [f.path.rsplit("/", 1)[-1] for c in commit_log.load_commits(lake) for f in c.files]
    assert sorted(files) == ["one.csv", "two.csv"]
    assert len(lake_query(lake, "SELECT * FROM silver")) == 10


def _now() -> str:
    from purchases.step_runner import now

    return now()


def test_local_run_that_loses_the_race_plans_again_on_the_new_log(
    lake_uri: str, tmp_path: Path
) -> None:
    """A run whose batch id another home commits in the middle of it processes its files as
    the next batch (before: failed with 'planned on a lake another run has changed')."""
    lake = Lake(lake_uri)
    day = date(2024, 1, 15)
    bronze.land(lake, [_day_file(tmp_path, "one.csv", 100)], day)
    other = _settings(tmp_path, "b", lake_uri)
    raced = []

    def on_step(task, step) -> None:
        if task.name == "bronze_to_silver" and step.status == "succeeded" and not raced:
            raced.append(1)
            bronze.land(lake, [_day_file(tmp_path, "two.csv", 200)], day)
            run_pipeline(other)  # commits batch 1 (both files) from another home

    bronze.land(lake, [_day_file(tmp_path, "three.csv", 300)], day)
    record = run_pipeline(_settings(tmp_path, "a", lake_uri), on_step=on_step)
    assert record.status == "succeeded"
    assert record.recovered["lost_commit_races"] == [1]
    commits = commit_log.load_commits(lake)
    assert [c.batch_id for c in commits] == [1]  # the re-plan found nothing left to do
    files = sorted(f.path.rsplit("/", 1)[-1] for c in commits for f in c.files)
    assert files == ["one.csv", "three.csv", "two.csv"]
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
    assert lake.list_children("_state/running") == []


# --- acceptance 2: racing `purchases run` processes with separate homes on one S3 lake -----------


@pytest.fixture
def shared_db(postgres_database: str) -> str:
    """One serving database for every racing run: served totals are then comparable."""
    return postgres_database


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("point", ["after_bronze_to_silver", "after_state_write"])
def test_racing_runs_with_separate_homes_on_one_s3_lake(
    aws_env: str, shared_db: str, tmp_path: Path, point: str, delay: float
) -> None:
    import boto3

    bucket = unique_name("race")
    boto3.client("s3").create_bucket(Bucket=bucket)
    lake_uri = f"s3://{bucket}/lake"
    env = {"PURCHASES_LAKE": lake_uri, "PURCHASES_DATABASE_URL": shared_db}
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    day = "2024-01-15"
    assert purchases(home_a, "ingest", str(_day_file(tmp_path, "one.csv", 100)), "--date",
                     day, **env).returncode == 0
    # A pauses inside its run; meanwhile a new file lands (resending purchase 104) and B runs.
    a = subprocess.Popen([PURCHASES, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home_a, PURCHASES_FAULT_DELAY=f"{point}:3",
                                                **env))
    time.sleep(delay)
    assert purchases(home_b, "ingest", str(_day_file(tmp_path, "two.csv", 104)), "--date",
                     day, **env).returncode == 0
    b = purchases(home_b, "run", **env)
    out_a, err_a = a.communicate(timeout=300)
    assert a.returncode == 0, out_a + err_a
    assert b.returncode == 0, b.stdout + b.stderr
    # Whatever the interleaving: every file committed once, every purchase once.
    settings = load_settings(home=home_a, lake=lake_uri, database_url=shared_db)
    lake = Lake(lake_uri)
    commits = commit_log.load_commits(lake)
    files = [f.path.rsplit("/", 1)[-1] for c in commits for f in c.files]
    assert sorted(files) == ["one.csv", "two.csv"]
    silver = lake_query(lake, "SELECT purchase_id, amount_aud FROM silver")
    ids = [r["purchase_id"] for r in silver]
    assert sorted(ids) == list(range(100, 109))
    with serving.connect(settings) as db:
        served = sum((Decimal(r["total_spent_aud"]) for r in db.summary()), Decimal("0"))
    assert served == sum((Decimal(r["amount_aud"]) for r in silver), Decimal("0"))
    assert served == sum(Decimal(f"{i}.25") for i in range(100, 109))
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []


# --- acceptance 8: the S3 endpoint going away mid-run ---------------------------------------------


class Outage:
    """A TCP relay in front of moto's server that the test can take down (connections
    refused, open ones cut) and bring back on the same port, moto's state intact."""

    def __init__(self, target: str) -> None:
        import socket

        host, port = target.rsplit("//", 1)[-1].split(":")
        self.target = (host, int(port))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: list = []
        self.up()

    def up(self) -> None:
        import socket

        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        import socket

        self._listener.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._open.clear()

    def _accept(self, listener) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (src, dst):
                with contextlib.suppress(OSError):
                    end.close()


@pytest.mark.s3
@pytest.mark.slow
def test_s3_endpoint_going_away_mid_run_fails_transiently_publishes_nothing_and_reruns_exactly(
    aws_env: str, tmp_path: Path
) -> None:
    import boto3

    outage = Outage(aws_env)
    bucket = unique_name("outage").replace("_", "-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    lake_uri = f"s3://{bucket}/lake"
    env = {"PURCHASES_LAKE": lake_uri, "AWS_ENDPOINT_URL": outage.url,
           "AWS_MAX_ATTEMPTS": "2"}
    home = tmp_path / "home"
    assert purchases(home, "ingest", str(_day_file(tmp_path, "one.csv", 100)), "--date",
                     "2024-01-15", **env).returncode == 0
    run = subprocess.Popen([PURCHASES, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=cli_env(home, PURCHASES_FAULT_DELAY=(
                               "after_bronze_to_silver:4"), **env))
    lake = Lake(lake_uri)
    deadline = time.monotonic() + 120
    while not any(p.endswith("/plan.json") for p in lake.list_files("_runs")):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    outage.down()  # the endpoint goes away while the run pauses after bronze_to_silver
    try:
        out, err = run.communicate(timeout=240)
    finally:
        outage.up()
    assert run.returncode == 1, out + err
    lake = Lake(lake_uri)
    # One clear line naming the endpoint; the lake cannot take the failure record while it is
    # unreachable, so the next run records this run as interrupted.
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot reach {outage.url}" in err, err
    lake = Lake(lake_uri)
    assert commit_log.load_commits(lake) == []  # nothing published
    assert lake.list_files("silver") == [] and lake.list_files("gold") == []
    rerun = purchases(home, "run", **env)
    assert rerun.returncode == 0, rerun.stderr
    [commit] = commit_log.load_commits(lake)
    assert [f.path.rsplit("/", 1)[-1] for f in commit.files] == ["one.csv"]
    ids = [r["purchase_id"] for r in lake_query(lake, "SELECT purchase_id FROM silver")]
    assert sorted(ids) == list(range(100, 105))
    records = history.load_all(lake)
    assert [r.status for r in records] == ["interrupted", "succeeded"] or [
        r.status for r in records] == ["failed", "succeeded"], records
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
