"""The Lambda handlers against real AWS APIs (moto's server) and real databases.

* trigger: one Step Functions execution per new bronze file, with the run input; a delivery
  repeated or racing starts none more; what is not a bronze file of the lake starts none.
* pending (the sweep's check): the pending bronze files and unserved batches counted, with no
  S3 request its role in deploy/template.yaml does not allow, and nothing written.
* upsert: the password only in Secrets Manager; every committed batch applied once, on
  PostgreSQL and MariaDB; the password in no log record, return value or error.
* record_failure: the Catch path's failure in the lake's run history, shown by the CLI.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest
import s3fs
import sqlalchemy as sa
import yaml
from test_serving_secrets import Account, _mysql_account, _pg_account

from conftest import HEADER, unique_name
from purchases import history, secrets, serving, step_runner
from purchases.aws import glue_job, lambdas
from purchases.config import Settings, load_settings
from purchases.contract import LEDGER_TABLE
from purchases.errors import ConfigError
from purchases.pipeline import PIPELINE, SWEEP
from purchases.storage import Lake
from purchases.triggers import lake_bucket, parse_notifications

pytestmark = pytest.mark.s3

PURCHASES_BIN = str(Path(sys.executable).parent / "purchases")
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"
DAY = "bronze/year=2024/month=01/day=15"
GLUE_STEPS = ("bronze_to_silver", "silver_to_gold", "gold_to_staging")
PASS_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
ROLE = "arn:aws:iam::123456789012:role/purchases-states"


@pytest.fixture
def s3_lake(settings: Settings, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A lake at s3://<new bucket>/prod/purchases in moto; PURCHASES_LAKE names it."""
    bucket = unique_name("lake").replace("_", "-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/prod/purchases"
    monkeypatch.setenv("PURCHASES_LAKE", uri)
    monkeypatch.setenv("PURCHASES_HOME", str(settings.home))
    return Lake(uri)


@pytest.fixture
def state_machine(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(name=unique_name("purchases"), roleArn=ROLE,
                                   definition=json.dumps(PASS_MACHINE))["stateMachineArn"]
    monkeypatch.setenv("PURCHASES_STATE_MACHINE_ARN", arn)
    return arn


def bucket_of(lake: Lake) -> str:
    return lake.root.split("/", 1)[0]


def put(lake: Lake, rel: str, body: str) -> dict[str, str]:
    """Upload an object as a producer would; its key, ETag and a sequencer for the event."""
    key = f"{lake.root.split('/', 1)[1]}/{rel}"
    answer = boto3.client("s3").put_object(Bucket=bucket_of(lake), Key=key, Body=body.encode())
    put.sequence += 1  # type: ignore[attr-defined]
    return {"key": key, "eTag": answer["ETag"].strip('"'),
            "sequencer": f"{put.sequence:016X}"}  # type: ignore[attr-defined]


put.sequence = 0  # type: ignore[attr-defined]


def s3_record(bucket: str, obj: dict[str, str], *, encode: Any = quote_plus,
              name: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
                   "object": {**obj, "key": encode(obj["key"])}}}


def eventbridge(bucket: str, obj: dict[str, str]) -> dict[str, Any]:
    return {"version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "detail": {"bucket": {"name": bucket},
                       "object": {"key": obj["key"], "etag": obj["eTag"],
                                  "sequencer": obj["sequencer"]}}}


def executions(arn: str) -> dict[str, dict[str, Any]]:
    """Every execution of the state machine: name -> its input."""
    sfn = boto3.client("stepfunctions")
    found = {}
    for e in sfn.list_executions(stateMachineArn=arn)["executions"]:
        described = sfn.describe_execution(executionArn=e["executionArn"])
        found[e["name"]] = json.loads(described["input"])
    return found


def csv_rows(first_customer: int, rows: int, amount: str = "10.25", first_purchase: int = 0
             ) -> str:
    """Purchases of customers first_customer.. (one each), purchase ids first_purchase+1.."""
    first_purchase = first_purchase or first_customer
    return HEADER + "".join(
        f"{first_customer + i},Ann,Lee,ann{i}@x.io,{first_purchase + i},2024-01-10,{amount},AUD\n"
        for i in range(rows))


# --- trigger -------------------------------------------------------------------------------------


def test_trigger_starts_one_execution_per_new_bronze_file(s3_lake: Lake,
                                                          state_machine: str) -> None:
    bucket = bucket_of(s3_lake)
    a = put(s3_lake, f"{DAY}/my daily file.csv", csv_rows(1, 2))
    b = put(s3_lake, "bronze/2024/01/16/b+c.csv", csv_rows(10, 2))
    notes = put(s3_lake, f"{DAY}/notes.json", "{}")
    marker = put(s3_lake, f"{DAY}/", "")
    outside = {"key": "other/bronze/year=2024/month=01/day=15/x.csv", "eTag": "e",
               "sequencer": "01"}
    event = {"Records": [
        s3_record(bucket, a),  # `+` for space, %2F for /, %3D for =
        s3_record(bucket, b, encode=lambda k: quote(k, safe="/")),  # as S3 does: / kept
        s3_record(bucket, notes),
        s3_record(bucket, marker),
        s3_record(bucket, outside),
        s3_record("someone-elses-bucket", a),
    ]}
    result = lambdas.trigger(event, None)

    started = {s["path"]: s for s in result["started"]}
    assert sorted(started) == ["bronze/2024/01/16/b+c.csv", f"{DAY}/my daily file.csv"]
    url = f"s3://{bucket}/prod/purchases"
    assert executions(state_machine) == {
        started[f"{DAY}/my daily file.csv"]["execution_name"]: {
            "year": "2024", "month": "01", "day": "15",
            "s3_path": f"{url}/{DAY}/my daily file.csv"},
        started["bronze/2024/01/16/b+c.csv"]["execution_name"]: {
            "year": "2024", "month": "01", "day": "16",
            "s3_path": f"{url}/bronze/2024/01/16/b+c.csv"},
    }
    for s in result["started"]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", s["execution_name"]), s
    assert started[f"{DAY}/my daily file.csv"]["execution_name"].startswith(
        "20240115-my_daily_file-")
    reasons = {r["key"]: r["reason"] for r in result["skipped"]}
    assert reasons[notes["key"]].startswith("not a CSV file")
    assert reasons[marker["key"]] == "a folder marker, not a file"
    assert reasons[outside["key"]].startswith("outside the lake")
    assert any("not the lake's" in r["reason"] for r in result["skipped"])
    assert len(result["skipped"]) == 4
    json.dumps(result)  # what a Lambda returns must be JSON

    # Delivered again (S3 delivers at least once): the same names, nothing new.
    again = lambdas.trigger(event, None)
    assert {s["execution_name"] for s in again["started"]} == {
        s["execution_name"] for s in result["started"]}
    assert len(executions(state_machine)) == 2
    # An execution that ended badly (a step killed after the commit point) gets one
    # follow-up per redelivery round, named <name>-r<k>, which serves what it committed.
    sfn = boto3.client("stepfunctions")
    first = started[f"{DAY}/my daily file.csv"]
    sfn.stop_execution(executionArn=first["execution_arn"])
    late = lambdas.trigger(event, None)
    assert {s["execution_name"] for s in late["started"]} == {
        first["execution_name"] + "-r1", started["bronze/2024/01/16/b+c.csv"]["execution_name"]}
    follow_up = next(s for s in late["started"] if s["execution_name"].endswith("-r1"))
    assert follow_up["s3_path"] == first["s3_path"]
    assert len(executions(state_machine)) == 3
    # While the follow-up runs (or once it succeeded), a redelivery starts nothing more.
    again_late = lambdas.trigger(event, None)
    assert len(executions(state_machine)) == 3
    assert any(r["reason"].startswith("already handled: execution 20240115-my_daily_file-")
               for r in again_late["skipped"])
    sfn.stop_execution(executionArn=follow_up["execution_arn"])
    third = lambdas.trigger(event, None)
    assert first["execution_name"] + "-r2" in {s["execution_name"] for s in third["started"]}
    assert len(executions(state_machine)) == 4

    # The same key written again is a new creation: a new execution.
    rewritten = put(s3_lake, f"{DAY}/my daily file.csv", csv_rows(1, 3))
    newer = lambdas.trigger({"Records": [s3_record(bucket, rewritten)]}, None)
    assert len(newer["started"]) == 1 and len(executions(state_machine)) == 5


def test_test_event_and_nothing_new_start_nothing(s3_lake: Lake, state_machine: str) -> None:
    bucket = bucket_of(s3_lake)
    assert lake_bucket(s3_lake) == (bucket, "prod/purchases")
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-01-15T00:00Z",
                  "Bucket": bucket, "RequestId": "r", "HostId": "h"}
    result = lambdas.trigger(test_event, None)
    assert result["started"] == [] and result["skipped"][0]["reason"].startswith("s3:TestEvent")
    gone = {"key": f"prod/purchases/{DAY}/never-uploaded.csv", "eTag": "e", "sequencer": "01"}
    result = lambdas.trigger({"Records": [s3_record(bucket, gone)]}, None)
    assert result["skipped"] == [{"key": gone["key"], "reason": "no longer in the lake"}]
    assert executions(state_machine) == {}


def test_racing_deliveries_and_eventbridge_start_one_execution(
    s3_lake: Lake, state_machine: str
) -> None:
    bucket = bucket_of(s3_lake)
    obj = put(s3_lake, f"{DAY}/a.csv", csv_rows(1, 2))
    event = {"Records": [s3_record(bucket, obj)]}
    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver(e: dict[str, Any]) -> None:
        barrier.wait()
        try:
            results.append(lambdas.trigger(e, None))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    # Two S3 deliveries and two EventBridge deliveries of the one creation, at once.
    threads = [threading.Thread(target=deliver, args=(e,))
               for e in (event, event, eventbridge(bucket, obj), eventbridge(bucket, obj))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 4
    (name,) = executions(state_machine)
    assert executions(state_machine)[name]["s3_path"] == f"s3://{bucket}/prod/purchases/{DAY}/a.csv"
    assert {s["execution_name"] for r in results for s in r["started"]} == {name}


def test_execution_name_is_deterministic_and_valid() -> None:
    long_name = "x" * 300 + " ümlaut & (1).CSV.GZ"
    for key in (f"{DAY}/{long_name}", f"{DAY}/a.csv", "bronze/2024/01/16/b.csv.gz"):
        event = {"Records": [s3_record("b", {"key": key, "eTag": "e", "sequencer": "01"})]}
        (first,), _ = parse_notifications(event, "b")
        (second,), _ = parse_notifications(json.loads(json.dumps(event)), "b")
        name = lambdas.execution_name(first)
        assert name == lambdas.execution_name(second)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name), name
    other = parse_notifications(
        {"Records": [s3_record("b", {"key": f"{DAY}/a.csv", "eTag": "e", "sequencer": "02"})]},
        "b")[0][0]
    assert lambdas.execution_name(other) != lambdas.execution_name(
        parse_notifications({"Records": [s3_record(
            "b", {"key": f"{DAY}/a.csv", "eTag": "e", "sequencer": "01"})]}, "b")[0][0])


# --- pending (the sweep's check) ------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (`!Sub s` -> {"Fn::Sub": s}, ...)."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: {
    f"Fn::{suffix}": loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node, deep=True)})


def _pending_role_allows() -> dict[str, list[str]]:
    """The pending function's role in deploy/template.yaml: S3 action -> the lake-relative key
    patterns it is allowed on ("" for the bucket itself)."""
    with TEMPLATE.open(encoding="utf-8") as fh:
        template = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    resources = template["Resources"]
    role = resources[resources["PendingFunction"]["Properties"]["Role"]["Fn::GetAtt"]
                     .split(".")[0]]
    allowed: dict[str, list[str]] = {}
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            st = statement["Fn::If"][1] if "Fn::If" in statement else statement
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            targets = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            for action in (a for a in actions if a.startswith("s3:")):
                for t in targets:
                    key = "" if "Fn::GetAtt" in t else t["Fn::Sub"].removeprefix(
                        "${LakeBucket.Arn}/")
                    allowed.setdefault(action, []).append(key)
    return allowed


# What each S3 API call s3fs makes needs (HeadObject is authorised as GetObject).
_S3_ACTION = {"head_object": "s3:GetObject", "get_object": "s3:GetObject",
              "list_objects_v2": "s3:ListBucket", "head_bucket": "s3:ListBucket"}


def test_pending_counts_files_and_unserved_batches_within_its_role(
    s3_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PURCHASES_DATABASE_URL", f"sqlite:///{tmp_path / 'serving.db'}")
    prefix = s3_lake.root.split("/", 1)[1] + "/"
    calls: list[tuple[str, str]] = []
    real_call = s3fs.S3FileSystem._call_s3

    async def recorded(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        # Every S3 request the handler's file system makes, then the request itself.
        key = kwargs.get("Key", kwargs.get("Prefix"))
        calls.append((method, "" if key is None else str(key).removeprefix(prefix)))
        return await real_call(self, method, *args, **kwargs)

    def check(**expected: Any) -> dict[str, Any]:
        with monkeypatch.context() as m:
            m.setattr(s3fs.S3FileSystem, "_call_s3", recorded)
            out = lambdas.pending({"run_id": "sweep-1", "step": SWEEP.check.name}, None)
        assert {k: out[k] for k in expected} == expected, out
        return out

    event = {"run_id": "sweep-1", "step": SWEEP.check.name}
    assert check(files=0, batches=0) == {"run_id": "sweep-1", "files": 0, "batches": 0,
                                         "pending_files": [], "unserved_batches": []}
    a, b = f"{DAY}/a.csv", "bronze/year=2024/month=01/day=16/b.csv"
    put(s3_lake, a, csv_rows(1, 2, "10.25"))
    put(s3_lake, f"{DAY}/notes.txt", "not data")
    check(files=1, batches=0, pending_files=[a])
    # Processed and committed, not staged: what the sweep routes to gold_to_staging.
    _glue_steps(s3_lake, "exec-a", a, steps=("bronze_to_silver", "silver_to_gold"))
    check(files=0, batches=1, unserved_batches=[1])
    # The same bytes uploaded again (a new version of the object) are not new; new bytes are.
    put(s3_lake, a, csv_rows(1, 2, "10.25"))
    put(s3_lake, b, csv_rows(5, 1, "3.00"))
    check(files=1, batches=1, pending_files=[b])
    put(s3_lake, a, csv_rows(1, 2, "99.99"))
    out = check(files=2, batches=1)
    assert sorted(out["pending_files"]) == [a, b]
    _glue_steps(s3_lake, "exec-a", a, steps=("gold_to_staging",))
    lambdas.upsert({"run_id": "exec-a", "step": "upsert"}, None)
    check(files=2, batches=0)

    # Each request the checks made is one its role allows: read only, in bronze/ and the log.
    allowed = _pending_role_allows()
    assert calls and {m for m, _ in calls} <= set(_S3_ACTION), calls
    for method, key in calls:
        action = _S3_ACTION[method]
        if action == "s3:ListBucket":
            assert allowed[action] == [""], allowed
        else:
            assert any(fnmatch.fnmatchcase(key, p) for p in allowed[action]), (method, key)
    assert set(allowed) == {"s3:ListBucket", "s3:GetObject"}

    # A payload for another step, a broken run id: the product's error, named for the Retry.
    for bad, error in (({"run_id": "x", "step": "upsert"}, "InputError"),
                       ({"run_id": "../x", "step": SWEEP.check.name}, "InputError")):
        with pytest.raises(Exception) as failed:
            lambdas.pending(bad, None)
        assert type(failed.value).__name__ == error, failed.value
    monkeypatch.delenv("PURCHASES_DATABASE_URL")
    with pytest.raises(Exception, match="PURCHASES_DATABASE_SECRET_ARN") as failed:
        lambdas.pending(event, None)
    assert type(failed.value).__name__ == "ConfigError"


# --- upsert --------------------------------------------------------------------------------------


@pytest.fixture(params=[
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
])
def db_account(request: pytest.FixtureRequest) -> Iterator[Account]:
    """A login with a password and a database it owns, on each server."""
    if request.param == "postgresql":
        yield from _pg_account(request.getfixturevalue("postgres_url"))
    else:
        yield from _mysql_account(request.getfixturevalue("mysql_url"))


def _secret(account: Account, **changes: Any) -> str:
    """A Secrets Manager secret in the RDS shape for the account; returns its ARN."""
    url = sa.make_url(account.url)
    engine = "postgres" if url.get_backend_name() == "postgresql" else "mariadb"
    value = {"engine": engine, "host": url.host, "port": url.port or
             (5432 if engine == "postgres" else 3306), "username": url.username,
             "password": account.password, "dbname": url.database, **changes}
    return boto3.client("secretsmanager").create_secret(
        Name=unique_name("purchases-db"), SecretString=json.dumps(value))["ARN"]


def _glue_steps(lake: Lake, run_id: str, rel: str, steps: tuple[str, ...] = GLUE_STEPS
                ) -> None:
    """The Glue steps of one execution, as the state machine passes their arguments."""
    day = rel.split("/")[1:4]
    for step in steps:
        summary = glue_job.run({
            "step": step, "run_id": run_id, "engine": "duckdb", "s3_path": lake.url(rel),
            "year": day[0][5:], "month": day[1][6:], "day": day[2][4:],
        })
        assert summary["status"] == "succeeded", summary


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upsert_with_the_password_only_in_secrets_manager(
    db_account: Account, s3_lake: Lake, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = db_account
    secret, secret_db_down = _secret(account), _secret(account, port=_closed_port())
    # Every log record from here on, botocore's request and response dumps included.
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PURCHASES_DATABASE_SECRET_ARN", secret)
    monkeypatch.delenv("PURCHASES_DATABASE_URL", raising=False)
    monkeypatch.delenv("PURCHASES_DATABASE_PASSWORD", raising=False)
    lake = s3_lake
    files = {
        "exec-a": (f"{DAY}/a.csv", csv_rows(1, 3, "10.25", 100)),
        "exec-b": ("bronze/year=2024/month=01/day=16/b.csv",  # customers 2, 3 again; 4 new
                   csv_rows(2, 3, "0.10", 200)),
    }
    for rel, body in files.values():
        put(lake, rel, body)
    # Executions A and B both committed and staged (the Glue job's gold_to_staging takes the
    # database from the secret too); A's upsert never ran.
    _glue_steps(lake, "exec-a", files["exec-a"][0])
    _glue_steps(lake, "exec-b", files["exec-b"][0])

    # B's upsert in a fresh interpreter, logging everything to stderr: it applies both
    # batches, and no engine is imported on the way (nor by the other two handlers).
    script = (
        "import json, logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "import purchases.aws.lambdas as l\n"
        "out = [l.upsert({'run_id': 'exec-b', 'step': 'upsert', 'year': '2024',"
        " 'month': '01', 'day': '16'}, None)]\n"
        "out.append(l.record_failure({'run_id': 'exec-z', 'step': 'upsert',"
        " 'error': {'Error': 'States.Timeout', 'Cause': 'timed out'}}, None))\n"
        "out.append(l.trigger({'Event': 's3:TestEvent'}, None))\n"
        "out.append(l.pending({'run_id': 'sweep-c', 'step': 'find_pending'}, None))\n"
        "engines = sorted({'duckdb', 'pyspark', 'pyarrow'} & set(sys.modules))\n"
        "print(json.dumps({'out': out, 'engines': engines}))\n"
    )
    env = {**os.environ, "PURCHASES_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:x:y"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["engines"] == []
    first = child["out"][0]
    assert first == {"step": "upsert", "run_id": "exec-b", "status": "succeeded",
                     "counts": {"customers_upserted": 3 + 3}}
    # The sweep's check, after that upsert: both files processed, both batches applied.
    assert child["out"][3] == {"run_id": "sweep-c", "files": 0, "batches": 0,
                               "pending_files": [], "unserved_batches": []}
    assert "GetSecretValue" in done.stderr  # the log was on
    assert account.password not in done.stdout + done.stderr

    # A's upsert, late (or any re-invocation): nothing left to apply.
    again = lambdas.upsert({"run_id": "exec-a", "step": "upsert", "year": "2024",
                            "month": "01", "day": "15"}, None)
    assert again == {"step": "upsert", "run_id": "exec-a", "status": "succeeded",
                     "counts": {"customers_upserted": 0}}

    # Exactly once: one ledger row per batch, totals to the cent.
    admin = sa.create_engine(account.url)
    try:
        with admin.connect() as con:
            ledger = con.exec_driver_sql(
                f"SELECT batch_id, run_id, customers FROM {LEDGER_TABLE} "
                "ORDER BY batch_id").all()
            summary = dict(con.exec_driver_sql(
                "SELECT customer_id, total_spent_aud FROM customer_purchase_summary").all())
    finally:
        admin.dispose()
    assert [tuple(r) for r in ledger] == [(1, "exec-a", 3), (2, "exec-b", 3)]
    assert summary == {1: Decimal("10.25"), 2: Decimal("10.35"), 3: Decimal("10.35"),
                       4: Decimal("0.10")}
    # The CLI takes the database from the secret the same way.
    top = _cli("top", "-n", "2", "-f", "json")
    assert [(r["customer_id"], r["total_spent_aud"]) for r in json.loads(top.stdout)] == [
        (2, "10.35"), (3, "10.35")]
    assert account.password not in top.stdout + top.stderr

    # The database down: a transient failure, named so the task's Retry matches it.
    monkeypatch.setenv("PURCHASES_DATABASE_SECRET_ARN", secret_db_down)
    with pytest.raises(Exception) as failed:
        lambdas.upsert({"run_id": "exec-d", "step": "upsert"}, None)
    assert type(failed.value).__name__ == "Purchases.Transient"
    assert str(failed.value).startswith("database ") and ":***@127.0.0.1" in str(failed.value)
    shown = "".join(traceback.format_exception(failed.value))
    assert lake.read_json("_state/runs/exec-d.json")["failed_step"] == "upsert"

    texts = [json.dumps(again), shown, *(r.getMessage() for r in caplog.records),
             *(json.dumps(lake.read_json(p)) for p in lake.list_files("_state/runs"))]
    assert any("GetSecretValue" in t for t in texts)  # botocore's DEBUG lines were captured
    assert [t[:300] for t in texts if account.password in t] == []


def test_secret_shapes_to_urls() -> None:
    url = secrets.to_url({"engine": "postgres", "host": "db.x", "port": "5433", "username": "u",
                          "password": "p@ss/w:rd", "dbname": "d"}, "S")
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg", "db.x", 5433, "d")
    assert url.password == "p@ss/w:rd" and "p@ss" not in serving.masked_url(url)
    maria = secrets.to_url({"engine": "mariadb", "host": "h", "username": "u", "password": "p",
                            "dbname": "d"}, "S")
    assert (maria.drivername, maria.port) == ("mysql+pymysql", 3306)
    # An RDS managed master-user secret holds only the login: the URL gives the rest.
    managed = secrets.to_url({"username": "admin", "password": "pw"}, "S",
                             "postgresql://h.example:6543/sales?sslmode=require")
    assert managed.render_as_string(hide_password=False) == (
        "postgresql://admin:pw@h.example:6543/sales?sslmode=require")
    full = {"engine": "postgres", "host": "h", "username": "u", "password": "hunter2",
            "dbname": "d"}
    for bad, says in (({**full, "engine": "oracle"}, "engine 'oracle' is not served"),
                      ({k: v for k, v in full.items() if k != "host"}, "no 'host'"),
                      ({**full, "password": ""}, "no 'password'"),
                      ({**full, "port": "54x"}, '"port" is not a number'),
                      ({k: v for k, v in full.items() if k != "engine"}, 'no "engine"')):
        with pytest.raises(ConfigError, match=re.escape(says)) as refused:
            secrets.to_url(bad, "S")
        assert "hunter2" not in str(refused.value)


def test_secret_from_secrets_manager_in_the_serving_url(aws_env: str, tmp_path: Path) -> None:
    manager = boto3.client("secretsmanager")
    plain = manager.create_secret(Name=unique_name("plain"), SecretString="hunter2")["ARN"]
    with pytest.raises(ConfigError, match="not a JSON object") as refused:
        secrets.database_url(plain)
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConfigError, match="ResourceNotFoundException"):
        secrets.database_url(unique_name("no-such-secret"))
    good = manager.create_secret(Name=unique_name("db"), SecretString=json.dumps({
        "engine": "mysql", "host": "h", "port": 3307, "username": "u", "password": "hunter2",
        "dbname": "d"}))["ARN"]
    settings = load_settings(home=tmp_path, database_secret_arn=good)
    url = serving.database_url(settings)
    assert url.password == "hunter2"
    assert serving.masked_url(url) == "mysql+pymysql://u:***@h:3307/d?charset=utf8mb4"


def test_a_secret_is_fetched_from_the_region_its_arn_names(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No default region set (a laptop without an AWS profile): the ARN says where the secret
    is; a bare name then cannot be looked up, and is said so in one line."""
    arn = boto3.client("secretsmanager", region_name="eu-west-2").create_secret(
        Name=unique_name("db"), SecretString=json.dumps({
            "engine": "postgres", "host": "h", "username": "u", "password": "hunter2",
            "dbname": "d"}))["ARN"]
    assert ":eu-west-2:" in arn
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # no profile's region either
    url = secrets.database_url(arn)
    assert (url.host, url.password) == ("h", "hunter2")
    with pytest.raises(ConfigError) as refused:
        secrets.database_url("garbage")
    assert str(refused.value) == (
        "PURCHASES_DATABASE_SECRET_ARN garbage: AWS secretsmanager: no region is set: set "
        "AWS_REGION (or AWS_DEFAULT_REGION, or a region in the AWS profile) (or give the "
        "secret's ARN: it names it)")


# --- record_failure ------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([PURCHASES_BIN, *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_record_failure_shows_in_purchases_runs(s3_lake: Lake) -> None:
    run_in = {"year": "2024", "month": "01", "day": "15",
              "s3_path": f"{s3_lake.url(DAY)}/a.csv"}
    glue_cause = {"JobName": "purchases-silver_to_gold", "Id": "jr_0123", "JobRunState": "FAILED",
                  "ErrorMessage": "PermanentError: gold is not writable",
                  "Arguments": {"--database_url": "postgresql://u:hunter2@db/x"}}
    event = {"run_id": "20240115-a-0123abcd", "step": "silver_to_gold",
             "input": {**run_in, "error": {"Error": "States.TaskFailed"}},
             "error": {"Error": "States.TaskFailed", "Cause": json.dumps(glue_cause)}}
    first = lambdas.record_failure(event, None)
    assert first["recorded"] is True
    assert first["error"] == ("Glue job run purchases-silver_to_gold jr_0123 FAILED: "
                              "PermanentError: gold is not writable")
    second = lambdas.record_failure(json.loads(json.dumps(event)), None)
    assert second["recorded"] is False and second["error"] == first["error"]

    # A Lambda's failure, the step taken from the history the step itself left.
    lambda_cause = {"errorType": "Purchases.Transient", "errorMessage":
                    "database postgresql+psycopg://u:***@db/x: connection refused",
                    "stackTrace": ["..."]}
    lambdas.record_failure({"run_id": "exec-up", **run_in, "step": "upsert",
                            "error": {"Error": "Purchases.Transient",
                                      "Cause": json.dumps(lambda_cause)}}, None)

    runs = json.loads(_cli("runs", "--format", "json").stdout)
    assert [(r["run_id"], r["status"], r["trigger"], r["failed_step"]) for r in runs] == [
        ("20240115-a-0123abcd", "failed", "aws", "silver_to_gold"),
        ("exec-up", "failed", "aws", "upsert"),
    ]
    text = _cli("runs", "show", "20240115-a-0123abcd").stdout
    assert "failed step: silver_to_gold" in text and "gold is not writable" in text
    assert "hunter2" not in text

    shown = history.load(s3_lake, "20240115-a-0123abcd")
    assert shown is not None and shown.error_class == "States.TaskFailed"
    assert shown.input == run_in
    assert {s.step: s.status for s in shown.steps} == {
        "bronze_to_silver": "pending", "silver_to_gold": "failed",
        "gold_to_staging": "skipped", "upsert": "skipped"}
    up = history.load(s3_lake, "exec-up")
    assert up is not None and (up.error_class, up.error) == (
        "Purchases.Transient", "database postgresql+psycopg://u:***@db/x: connection refused")


def test_record_failure_keeps_what_the_step_recorded(s3_lake: Lake) -> None:

    record = step_runner.new_record("exec-g", PIPELINE, trigger="glue",
                                    run_input={"year": "2024", "month": "01", "day": "15",
                                               "s3_path": None})
    record.steps[0].status = "succeeded"
    record.steps[1].status = "running"  # the Glue job was killed (timeout) in this step
    history.save(s3_lake, record)
    history.mark_running(s3_lake, "exec-g")
    result = lambdas.record_failure(
        {"run_id": "exec-g", "error": {"Error": "States.Timeout", "Cause": None}}, None)
    assert (result["step"], result["error_class"], result["error"]) == (
        "silver_to_gold", "States.Timeout", "States.Timeout")
    saved = history.load(s3_lake, "exec-g")
    assert saved is not None and saved.trigger == "glue" and saved.status == "failed"
    assert [s.status for s in saved.steps] == ["succeeded", "failed", "skipped", "skipped"]
    assert history.running(s3_lake) == []
    with pytest.raises(Exception, match="run_id"):
        lambdas.record_failure({"run_id": "../../etc", "step": "upsert"}, None)
