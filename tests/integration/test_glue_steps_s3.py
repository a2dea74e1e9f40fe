"""The Glue entry point as Step Functions drives it (issue 9 acceptance 6), on an s3:// lake.

Each step runs as its own process, `python -m purchases.aws.glue_job`, with exactly the
arguments the rendered state machine (aws.asl.to_asl) passes: the task's Parameters resolved
against the execution input, `--run_id` = the execution name, `--step`, plus the job's default
arguments the deployment template sets (`--lake`, `--engine duckdb`, `--database_url`). The
upsert task is a Lambda: its payload goes to `purchases.aws.lambdas.upsert`, in a process of
its own too. DuckDB stands in for Spark (local Spark cannot reach s3a:// without hadoop-aws).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from lakecheck import purchases

from conftest import unique_name, write_file
from purchases import commit_log, history, serving
from purchases.aws.asl import to_asl
from purchases.config import load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.generate import generate
from purchases.storage import Lake

pytestmark = [pytest.mark.s3, pytest.mark.slow]

LAMBDA = (
    "import json, sys\n"
    "from purchases.aws.lambdas import upsert\n"
    "print(json.dumps(upsert(json.loads(sys.argv[1])), default=str))\n"
)
EXIT_CONFLICT = 3  # another writer committed the batch first, MAX_REPLANS times over


def resolve(template: dict[str, Any], execution: str, run_input: dict[str, str]) -> dict:
    """A state's Parameters as Step Functions resolves them (`x.$` paths, `$$` context)."""
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            value = execution if value == "$$.Execution.Name" else run_input[value[2:]]
            key = key[:-2]
        out[key] = value
    return out


class StateMachine:
    """Runs the states of to_asl() one at a time, each step in a fresh process."""

    def __init__(self, lake: str, database_url: str, env: dict[str, str]) -> None:
        self.asl = to_asl()
        self.lake, self.database_url, self.env = lake, database_url, env

    def order(self) -> list[str]:
        """The Task states of a file's execution, in order (a Choice's Default is the file path)."""
        names, state = [], self.asl["StartAt"]
        while state:
            if self.asl["States"][state]["Type"] == "Task":
                names.append(state)
            here = self.asl["States"][state]
            state = here.get("Next") or here.get("Default")
        return names

    def step(self, name: str, execution: str, run_input: dict[str, str]
             ) -> subprocess.CompletedProcess[str]:
        params = self.asl["States"][name]["Parameters"]
        if "JobName" in params:  # glue:startJobRun.sync
            args = resolve(params["Arguments"], execution, run_input)
            default_args = {"--lake": self.lake, "--engine": "duckdb",
                            "--database_url": self.database_url}
            argv = ["--JOB_NAME", params["JobName"]]
            for key, value in {**default_args, **args}.items():
                argv += [key, str(value)]
            cmd = [sys.executable, "-m", "purchases.aws.glue_job", *argv]
            env = self.env
        else:  # lambda:invoke: the Lambda's own environment names the lake and database
            payload = resolve(params["Payload"], execution, run_input)
            cmd = [sys.executable, "-c", LAMBDA, json.dumps(payload)]
            env = {**self.env, "PURCHASES_LAKE": self.lake,
                   "PURCHASES_DATABASE_URL": self.database_url}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def execution_input(bucket: str, rel: str) -> dict[str, str]:
    """The trigger's input for a bronze file: strings, the date from its bronze path."""
    parts = dict(p.split("=", 1) for p in rel.split("/") if "=" in p)
    return {"year": parts["year"], "month": parts["month"], "day": parts["day"],
            "s3_path": f"s3://{bucket}/lake/{rel}"}


@pytest.fixture
def aws(aws_env: str, tmp_path: Path) -> dict[str, Any]:
    bucket = unique_name("glue").replace("_", "-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    uri = f"s3://{bucket}/lake"
    db = f"sqlite:///{tmp_path / 'aws-serving.db'}"
    return {"bucket": bucket, "uri": uri, "db": db, "machine": StateMachine(uri, db, env)}


def land_on_s3(uri: str, files: list[Path], day: str) -> list[str]:
    from datetime import date

    from purchases.bronze import land

    landed = land(Lake(uri), files, date.fromisoformat(day))
    return [item.path for item in landed]


def served(url: str) -> list[dict[str, Any]]:
    with serving.connect(load_settings(database_url=url)) as db:
        return db.summary()


def layers(uri: str) -> dict[str, Any]:
    lake = Lake(uri)
    commits = commit_log.load_commits(lake)
    return {
        "silver": sorted(tuple(sorted((k, str(v)) for k, v in r.items()))
                         for r in lake_query(lake, "SELECT * FROM silver")),
        "quarantine": sorted(tuple(sorted((k, str(v)) for k, v in r.items()))
                             for r in lake_query(lake, "SELECT * FROM quarantine")),
        "files": sorted((f.path, f.rows_in, f.accepted, f.duplicates, f.file_rejection)
                        for c in commits for f in c.files),
    }


def test_each_step_in_its_own_process_equals_a_local_run(aws: dict[str, Any],
                                                         tmp_path: Path) -> None:
    machine: StateMachine = aws["machine"]
    assert machine.order() == ["bronze_to_silver", "silver_to_gold", "gold_to_staging",
                               "upsert"]
    files = generate(tmp_path / "gen", rows=600, days=2, seed=5, bad_ratio=0.05)
    home = tmp_path / "local"
    for f in files:
        day = f.ingestion_date.isoformat()
        assert purchases(home, "ingest", str(f.path), "--date", day).returncode == 0
        assert purchases(home, "run").returncode == 0
        (rel,) = land_on_s3(aws["uri"], [f.path], day)
        execution = f"exec-{f.path.stem}"
        for name in machine.order():
            done = machine.step(name, execution, execution_input(aws["bucket"], rel))
            assert done.returncode == 0, (name, done.stdout, done.stderr)
            if name != "upsert":
                summary = json.loads(done.stdout.strip().splitlines()[-1])
                assert summary["step"] == name and summary["run_id"] == execution
                assert summary["status"] == "succeeded"
    local = load_settings(home=home)
    assert served(aws["db"]) == served(local.db_url)
    assert layers(aws["uri"]) == layers(local.lake_uri)
    # One run per execution in the lake's history, every step recorded once, by its name.
    records = history.load_all(Lake(aws["uri"]))
    assert sorted(r.run_id for r in records) == sorted(f"exec-{f.path.stem}" for f in files)
    for r in records:
        assert r.status == "succeeded" and r.trigger == "glue"
        assert [(s.step, s.status, s.attempts) for s in r.steps] == [
            (n, "succeeded", 1) for n in machine.order()]


def test_two_executions_interleaved_step_by_step_commit_each_file_once(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    machine: StateMachine = aws["machine"]
    files = generate(tmp_path / "gen", rows=400, days=2, seed=9, bad_ratio=0.0)
    a_rel = land_on_s3(aws["uri"], [files[0].path], "2024-01-15")[0]
    b_rel = land_on_s3(aws["uri"], [files[1].path], "2024-01-15")[0]
    executions = {"A": execution_input(aws["bucket"], a_rel),
                  "B": execution_input(aws["bucket"], b_rel)}
    again: list[str] = []
    for name in machine.order():
        for label, run_input in executions.items():
            done = machine.step(name, f"exec-{label}", run_input)
            if done.returncode == EXIT_CONFLICT:
                again.append(label)  # lost the commit: Step Functions runs it again
                continue
            if label in again:
                continue  # that execution stopped at its conflict
            assert done.returncode == 0, (label, name, done.stdout, done.stderr)
    for label in again:  # a new execution of the same input, alone now
        for name in machine.order():
            done = machine.step(name, f"exec-{label}-again", executions[label])
            assert done.returncode == 0, (label, name, done.stdout, done.stderr)

    lake = Lake(aws["uri"])
    commits = commit_log.load_commits(lake)
    committed = [f.path for c in commits for f in c.files]
    assert sorted(committed) == sorted([a_rel, b_rel])  # each file once
    assert len({c.batch_id for c in commits}) == len(commits) == 2  # two distinct batches
    assert [len(c.files) for c in commits] == [1, 1]
    ids = lake_query(lake, "SELECT COUNT(*) AS n, COUNT(DISTINCT purchase_id) AS d, "
                           "SUM(amount_aud) AS total FROM silver")[0]
    assert ids["n"] == ids["d"] == sum(f.rows for f in files[:2])
    total = sum((r["total_spent_aud"] for r in served(aws["db"])), Decimal("0"))
    assert total == ids["total"]
    # An execution that lost the commit is closed in the history, not left running.
    records = {r.run_id: r.status for r in history.load_all(lake)}
    assert "running" not in records.values(), records
    assert records["exec-A"] == "succeeded"


def test_glue_job_usage_errors_are_one_line(aws: dict[str, Any], tmp_path: Path) -> None:
    """A wrong --s3_path is the job's input error: exit 1, one line, nothing recorded."""
    machine: StateMachine = aws["machine"]
    write_file(tmp_path / "x.csv", "a\n")
    done = machine.step("bronze_to_silver", "exec-bad",
                        {"year": "2024", "month": "01", "day": "15",
                         "s3_path": "s3://elsewhere/bronze/year=2024/month=01/day=15/x.csv"})
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "not inside the lake" in done.stderr


def test_killed_past_the_commit_point_then_the_redelivered_event_serves_the_batch(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 9 acceptance 7: a Glue step killed after its commit leaves a batch committed but
    not served; queries show it published, the table does not; the same S3 event delivered
    again starts a follow-up execution, whose steps bring the serving table up to date."""
    from urllib.parse import quote_plus

    from purchases.aws import lambdas

    machine: StateMachine = aws["machine"]
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=unique_name("sm"), definition=json.dumps(to_asl()),
        roleArn="arn:aws:iam::123456789012:role/purchases-states")["stateMachineArn"]
    files = generate(tmp_path / "gen", rows=300, days=1, seed=3, bad_ratio=0.05)
    (rel,) = land_on_s3(aws["uri"], [files[0].path], files[0].ingestion_date.isoformat())
    head = boto3.client("s3").head_object(Bucket=aws["bucket"], Key=f"lake/{rel}")
    event = {"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "awsRegion": "us-east-1",
        "s3": {"bucket": {"name": aws["bucket"]},
               "object": {"key": quote_plus(f"lake/{rel}"), "eTag": head["ETag"].strip('"'),
                          "sequencer": "0A1B2C3D4E5F6071"}}}]}
    env = {"PURCHASES_LAKE": aws["uri"], "PURCHASES_STATE_MACHINE_ARN": arn}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        (first,) = lambdas.trigger(event, None)["started"]
    run_input = execution_input(aws["bucket"], rel)
    assert json.loads(sfn.describe_execution(
        executionArn=first["execution_arn"])["input"]) == run_input

    # The first execution: silver_to_gold dies right after its commit record.
    done = machine.step("bronze_to_silver", first["execution_name"], run_input)
    assert done.returncode == 0, done.stderr
    machine.env = {**machine.env, "PURCHASES_FAULT": "after_commit"}
    done = machine.step("silver_to_gold", first["execution_name"], run_input)
    assert done.returncode != 0
    machine.env = {k: v for k, v in machine.env.items() if k != "PURCHASES_FAULT"}
    sfn.stop_execution(executionArn=first["execution_arn"], error="States.TaskFailed")
    lake = Lake(aws["uri"])
    assert len(commit_log.load_commits(lake)) == 1  # committed ...
    accepted = lake_query(lake, "SELECT COUNT(*) AS n FROM silver")[0]["n"]
    assert accepted > 0  # ... and readable
    assert served(aws["db"]) == []  # ... but not served

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        (follow_up,) = lambdas.trigger(event, None)["started"]
        assert follow_up["execution_name"] == first["execution_name"] + "-r1"
        for name in machine.order():
            done = machine.step(name, follow_up["execution_name"], run_input)
            assert done.returncode == 0, (name, done.stdout, done.stderr)
        # Delivered once more while the follow-up stands: nothing new starts.
        assert lambdas.trigger(event, None)["started"] == [follow_up] or \
            len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 2

    home = tmp_path / "local"
    day = files[0].ingestion_date.isoformat()
    assert purchases(home, "ingest", str(files[0].path), "--date", day).returncode == 0
    assert purchases(home, "run").returncode == 0
    assert served(aws["db"]) == served(load_settings(home=home).db_url)
    assert len(commit_log.load_commits(lake)) == 1  # the follow-up committed nothing new
