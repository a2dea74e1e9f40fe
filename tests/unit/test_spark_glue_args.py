"""The Glue job without Spark or AWS: Glue-style arguments, the step, the run date, --s3_path
as a URL in the lake or a lake-relative path; the re-plan after a lost commit race; and the
packaged Glue script with a fake `awsglue.utils` (the one allowed fake) and without awsglue.
The job runs on a local lake with `--engine duckdb`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import HEADER, Harness
from purchases import commit_log, history
from purchases.aws import glue_job
from purchases.errors import InputError
from purchases.pipeline import PIPELINE
from purchases.storage import Lake

FILE = "bronze/year=2024/month=01/day=15/x.csv"


def test_glue_style_arguments_parse_and_unknown_ones_are_ignored() -> None:
    args = glue_job.parse_args([
        "glue_job.py", "--JOB_NAME", "purchases-bronze_to_silver", "--year", "2024",
        "--month", "1", "--day", "15", "--s3_path", f"s3://b/lake/{FILE}", "--run_id", "r1",
        "--TempDir", "s3://tmp/", "--job-bookmark-option", "job-bookmark-disable",
    ])
    assert args["JOB_NAME"] == "purchases-bronze_to_silver"
    assert (args["year"], args["month"], args["day"]) == ("2024", "1", "15")
    assert args["s3_path"] == f"s3://b/lake/{FILE}" and args["run_id"] == "r1"
    assert args["step"] is None and args["lake"] is None


def test_every_declared_glue_task_is_a_step() -> None:
    assert set(glue_job.STEPS) == {*(t.name for t in PIPELINE), "all"}
    assert {t.name for t in PIPELINE} <= set(glue_job.STEPS)


@pytest.mark.parametrize(("args", "step"), [
    ({"step": "silver_to_gold"}, "silver_to_gold"),
    ({"JOB_NAME": "purchases-gold_to_staging"}, "gold_to_staging"),
    ({"JOB_NAME": "my-co-purchases-upsert"}, "upsert"),
    ({"step": "all", "JOB_NAME": "purchases-upsert"}, "all"),
])
def test_step_from_argument_or_job_name(args: dict, step: str) -> None:
    assert glue_job.resolve_step(args) == step


@pytest.mark.parametrize("args", [{}, {"step": "bronze"}, {"JOB_NAME": "purchases"}])
def test_unknown_step_is_an_input_error(args: dict) -> None:
    with pytest.raises(InputError, match="--step"):
        glue_job.resolve_step(args)


def test_run_date() -> None:
    assert glue_job.run_date({"year": "2024", "month": "1", "day": "15"}) == date(2024, 1, 15)
    assert glue_job.run_date({}) is None
    with pytest.raises(InputError):
        glue_job.run_date({"year": "2024", "month": "2", "day": "30"})
    with pytest.raises(InputError):
        glue_job.run_date({"year": "2024"})


def test_s3_path_of_a_local_lake(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    absolute = str(tmp_path / "lake" / FILE)
    assert glue_job.lake_path(lake, absolute) == FILE
    assert glue_job.lake_path(lake, "file://" + absolute) == FILE
    assert glue_job.lake_path(lake, FILE) == FILE
    assert glue_job.lake_path(lake, "bronze/2024/01/15/x.csv") == "bronze/2024/01/15/x.csv"
    with pytest.raises(InputError, match="not inside the lake"):
        glue_job.lake_path(lake, str(tmp_path / "elsewhere" / FILE))
    with pytest.raises(InputError, match="not a bronze file"):
        glue_job.lake_path(lake, "silver/x.parquet")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is None, reason="s3fs not installed")
@pytest.mark.s3
def test_s3_path_of_an_s3_lake(aws_env: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="glue-args-bucket")  # a lake checks its bucket
    lake = Lake("s3://glue-args-bucket/lake")
    assert glue_job.lake_path(lake, f"s3://glue-args-bucket/lake/{FILE}") == FILE
    assert glue_job.lake_path(lake, f"s3a://glue-args-bucket/lake/{FILE}") == FILE
    with pytest.raises(InputError, match="not inside the lake"):
        glue_job.lake_path(lake, f"s3://other/lake/{FILE}")


def test_derived_run_id_is_stable_per_execution_input() -> None:
    a = glue_job.derived_run_id(date(2024, 1, 15), FILE)
    assert a == glue_job.derived_run_id(date(2024, 1, 15), FILE)
    assert a != glue_job.derived_run_id(date(2024, 1, 15), FILE.replace("x.csv", "y.csv"))
    assert a.startswith("glue-20240115-")


def test_bad_arguments_exit_1_with_one_line(tmp_path, capsys) -> None:
    code = glue_job.main(["glue_job.py", "--step", "nope", "--lake", str(tmp_path / "lake")])
    assert code == glue_job.EXIT_FAILED
    assert "--step must be one of" in capsys.readouterr().err


def test_s3_path_must_match_the_run_date(tmp_path) -> None:
    code = glue_job.main(["glue_job.py", "--step", "bronze_to_silver", "--lake",
                          str(tmp_path / "lake"), "--year", "2024", "--month", "1",
                          "--day", "16", "--s3_path", FILE, "--home", str(tmp_path)])
    assert code == glue_job.EXIT_FAILED


def test_an_option_without_its_value_is_an_empty_one() -> None:
    """A sweep execution's empty arguments may reach the script as bare flags."""
    argv = ["glue_job.py", "--s3_path", "--lake", "/l", "--TempDir", "s3://t/", "--day"]
    assert glue_job.with_empty_values(argv) == [
        "glue_job.py", "--s3_path", "", "--lake", "/l", "--TempDir", "s3://t/", "--day", ""]
    assert glue_job.parse_args(argv)["s3_path"] == "" and glue_job.parse_args(argv)["day"] == ""


# --- the job on a real local lake (DuckDB stands in for Spark) -----------------------------------

ROWS_A = (HEADER + "1,Ann,Lee,ann@x.io,101,2024-01-10,10.00,AUD\n"
          "3,Cy,Ho,cy@x.io,102,2024-01-12,2.5,AUD\n")
ROWS_B = HEADER + "2,Bob,Ng,bob@x.io,201,2024-01-11,5.50,USD\n"


def _land(harness: Harness, name: str, text: str) -> str:
    from purchases.bronze import land

    (item,) = land(harness.lake, [harness.write(name, text)], date(2024, 1, 15))
    return item.path


def _job(harness: Harness, step: str, run_id: str, *extra: str) -> int:
    s = harness.settings
    return glue_job.main([
        "glue_job.py", "--JOB_NAME", f"purchases-{step}", "--step", step, "--run_id", run_id,
        "--year", "2024", "--month", "01", "--day", "15", "--engine", "duckdb",
        "--lake", s.lake_uri, "--home", str(s.home), "--database_url", s.db_url, *extra])


def _interleave_two_executions(harness: Harness) -> tuple[str, str]:
    """Two executions plan one batch id each: A commits it first, B's commit then loses."""
    a, b = _land(harness, "a.csv", ROWS_A), _land(harness, "b.csv", ROWS_B)
    assert _job(harness, "bronze_to_silver", "exec-a", "--s3_path", a) == 0
    assert _job(harness, "bronze_to_silver", "exec-b", "--s3_path", b) == 0
    assert _job(harness, "silver_to_gold", "exec-a") == 0
    return a, b


def test_a_lost_commit_race_plans_again_inside_the_job(harness: Harness) -> None:
    a, b = _interleave_two_executions(harness)
    assert _job(harness, "silver_to_gold", "exec-b") == glue_job.EXIT_OK

    lake = harness.lake
    assert [(c.batch_id, [f.path for f in c.files]) for c in commit_log.load_commits(lake)] == [
        (1, [a]), (2, [b])]
    record = history.load(lake, "exec-b")
    assert record.recovered == {"lost_commit_races": [1]}
    assert [(s.step, s.status, s.attempts) for s in record.steps[:2]] == [
        ("bronze_to_silver", "succeeded", 2), ("silver_to_gold", "succeeded", 2)]
    assert record.status == "running" and record.failed_step is None
    for run_id in ("exec-a", "exec-b"):
        assert _job(harness, "gold_to_staging", run_id) == 0
        assert _job(harness, "upsert", run_id) == 0
    assert [(r["purchase_id"], r["amount_aud"]) for r in harness.silver()] == [
        (101, Decimal("10.00")), (102, Decimal("2.50")), (201, Decimal("8.25"))]
    assert {k: v["total_spent_aud"] for k, v in harness.summary().items()} == {
        1: Decimal("10.00"), 2: Decimal("8.25"), 3: Decimal("2.50")}


def test_the_replan_bound_exhausted_exits_3_then_the_retried_job_plans_first(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from purchases import orchestrator

    monkeypatch.setattr(orchestrator, "MAX_REPLANS", 0)
    a, b = _interleave_two_executions(harness)
    capsys.readouterr()
    assert _job(harness, "silver_to_gold", "exec-b") == glue_job.EXIT_CONFLICT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another run committed batch 1 first" in err[0]
    lake = harness.lake
    record = history.load(lake, "exec-b")
    assert (record.status, record.failed_step, record.error_class) == (
        "failed", "silver_to_gold", "CommitConflict")
    assert record.recovered == {"lost_commit_races": [1]}
    assert [(s.step, s.status) for s in record.steps[:2]] == [
        ("bronze_to_silver", "pending"), ("silver_to_gold", "failed")]
    assert [f.path for c in commit_log.load_commits(lake) for f in c.files] == [a]
    # Step Functions retries the failed job run: its plan is gone, so it plans first.
    assert _job(harness, "silver_to_gold", "exec-b") == glue_job.EXIT_OK
    assert [(c.batch_id, [f.path for f in c.files]) for c in commit_log.load_commits(lake)] == [
        (1, [a]), (2, [b])]
    record = history.load(lake, "exec-b")
    assert record.recovered == {"lost_commit_races": [1]}
    assert [(s.step, s.status, s.attempts) for s in record.steps[:2]] == [
        ("bronze_to_silver", "succeeded", 2), ("silver_to_gold", "succeeded", 2)]
    assert (record.status, record.failed_step) == ("running", None)


# --- the packaged Glue script, with and without awsglue ------------------------------------------

GLUE_SCRIPT = Path(glue_job.__file__).with_name("glue_script.py")

# Only awsglue.utils.getResolvedOptions, as aws-glue-libs implements it: argparse that raises
# instead of exiting, Glue's reserved options optional, every requested option required, unknown
# arguments ignored, a dict back. awsglue.context and awsglue.job are absent, as when the
# script runs outside a Glue job. Each call is logged, so the test knows it was used.
FAKE_AWSGLUE_UTILS = '''
import argparse, json, os

class GlueArgumentError(Exception):
    pass

class GlueArgumentParser(argparse.ArgumentParser):
    def error(self, msg):
        raise GlueArgumentError(msg)

def getResolvedOptions(args, options):
    parser = GlueArgumentParser()
    parser.add_argument("--job-bookmark-option", required=False)
    parser.add_argument("--continuation-option", required=False)
    for reserved in ("--JOB_ID", "--JOB_RUN_ID", "--SECURITY_CONFIGURATION"):
        parser.add_argument(reserved, required=False)
    parser.add_argument("--encryption-type", choices=["sse-s3"])
    options = [o for o in options if o not in {"RedshiftTempDir", "TempDir"}]
    parser.add_argument("--RedshiftTempDir", required=False)
    parser.add_argument("--TempDir", required=False)
    for option in options:
        parser.add_argument("--" + option, required=True)
    parsed, _extra = parser.parse_known_args(args[1:])
    resolved = vars(parsed)
    resolved.pop("continuation_option", None)
    resolved["job_bookmark_option"] = resolved["job_bookmark_option"] or "job-bookmark-disable"
    with open(os.environ["FAKE_AWSGLUE_LOG"], "a") as log:
        log.write(json.dumps(sorted(options)) + "\\n")
    return resolved
'''


def _script(tmp_path: Path, harness: Harness, with_awsglue: bool, *args: str
            ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "artifacts" / "glue_job.py"  # as `purchases aws package` names it
    script.parent.mkdir(exist_ok=True)
    script.write_bytes(GLUE_SCRIPT.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PURCHASES_", "PYTHON"))}
    env["FAKE_AWSGLUE_LOG"] = str(tmp_path / "getResolvedOptions.log")
    if with_awsglue:
        fake = tmp_path / "fake-glue" / "awsglue"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("")
        (fake / "utils.py").write_text(FAKE_AWSGLUE_UTILS)
        env["PYTHONPATH"] = str(fake.parent)
    s = harness.settings
    # What Glue adds to every run, then the job's default arguments, then the Task's.
    argv = ["--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--TempDir", "s3://tmp/",
            "--job-bookmark-option", "job-bookmark-disable", "--enable-metrics", "true",
            "--lake", s.lake_uri, "--engine", "duckdb", "--home", str(s.home),
            "--database_url", s.db_url, *args]
    return subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


def _resolved_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "getResolvedOptions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_glue_script_with_awsglue_getresolvedoptions(harness: Harness, tmp_path: Path) -> None:
    a = _land(harness, "a.csv", ROWS_A)
    done = _script(tmp_path, harness, True, "--JOB_NAME", "stack-BronzeToSilver",
                   "--step", "bronze_to_silver", "--run_id", "exec-1", "--year", "2024",
                   "--month", "01", "--day", "15", "--s3_path", a)
    assert done.returncode == 0, done.stderr
    assert _resolved_calls(tmp_path) == [sorted(
        ["JOB_NAME", "step", "run_id", "year", "month", "day", "s3_path", "lake", "engine",
         "home", "database_url"])]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["step"], summary["run_id"], summary["status"]) == (
        "bronze_to_silver", "exec-1", "succeeded")
    assert summary["files"] == [a] and summary["counts"]["accepted"] == 2
    done = _script(tmp_path, harness, True, "--JOB_NAME", "stack-SilverToGold",
                   "--step", "silver_to_gold", "--run_id", "exec-1", "--year", "2024",
                   "--month", "01", "--day", "15")
    assert done.returncode == 0, done.stderr
    assert [(r["purchase_id"], r["customer_id"], r["amount_aud"]) for r in harness.silver()] == [
        (101, 1, Decimal("10.00")), (102, 3, Decimal("2.50"))]


def test_glue_script_without_awsglue_and_a_sweep_with_bare_flags(
    harness: Harness, tmp_path: Path
) -> None:
    """awsglue absent: argparse. Then a sweep (every pending file, empty --s3_path and date)
    under getResolvedOptions, its empty values arriving as bare flags."""
    a = _land(harness, "a.csv", ROWS_A)
    done = _script(tmp_path, harness, False, "--step", "bronze_to_silver", "--run_id", "exec-1",
                   "--year", "2024", "--month", "01", "--day", "15", "--s3_path", a)
    assert done.returncode == 0, done.stderr
    assert _resolved_calls(tmp_path) == []  # not imported: there is no awsglue
    assert _script(tmp_path, harness, False, "--step", "silver_to_gold", "--run_id", "exec-1",
                   "--year", "2024", "--month", "01", "--day", "15").returncode == 0

    b = _land(harness, "b.csv", ROWS_B)
    sweep = ("--run_id", "sweep-1", "--year", "--month", "--day", "--s3_path")
    for step in ("bronze_to_silver", "silver_to_gold"):
        done = _script(tmp_path, harness, True, "--step", step, *sweep)
        assert done.returncode == 0, done.stderr
    assert len(_resolved_calls(tmp_path)) == 2
    assert [f.path for c in commit_log.load_commits(harness.lake) for f in c.files] == [a, b]
    assert [(r["purchase_id"], r["amount_aud"]) for r in harness.silver()] == [
        (101, Decimal("10.00")), (102, Decimal("2.50")), (201, Decimal("8.25"))]


def test_glue_script_failure_is_the_exit_status(harness: Harness, tmp_path: Path) -> None:
    done = _script(tmp_path, harness, True, "--step", "bronze_to_silver", "--run_id", "x",
                   "--s3_path", "silver/not-bronze.parquet")
    assert done.returncode == glue_job.EXIT_FAILED
    assert done.stderr.strip().splitlines() == [
        "purchases glue job: --s3_path silver/not-bronze.parquet: not a bronze file (expected "
        "bronze/year=YYYY/month=MM/day=DD/<name> or bronze/YYYY/MM/DD/<name>)"]
