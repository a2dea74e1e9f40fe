"""The rendered state machine run by an independent ASL interpreter (issue 10, acceptance 2).

`aws-local-stepfunctions` (npm) executes the definition `purchases aws render` writes, its
placeholders substituted as the template's DefinitionSubstitutions would be. Every Task state
is answered by the product in a process of its own (`sfn/run_execution.mjs`): a Glue task runs
`python -m purchases.aws.glue_job` with the job's DefaultArguments and the Arguments its
Parameters resolve to, a Lambda task runs the handler with the Payload they resolve to. The
lake is on moto's S3, the serving database on PostgreSQL (its login in moto's Secrets
Manager). Files arrive as a producer uploads them: S3 notifies SQS, the test reads the queue
and hands each message to the trigger Lambda, which starts an execution on moto's Step
Functions; the test gives that execution's name and input to the interpreter. A sweep
execution (no file) is started on moto's Step Functions with the schedule's input, as
EventBridge Scheduler starts it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
import sqlalchemy as sa
from lakecheck import purchases

from conftest import require, unique_name, write_file
from purchases import bronze, serving
from purchases.aws import lambdas
from purchases.aws.asl import FILE_OR_SWEEP, NOTHING_PENDING, SWEEP_ROUTE
from purchases.config import Settings
from purchases.contract import SERVING_COLUMNS
from purchases.generate import GeneratedFile, generate
from purchases.orchestrator import run_pipeline
from purchases.pipeline import RUN_PARAMETERS, SWEEP
from purchases.storage import Lake

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "sfn" / "run_execution.mjs"
ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "purchases-test"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-states"
GLUE_STEPS = ("bronze_to_silver", "silver_to_gold", "gold_to_staging")
STEPS = (*GLUE_STEPS, "upsert")
SWEEP_INPUT = {p: "" for p in RUN_PARAMETERS}  # the schedule's input (deploy/template.yaml)
CHECK = SWEEP.check.name  # find_pending
RUN_INPUT = ("year", "month", "day")
# DefinitionSubstitutions, as the template passes them: Glue job names, Lambda ARNs.
JOB_NAMES = {
    "BronzeToSilverJobName": f"{STACK}-bronze_to_silver",
    "SilverToGoldJobName": f"{STACK}-silver_to_gold",
    "GoldToStagingJobName": f"{STACK}-gold_to_staging",
}
FUNCTIONS = {  # placeholder -> (ARN, handler)
    "UpsertFunctionArn": (f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-upsert",
                          "purchases.aws.lambdas.upsert"),
    "RecordFailureFunctionArn": (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-record_failure",
        "purchases.aws.lambdas.record_failure"),
    "PendingFunctionArn": (f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-pending",
                           "purchases.aws.lambdas.pending"),
}
DATABASE_FUNCTIONS = ("purchases.aws.lambdas.upsert", "purchases.aws.lambdas.pending")
SUBSTITUTIONS = {**JOB_NAMES, **{k: arn for k, (arn, _) in FUNCTIONS.items()}}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with aws-local-stepfunctions installed (make install: npm ci)."""
    found = shutil.which("node")
    require(found is not None, "node is not on PATH: the ASL interpreter (aws-local-stepfunctions)"
                               " runs on Node.js")
    require((ROOT / "node_modules" / "aws-local-stepfunctions").is_dir(),
            "node_modules/aws-local-stepfunctions is missing: run `npm ci` (make install)")
    return str(found)


def rendered_definition(tmp: Path) -> dict[str, Any]:
    """The definition `purchases aws render` writes (the file the stack deploys), its
    placeholders substituted as CloudFormation's DefinitionSubstitutions do."""
    done = purchases(tmp / "cli-home", "aws", "render", "--out", str(tmp / "artifacts"))
    assert done.returncode == 0, done.stderr
    text = (tmp / "artifacts" / "statemachine.asl.json").read_text(encoding="utf-8")
    used = set(_PLACEHOLDER.findall(text))
    assert used == set(SUBSTITUTIONS), (
        f"the definition's placeholders {sorted(used)} are not the template's "
        f"DefinitionSubstitutions {sorted(SUBSTITUTIONS)}")
    return json.loads(_PLACEHOLDER.sub(lambda m: SUBSTITUTIONS[m.group(1)], text))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Execution:
    name: str
    arn: str
    input: dict[str, str]


@dataclass
class Stack:
    """What the template deploys, on moto: the lake bucket notifying a queue, the database
    secret, the state machine; and the Glue jobs' and Lambda functions' configuration."""

    node: str
    tmp: Path
    bucket: str
    queue_url: str
    state_machine_arn: str
    definition: dict[str, Any]
    database_url: str
    password: str
    secret_arn: str
    env: dict[str, str]
    runs: int = 0
    handled: set[str] = field(default_factory=set)

    @property
    def lake(self) -> str:
        return f"s3://{self.bucket}"

    def secret(self, **changes: Any) -> str:
        """A Secrets Manager secret in the RDS shape for the test database; returns its ARN."""
        url = sa.make_url(self.database_url)
        value = {"engine": "postgres", "host": url.host, "port": url.port or 5432,
                 "username": url.username, "password": self.password, "dbname": url.database,
                 **changes}
        return boto3.client("secretsmanager").create_secret(
            Name=unique_name(f"{STACK}-db"), SecretString=json.dumps(value))["ARN"]

    def upload(self, f: GeneratedFile) -> str:
        """Put a day's CSV where producers put it (bronze/year=/month=/day=/<name>)."""
        key = f"{Lake.bronze_dir(f.ingestion_date)}/{f.path.name}"
        boto3.client("s3").put_object(Bucket=self.bucket, Key=key, Body=f.path.read_bytes())
        return key

    def notifications(self, key: str) -> list[str]:
        """The queue's messages up to and including S3's notification of `key` (deleted)."""
        sqs = boto3.client("sqs")
        bodies: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1).get("Messages", [])
            for message in got:
                sqs.delete_message(QueueUrl=self.queue_url,
                                   ReceiptHandle=message["ReceiptHandle"])
                bodies.append(message["Body"])
            if any(key in _keys(b) for b in bodies):
                return bodies
        raise AssertionError(f"no S3 notification of {key} in the queue ({bodies})")

    def trigger(self, body: str) -> dict[str, Any]:
        """The trigger Lambda handling one SQS message body (an S3 event), in its environment."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PURCHASES_LAKE", self.lake)
            mp.setenv(lambdas.STATE_MACHINE_ENV, self.state_machine_arn)
            return lambdas.trigger(json.loads(body), None)

    def executions(self) -> dict[str, Execution]:
        """Every execution moto's Step Functions has of the state machine, by name."""
        sfn = boto3.client("stepfunctions")
        found = {}
        for e in sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]:
            described = sfn.describe_execution(executionArn=e["executionArn"])
            found[e["name"]] = Execution(e["name"], e["executionArn"],
                                         json.loads(described["input"]))
        return found

    def start_sweep(self) -> Execution:
        """A sweep execution, started as the schedule starts it (no name: a generated one)."""
        boto3.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, input=json.dumps(SWEEP_INPUT))
        return self.new_execution()

    def new_execution(self) -> Execution:
        """The one execution started since the last call (the trigger's work)."""
        new = [e for name, e in self.executions().items() if name not in self.handled]
        assert len(new) == 1, [e.name for e in new]
        self.handled.add(new[0].name)
        return new[0]

    def glue_default_arguments(self) -> dict[str, str]:
        """The jobs' DefaultArguments: the lake, the DuckDB engine, the database secret, and
        arguments Glue itself adds, which the job must ignore."""
        return {"--lake": self.lake, "--engine": "duckdb", "--database_secret_arn":
                self.secret_arn, "--TempDir": f"s3://{self.bucket}-glue-temp/",
                "--job-bookmark-option": "job-bookmark-disable"}

    def run(self, execution: Execution, injections: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        """Execute the state machine in the interpreter for that execution; its report."""
        # The functions' environment: the lake for all, the database for upsert and pending.
        lambda_env = {"PURCHASES_LAKE": self.lake}
        database_env = {**lambda_env, "PURCHASES_DATABASE_SECRET_ARN": self.secret_arn}
        config = {
            "definition": self.definition,
            "input": execution.input,
            "context": {"Execution": {"Id": execution.arn, "Name": execution.name,
                                      "RoleArn": ROLE},
                        "StateMachine": {"Id": self.state_machine_arn,
                                         "Name": self.state_machine_arn.rsplit(":", 1)[-1]}},
            "python": sys.executable,
            "env": self.env,
            "glueJobs": {name: {"DefaultArguments": self.glue_default_arguments()}
                         for name in JOB_NAMES.values()},
            "lambdaFunctions": {arn: {"Handler": handler, "Environment": database_env
                                      if handler in DATABASE_FUNCTIONS else lambda_env}
                                for arn, handler in FUNCTIONS.values()},
            "injections": injections or {},
        }
        self.runs += 1
        path = self.tmp / f"execution-{self.runs}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        done = subprocess.run([self.node, str(DRIVER), str(path)], capture_output=True,
                              text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-4000:]
        report = json.loads(done.stdout)
        path.with_suffix(".report.json").write_text(done.stdout, encoding="utf-8")  # to debug
        assert self.password not in done.stdout + done.stderr  # in no event, log or error
        return report


def _keys(body: str) -> list[str]:
    event = json.loads(body)
    return [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]


@pytest.fixture
def stack(aws_env: str, node: str, postgres_database: str, tmp_path: Path) -> Stack:
    """The deployment on moto (lake bucket -> SQS for bronze/, secret, state machine)."""
    bucket = unique_name("lake").replace("_", "-")
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=unique_name("bronze-events"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{
            "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "bronze/"}]}}}]})
    definition = rendered_definition(tmp_path)
    arn = boto3.client("stepfunctions").create_state_machine(
        name=unique_name(STACK), roleArn=ROLE, definition=json.dumps(definition),
    )["stateMachineArn"]
    home = tmp_path / "process-home"
    home.mkdir()
    # The processes see the AWS endpoint and credentials (moto), never a PURCHASES_ setting:
    # a Glue job's configuration is its arguments, a Lambda's its function environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["HOME"] = str(home)
    stack = Stack(node=node, tmp=tmp_path, bucket=bucket, queue_url=queue_url,
                  state_machine_arn=arn, definition=definition,
                  database_url=postgres_database, password=f"pw-{uuid.uuid4().hex}",
                  secret_arn="", env=env)
    stack.secret_arn = stack.secret()
    return stack


# --- reading the outcome -------------------------------------------------------------------------


def _row(row: dict[str, Any]) -> tuple[Any, ...]:
    money = row["total_spent_aud"]
    assert isinstance(money, Decimal) and money == money.quantize(Decimal("0.01")), row
    return tuple(str(row[c]) if c == "total_spent_aud" else row[c] for c in SERVING_COLUMNS)


def postgres_summary(url: str) -> list[tuple[Any, ...]]:
    """customer_purchase_summary as PostgreSQL holds it (read with SQL, not the product)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            if not sa.inspect(con).has_table("customer_purchase_summary"):
                return []
            rows = con.execute(sa.text(
                f"SELECT {', '.join(SERVING_COLUMNS)} FROM customer_purchase_summary "
                "ORDER BY customer_id")).mappings().all()
    finally:
        engine.dispose()
    return [_row(dict(r)) for r in rows]


def embedded_summary(settings: Settings, files: list[GeneratedFile]) -> list[tuple[Any, ...]]:
    """`purchases ingest` + `purchases run` of each day's files on a local lake (SQLite)."""
    lake = Lake(settings.lake_uri)
    for day in sorted({f.ingestion_date for f in files}):
        bronze.land(lake, [f.path for f in files if f.ingestion_date == day], day)
        assert run_pipeline(settings).status == "succeeded"
    with serving.connect(settings) as db:
        return [_row(r) for r in db.summary()]


def runs_on_lake(stack: Stack, *args: str) -> Any:
    """`purchases runs ... --format json` against the S3 lake, as a user runs it."""
    done = purchases(stack.tmp / "cli-home", "runs", *args, "--format", "json",
                     PURCHASES_LAKE=stack.lake)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def failure(report: dict[str, Any]) -> tuple[Any, ...]:
    """What to show when an execution did not succeed: its error and each process's stderr."""
    return report["error"], report["cause"], [i["stderr"] for i in report["invocations"]]


def _customers(path: Path) -> set[int]:
    """The customer ids a generated CSV holds (the rows whose id is a number)."""
    with path.open(encoding="utf-8", newline="") as fh:
        ids = (row.get("customer_id", "") for row in csv.DictReader(fh))
        return {int(i) for i in ids if i.strip().isdigit()}


def visited(report: dict[str, Any]) -> list[str]:
    return [e["state"]["name"] for e in report["events"] if e["type"] == "StateEntered"]


def retried(report: dict[str, Any], state: str) -> list[list[str]]:
    """The ErrorEquals of the retrier behind each retry of a state, in order."""
    return [e["retry"]["retrier"]["ErrorEquals"] for e in report["events"]
            if e["type"] == "StateRetried" and e["state"]["name"] == state]


def attempts(report: dict[str, Any], state: str) -> list[str]:
    """The outcome of each invocation of a state (SUCCEEDED, FAILED or the error name)."""
    return [i["outcome"] for i in report["invocations"] if i["state"] == state]


def retrier_for(definition: dict[str, Any], state: str, error: str) -> dict[str, Any]:
    """The first retrier of a state whose ErrorEquals names the error (ASL's order)."""
    for retrier in definition["States"][state].get("Retry", []):
        if error in retrier["ErrorEquals"] or "States.ALL" in retrier["ErrorEquals"]:
            return retrier
    raise AssertionError(f"{state} has no Retry for {error}")


def check_arguments(stack: Stack, report: dict[str, Any], execution: Execution) -> None:
    """Each task got exactly what its Parameters produce from the execution input."""
    run_in = execution.input
    date_args = {f"--{k}": run_in[k] for k in RUN_INPUT}
    for call in report["invocations"]:
        step = call["state"]
        if call["kind"] == "glue":
            expected = {**date_args, **({"--s3_path": run_in["s3_path"]}
                                        if step == "bronze_to_silver" else {}),
                        "--run_id": execution.name, "--step": step}
            assert call["parameters"] == {"JobName": f"{STACK}-{step}", "Arguments": expected}
            # The job run's arguments: its DefaultArguments, overridden by the run's own.
            head, pairs = call["argv"][:5], call["argv"][5:]
            assert head == [sys.executable, "-m", "purchases.aws.glue_job", "--JOB_NAME",
                            f"{STACK}-{step}"]
            given = dict(zip(pairs[::2], pairs[1::2], strict=True))
            assert len(given) * 2 == len(pairs)
            assert given == {**stack.glue_default_arguments(), **expected}
        elif step == "upsert":
            assert call["parameters"] == {
                "FunctionName": FUNCTIONS["UpsertFunctionArn"][0],
                "Payload": {**{k: run_in[k] for k in RUN_INPUT}, "run_id": execution.name,
                            "step": "upsert"}}
        elif step == CHECK:
            assert call["parameters"] == {
                "FunctionName": FUNCTIONS["PendingFunctionArn"][0],
                "Payload": {"run_id": execution.name, "step": CHECK}}


# --- the tests -----------------------------------------------------------------------------------


def test_s3_events_drive_executions_whose_result_equals_the_embedded_run(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    days = generate(tmp_path / "gen", rows=1000, days=3, seed=17, bad_ratio=0.05)
    # The second day also brings a file that is rejected whole (its header lacks columns).
    wrong = write_file(tmp_path / "edge" / "wrong_header.csv", "id,name,amount\n1,Ann,10.00\n")
    arrivals = [days[0], days[1], GeneratedFile(wrong, days[1].ingestion_date, 1), days[2]]
    expected = embedded_summary(settings, arrivals)
    assert len(expected) > 100

    down = stack.secret(port=_closed_port())  # the database unreachable, for one attempt
    transient = {"silver_to_gold": {"1": {"PURCHASES_FAULT": "after_gold_write"}},
                 "upsert": {"1": {"PURCHASES_DATABASE_SECRET_ARN": down}}}
    reports: dict[str, dict[str, Any]] = {}
    first_delivery = ""
    *delivered, lost = arrivals
    for n, f in enumerate(delivered):
        key = stack.upload(f)
        bodies = stack.notifications(key)
        for body in bodies:
            stack.trigger(body)
        if n == 0:
            # S3 delivers at least once: the same message again starts nothing new.
            first_delivery = next(b for b in bodies if key in _keys(b))
            again = stack.trigger(first_delivery)
        execution = stack.new_execution()
        if n == 0:
            assert {s["execution_arn"] for s in again["started"]} <= {execution.arn}
        assert execution.input == {"year": f"{f.ingestion_date:%Y}",
                                   "month": f"{f.ingestion_date:%m}",
                                   "day": f"{f.ingestion_date:%d}",
                                   "s3_path": f"{stack.lake}/{key}"}
        report = stack.run(execution, transient if n == 1 else None)
        assert report["status"] == "SUCCEEDED", failure(report)
        assert visited(report) == [FILE_OR_SWEEP, *STEPS]
        check_arguments(stack, report, execution)
        reports[execution.name] = report

    # The last file's S3 event is lost (an outage): its notification is read and dropped.
    # The hourly sweep finds the file, processes it and serves it.
    lost_key = stack.upload(lost)
    stack.notifications(lost_key)
    served_before = postgres_summary(stack.database_url)
    sweep = stack.start_sweep()
    report = stack.run(sweep)
    assert report["status"] == "SUCCEEDED", failure(report)
    assert visited(report) == [FILE_OR_SWEEP, CHECK, SWEEP_ROUTE, *STEPS]
    assert report["output"][SWEEP.result] == {"files": 1, "batches": 0}
    check_arguments(stack, report, sweep)
    reports[sweep.name] = report
    served = postgres_summary(stack.database_url)
    assert served == expected != served_before
    # What changed is exactly the lost file's customers' rows (new ones, or new totals).
    changed = {r[0] for r in set(served) - set(served_before)}
    assert changed and changed <= _customers(lost.path)

    # The next sweep has nothing to do: no Glue job, no database work, no run record.
    idle = stack.start_sweep()
    report = stack.run(idle)
    assert report["status"] == "SUCCEEDED", failure(report)
    assert visited(report) == [FILE_OR_SWEEP, CHECK, SWEEP_ROUTE, NOTHING_PENDING]
    assert report["output"][SWEEP.result] == {"files": 0, "batches": 0}
    assert [i["state"] for i in report["invocations"]] == [CHECK]
    check_arguments(stack, report, idle)
    names = list(reports)

    # The transient failures of the second file: each retried once, by the retrier that names
    # its error, then the step succeeded.
    second = reports[names[1]]
    glue_retry = retrier_for(stack.definition, "silver_to_gold", "States.TaskFailed")
    lambda_retry = retrier_for(stack.definition, "upsert", "Purchases.Transient")
    assert glue_retry["MaxAttempts"] >= 1 and lambda_retry["MaxAttempts"] >= 1
    assert retried(second, "silver_to_gold") == [glue_retry["ErrorEquals"]]
    assert retried(second, "upsert") == [lambda_retry["ErrorEquals"]]
    assert attempts(second, "silver_to_gold") == ["FAILED", "SUCCEEDED"]
    assert attempts(second, "upsert") == ["Purchases.Transient", "SUCCEEDED"]
    for other in (r for r in reports.values() if r is not second):
        assert not any(e["type"] == "StateRetried" for e in other["events"])

    # Every delivery handled, the first one twice: one execution per delivered file, plus the
    # two sweeps, on Step Functions.
    stack.trigger(first_delivery)
    assert sorted(stack.executions()) == sorted([*names, idle.name])

    assert postgres_summary(stack.database_url) == expected

    runs = runs_on_lake(stack)
    assert sorted((r["run_id"], r["status"], r["files"]) for r in runs) == sorted(
        (name, "succeeded", 1) for name in names)
    shown = runs_on_lake(stack, "show", names[1])
    # A killed attempt counts as much as one that failed: two attempts of each retried step.
    assert {s["step"]: (s["status"], s["attempts"]) for s in shown["steps"]} == {
        "bronze_to_silver": ("succeeded", 1), "silver_to_gold": ("succeeded", 2),
        "gold_to_staging": ("succeeded", 1), "upsert": ("succeeded", 2)}
    assert shown["failed_step"] is None
    rejected = runs_on_lake(stack, "show", names[2])
    assert [(f["path"], f["file_rejection"]) for f in rejected["files"]] == [
        (f"{Lake.bronze_dir(days[1].ingestion_date)}/wrong_header.csv", "missing_columns")]
    swept = runs_on_lake(stack, "show", sweep.name)
    assert [f["path"] for f in swept["files"]] == [lost_key]
    assert stack.password not in json.dumps([shown, rejected, swept, runs])


@pytest.mark.parametrize(("step", "error"), [
    # The lake refuses the commit record: the Glue job run fails, every attempt.
    ("silver_to_gold", "read-only"),
    # The secret names a database engine that is not served: the upsert Lambda fails. The
    # batch is committed but not served: the next sweep serves it, without the first steps.
    ("upsert", "oracle"),
])
def test_a_permanent_failure_takes_the_catch_path_and_shows_in_purchases_runs(
    stack: Stack, settings: Settings, tmp_path: Path, step: str, error: str
) -> None:
    (f,) = generate(tmp_path / "gen", rows=200, days=1, seed=29, bad_ratio=0.05)
    for body in stack.notifications(stack.upload(f)):
        stack.trigger(body)
    execution = stack.new_execution()
    faults = {"silver_to_gold": {"PURCHASES_IO_FAULT": "erofs:_state/commits/"},
              "upsert": {"PURCHASES_DATABASE_SECRET_ARN": stack.secret(engine="oracle")}}
    report = stack.run(execution, {step: {"*": faults[step]}})

    state = stack.definition["States"][step]
    (catch,) = state["Catch"]
    failed = stack.definition["States"][catch["Next"]]
    recorder = failed["Next"]
    end = stack.definition["States"][recorder]["Next"]
    assert stack.definition["States"][end]["Type"] == "Fail"
    assert report["status"] == "FAILED"
    assert report["error"] == stack.definition["States"][end].get("Error", report["error"])
    order = ["bronze_to_silver", "silver_to_gold", "gold_to_staging", "upsert"]
    assert visited(report) == [FILE_OR_SWEEP, *order[:order.index(step) + 1], catch["Next"],
                               recorder, end]
    # As the Retry says: a failed Glue job run is retried (States.TaskFailed), a Lambda's
    # permanent error is not.
    if step in GLUE_STEPS:
        retries = retrier_for(stack.definition, step, "States.TaskFailed")["MaxAttempts"]
        assert attempts(report, step) == ["FAILED"] * (1 + retries)
    else:
        assert attempts(report, step) == ["ConfigError"]
    assert attempts(report, recorder) == ["SUCCEEDED"]
    check_arguments(stack, report, execution)
    (call,) = [i for i in report["invocations"] if i["state"] == recorder]
    payload = call["parameters"]["Payload"]
    assert (payload["run_id"], payload["step"]) == (execution.name, step)
    assert {k: payload["input"][k] for k in execution.input} == execution.input
    assert payload["error"]["Error"] == ("States.TaskFailed" if step in GLUE_STEPS
                                         else "ConfigError")

    (run,) = runs_on_lake(stack)
    assert (run["run_id"], run["status"], run["failed_step"]) == (execution.name, "failed", step)
    shown = runs_on_lake(stack, "show", execution.name)
    assert error in shown["error"], shown["error"]
    assert shown["error_class"] == ("PermanentError" if step in GLUE_STEPS else "ConfigError")
    steps = {s["step"]: (s["status"], s["attempts"]) for s in shown["steps"]}
    assert steps[step] == ("failed", len(attempts(report, step)))
    assert all(steps[before] == ("succeeded", 1) for before in order[:order.index(step)])
    assert all(steps[later] == ("skipped", 0) for later in order[order.index(step) + 1:])
    assert stack.password not in json.dumps(shown)
    assert postgres_summary(stack.database_url) == []
    if step != "upsert":
        return

    # The next sweep finds the unserved batch: it stages and applies it, nothing more.
    sweep = stack.start_sweep()
    report = stack.run(sweep)
    assert report["status"] == "SUCCEEDED", failure(report)
    assert visited(report) == [FILE_OR_SWEEP, CHECK, SWEEP_ROUTE, "gold_to_staging", "upsert"]
    assert report["output"][SWEEP.result] == {"files": 0, "batches": 1}
    check_arguments(stack, report, sweep)
    assert postgres_summary(stack.database_url) == embedded_summary(settings, [f])
    shown = runs_on_lake(stack, "show", sweep.name)
    assert (shown["status"], shown["files"]) == ("succeeded", [])
    assert {s["step"]: s["status"] for s in shown["steps"]} == {
        "bronze_to_silver": "skipped", "silver_to_gold": "skipped",
        "gold_to_staging": "succeeded", "upsert": "succeeded"}


def test_a_failed_sweep_check_takes_the_catch_path_and_shows_in_purchases_runs(
    stack: Stack,
) -> None:
    sweep = stack.start_sweep()
    # The database's secret names an engine that is not served: the check cannot read the
    # ledger, a permanent error (no retry).
    broken = {"PURCHASES_DATABASE_SECRET_ARN": stack.secret(engine="oracle")}
    report = stack.run(sweep, {CHECK: {"*": broken}})
    assert report["status"] == "FAILED"
    (catch,) = stack.definition["States"][CHECK]["Catch"]
    assert visited(report) == [FILE_OR_SWEEP, CHECK, catch["Next"], "record_failure",
                               "run_failed"]
    assert attempts(report, CHECK) == ["ConfigError"]
    assert attempts(report, "record_failure") == ["SUCCEEDED"]
    check_arguments(stack, report, sweep)
    (run,) = runs_on_lake(stack)
    assert (run["run_id"], run["status"], run["failed_step"]) == (sweep.name, "failed", CHECK)
    shown = runs_on_lake(stack, "show", sweep.name)
    assert "oracle" in shown["error"] and shown["error_class"] == "ConfigError"
    assert [(s["step"], s["status"]) for s in shown["steps"]] == [
        (CHECK, "failed"), *((s, "skipped") for s in STEPS)]
    assert stack.password not in json.dumps(shown)
