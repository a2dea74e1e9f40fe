"""The local orchestrator: retries per the declared policy, failures recorded and resumed,
one writer at a time (also across processes, also after a holder is SIGKILLed), run history."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lakecheck import assert_clean_lake, cli_env, end_state, purchases

from purchases import bronze, commit_log, history, serving, steps
from purchases.config import Settings, load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.errors import PermanentError, TransientError
from purchases.generate import generate
from purchases.orchestrator import RunBusy, RunFailed, run_pipeline, writer_lock
from purchases.pipeline import task
from purchases.storage import Lake

PURCHASES = str(Path(sys.executable).with_name("purchases"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three days of generated input landed in a fresh home, and the end state of that home
    after one run that never failed."""
    root = tmp_path_factory.mktemp("orchestration")
    files = generate(root / "input", rows=600, days=3, bad_ratio=0.03)
    landed = root / "landed"
    lake = Lake(load_settings(home=landed).lake_uri)
    for f in files:
        bronze.land(lake, [f.path], f.ingestion_date)
    reference = root / "reference"
    shutil.copytree(landed, reference)
    run_pipeline(load_settings(home=reference))
    return {"landed": landed, "reference": reference, "reference_state": end_state(reference)}


@pytest.fixture
def home(inputs: dict[str, Any], tmp_path: Path, settings: Settings) -> Path:
    """A copy of the landed home (settings fixture: PURCHASES_* cleared)."""
    target = tmp_path / "home"
    shutil.copytree(inputs["landed"], target)
    return target


def flaky(step: str, failures: int, error: Exception) -> Callable[..., steps.StepResult]:
    """The real step, failing with `error` the first `failures` times (-1: always)."""
    real = steps.STEP_FUNCTIONS[step]
    calls = {"n": 0}

    def run(ctx: steps.RunContext) -> steps.StepResult:
        calls["n"] += 1
        if failures < 0 or calls["n"] <= failures:
            raise error
        return real(ctx)

    return run


# --- retries -------------------------------------------------------------------------------------


def test_transient_failure_twice_then_success_is_retried_per_policy(
    home: Path, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(steps.STEP_FUNCTIONS, "silver_to_gold",
                        flaky("silver_to_gold", 2, TransientError("S3 throttled")))
    waits: list[float] = []
    record = run_pipeline(load_settings(home=home), sleep=waits.append)
    policy = task("silver_to_gold").retry
    assert record.status == "succeeded"
    s2g = record.steps[1]
    assert s2g.step == "silver_to_gold" and s2g.attempts == 3 and s2g.status == "succeeded"
    assert waits == [policy.interval_seconds, policy.interval_seconds * policy.backoff_rate]
    assert [s.attempts for s in record.steps] == [1, 3, 1, 1]
    assert end_state(home) == inputs["reference_state"]
    assert_clean_lake(home)


def test_a_retried_step_redoes_its_work_cleanly(
    home: Path, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails after writing part of its output is retried from a clean start."""
    real = steps.STEP_FUNCTIONS["bronze_to_silver"]
    calls = {"n": 0}

    def half_then_fail(ctx: steps.RunContext) -> steps.StepResult:
        calls["n"] += 1
        result = real(ctx)
        if calls["n"] == 1:
            raise TransientError("connection reset after writing")
        return result

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "bronze_to_silver", half_then_fail)
    real_publish = commit_log.publish

    def publish_then_fail(lake: Lake, commit: commit_log.Commit) -> None:
        real_publish(lake, commit)
        if calls.setdefault("published", 0) == 0:
            calls["published"] = 1
            raise ConnectionResetError("lost the connection after the commit point")

    monkeypatch.setattr(commit_log, "publish", publish_then_fail)
    record = run_pipeline(load_settings(home=home), sleep=lambda _: None)
    assert [s.attempts for s in record.steps] == [2, 2, 1, 1]
    assert end_state(home) == inputs["reference_state"]
    assert_clean_lake(home)


def test_retries_exhausted_fail_the_run_and_the_next_run_resumes(
    home: Path, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(steps.STEP_FUNCTIONS, "gold_to_staging",
                        flaky("gold_to_staging", -1, TransientError("database is locked")))
    waits: list[float] = []
    settings = load_settings(home=home)
    with pytest.raises(RunFailed) as failed:
        run_pipeline(settings, sleep=waits.append)
    record = failed.value.record
    policy = task("gold_to_staging").retry
    assert record.status == "failed" and record.failed_step == "gold_to_staging"
    assert record.error_class == "TransientError" and "database is locked" in record.error
    assert [s.status for s in record.steps] == ["succeeded", "succeeded", "failed", "skipped"]
    assert record.steps[2].attempts == policy.max_attempts + 1
    assert waits == [policy.delay(n) for n in range(1, policy.max_attempts + 1)]
    assert history.load(Lake(settings.lake_uri), record.run_id) == record

    monkeypatch.undo()
    resumed = run_pipeline(settings)
    assert resumed.status == "succeeded" and resumed.files == []  # the lake part was done
    assert resumed.counts()["customers_upserted"] > 0
    assert end_state(home) == inputs["reference_state"]


def test_permanent_error_is_not_retried(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(steps.STEP_FUNCTIONS, "upsert",
                        flaky("upsert", -1, PermanentError("column missing")))
    waits: list[float] = []
    with pytest.raises(RunFailed, match="failed in step upsert: PermanentError: column missing"):
        run_pipeline(load_settings(home=home), sleep=waits.append)
    assert waits == []


def test_unexpected_exception_is_recorded_too(home: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setitem(steps.STEP_FUNCTIONS, "silver_to_gold",
                        flaky("silver_to_gold", -1, KeyError("batch_id")))
    with pytest.raises(RunFailed) as failed:
        run_pipeline(load_settings(home=home), sleep=lambda _: None)
    assert failed.value.record.error_class == "KeyError"
    assert failed.value.record.steps[1].attempts == 1


def test_failure_while_repairing_is_recorded(home: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    def broken(lake: Lake, commits: list[commit_log.Commit], *_: object) -> list[str]:
        raise PermissionError("lake is read-only")

    monkeypatch.setattr(commit_log, "recover", broken)
    settings = load_settings(home=home)
    with pytest.raises(RunFailed, match="failed in step recover: PermissionError"):
        run_pipeline(settings)
    monkeypatch.undo()
    assert run_pipeline(settings).status == "succeeded"
    assert [r.status for r in history.load_all(Lake(settings.lake_uri))] == [
        "failed", "succeeded"]


def test_permanent_failure_through_the_cli(home: Path, inputs: dict[str, Any],
                                           tmp_path: Path) -> None:
    failed = purchases(home, "run", PURCHASES_FX_RATES=str(tmp_path / "missing-rates.csv"))
    assert failed.returncode == 1
    assert "failed in step bronze_to_silver: InputError: FX table" in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout

    runs = json.loads(purchases(home, "runs", "--format", "json").stdout)
    assert [(r["status"], r["failed_step"]) for r in runs] == [("failed", "bronze_to_silver")]
    run_id = runs[0]["run_id"]
    shown = purchases(home, "runs", "show", run_id)
    assert shown.returncode == 0
    assert "status=failed" in shown.stdout
    assert "failed step: bronze_to_silver InputError: FX table" in shown.stdout
    detail = json.loads(purchases(home, "runs", "show", run_id, "--format", "json").stdout)
    assert [s["status"] for s in detail["steps"]] == ["failed", "skipped", "skipped", "skipped"]
    assert detail["steps"][0]["error_class"] == "InputError"

    fixed = purchases(home, "run")
    assert fixed.returncode == 0, fixed.stderr
    assert end_state(home) == inputs["reference_state"]


# --- run history ---------------------------------------------------------------------------------


def test_runs_show_has_steps_files_counts_and_customers(home: Path) -> None:
    assert purchases(home, "run").returncode == 0
    (run,) = json.loads(purchases(home, "runs", "--format", "json").stdout)
    assert run["status"] == "succeeded" and run["files"] == 3 and run["accepted"] > 0
    detail = json.loads(purchases(home, "runs", "show", run["run_id"], "--format",
                                  "json").stdout)
    assert [s["step"] for s in detail["steps"]] == [
        "bronze_to_silver", "silver_to_gold", "gold_to_staging", "upsert"]
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 and s["seconds"] >= 0
               for s in detail["steps"])
    b2s = detail["steps"][0]["counts"]
    assert b2s["rows_in"] == b2s["accepted"] + b2s["rejected"] + b2s["duplicates"] == 1800
    assert sum(b2s["rejected_by_reason"].values()) == b2s["rejected"]
    assert detail["steps"][1]["counts"]["customers_changed"] > 0
    assert len(detail["files"]) == 3
    assert detail["steps"][0]["parameters"].keys() == {"year", "month", "day", "s3_path"}

    text = purchases(home, "runs", "show", run["run_id"]).stdout
    for expected in ("bronze_to_silver", "upsert", "attempts", "purchases_2024-01-16_1.csv",
                     "customers changed:", f"accepted={b2s['accepted']}",
                     f"duplicates={b2s['duplicates']}", "missing_customer_id="):
        assert expected in text
    assert purchases(home, "runs", "show", "no-such-run").returncode == 1


# --- one writer ----------------------------------------------------------------------------------

HOLDER = """
import sys, time
from purchases.config import load_settings
from purchases.orchestrator import writer_lock
with writer_lock(load_settings()):
    print("held", flush=True)
    time.sleep(600)
"""


def test_no_wait_while_busy_exits_3_and_a_killed_holder_frees_the_lock(home: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                              env=cli_env(home))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = purchases(home, "run", "--no-wait")
        assert busy.returncode == 3, busy.stderr
        assert "in progress" in busy.stderr
        with pytest.raises(RunBusy):
            run_pipeline(load_settings(home=home), wait=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    after = purchases(home, "run", "--no-wait")
    assert after.returncode == 0, after.stderr
    assert "succeeded" in after.stdout


def test_two_runs_started_together_do_each_file_once(home: Path, inputs: dict[str, Any]
                                                     ) -> None:
    procs = [subprocess.Popen([PURCHASES, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env(home)) for _ in range(2)]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
    lake = Lake(load_settings(home=home).lake_uri)
    runs = history.load_all(lake)
    assert sorted(len(r.files) for r in runs) == [0, 3]  # one did the work, one found none
    assert all(r.status == "succeeded" for r in runs)
    commits = commit_log.load_commits(lake)
    assert len(commits) == 1 and len(commits[0].files) == 3
    assert end_state(home) == inputs["reference_state"]
    assert_clean_lake(home)


def test_runs_interleave_never(home: Path, inputs: dict[str, Any]) -> None:
    """In-process callers queue on the same lock: a run sees the lake only between runs."""
    settings = load_settings(home=home)
    with writer_lock(settings), pytest.raises(RunBusy):
        run_pipeline(settings, wait=False)
    assert run_pipeline(settings, wait=False).status == "succeeded"


# --- incremental: what a run reads does not grow with history -----------------------------

HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"


def _day(tmp: Path, settings: Settings, day: int, rows: list[str]) -> None:
    src = tmp / f"day{day}.csv"
    src.write_text(HEADER + "".join(r + "\n" for r in rows))
    bronze.land(Lake(settings.lake_uri), [src], commit_log.as_date(f"2024-01-{day:02d}"))


def test_duplicate_check_reads_only_batches_whose_id_range_matches(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[list[int]] = []
    real = steps._batches_to_check

    def spy(engine, commits):  # noqa: ANN001 - test double
        found = real(engine, commits)
        checked.append([c.batch_id for c in found])
        return found

    monkeypatch.setattr(steps, "_batches_to_check", spy)
    _day(tmp_path, settings, 10, ["1,Ann,Lee,a@x.io,100,2024-01-09,10.00,AUD",
                                  "2,Bob,Ray,b@x.io,101,2024-01-09,20.00,AUD"])
    run_pipeline(settings)
    _day(tmp_path, settings, 11, ["3,Cy,Day,c@x.io,200,2024-01-10,30.00,AUD"])
    run_pipeline(settings)
    _day(tmp_path, settings, 12, ["4,Di,Eve,d@x.io,300,2024-01-11,40.00,AUD"])
    run_pipeline(settings)
    # Day 13 re-sends purchase 101 unchanged, 100 changed, and one new purchase.
    _day(tmp_path, settings, 13, ["2,Bob,Ray,b@x.io,101,2024-01-09,20.00,AUD",
                                  "1,Ann,Lee,a@x.io,100,2024-01-09,99.00,AUD",
                                  "5,Fy,Gee,f@x.io,400,2024-01-12,50.00,AUD"])
    record = run_pipeline(settings)
    assert checked == [[], [], [], [1]]  # batch 1 only: 2 and 3 hold no id of the day
    (f,) = record.files
    assert (f["accepted"], f["duplicates"], f["rejected"]) == (1, 1,
                                                               {"conflicting_duplicate": 1})
    with serving.connect(settings) as db:
        totals = {r["customer_id"]: r["total_spent_aud"] for r in db.summary()}
    assert str(totals[1]) == "10.00"  # the earlier row stands


def test_commit_log_checkpoint(settings: Settings, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit_log, "CHECKPOINT_EVERY", 2)
    lake = Lake(settings.lake_uri)
    for day in range(1, 6):
        _day(tmp_path, settings, day, [f"{day},Ann,Lee,a@x.io,{day * 100},2024-01-01,1.00,AUD"])
        run_pipeline(settings)
    checkpoint = lake.read_json(commit_log.CHECKPOINT_PATH)
    assert checkpoint["last_batch_id"] == 4
    listed = [commit_log.Commit.from_json(d) for _, d in lake.iter_json(commit_log.COMMITS_DIR)]
    assert commit_log.load_commits(lake) == listed
    assert [c.batch_id for c in listed] == [1, 2, 3, 4, 5]
    # Only the last few full customer-state snapshots are kept; the latest is whole.
    assert lake.list_children(commit_log.CUSTOMERS_DIR) == sorted(
        f"run-{c.run_id}" for c in listed[2:])  # a folder per committing run
    state = lake_query(lake, "SELECT customer_id, purchase_count FROM customers "
                             "ORDER BY customer_id")
    assert [(r["customer_id"], r["purchase_count"]) for r in state] == [
        (d, 1) for d in range(1, 6)]
