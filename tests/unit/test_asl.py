"""The Step Functions definition rendered from the pipeline declaration (aws/asl.py), and
`purchases aws render`: shape, retries, the failure path, placeholders, deterministic bytes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from purchases.aws.asl import (
    DEFINITION_FILE,
    FILE_OR_SWEEP,
    NOTHING_PENDING,
    SWEEP_ROUTE,
    render,
    substitutions,
    to_asl,
)
from purchases.pipeline import (
    ALL_ERRORS,
    FAILURE_STATE,
    PIPELINE,
    RECORD_FAILURE,
    SWEEP,
    TASK_FAILED,
    TRANSIENT,
    task,
)

GLUE_ERRORS = {"Glue.ConcurrentRunsExceededException", "Glue.ThrottlingException",
               "Glue.InternalServiceException"}
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException",
                 "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
STEPS = [t.name for t in PIPELINE]
CHECK = SWEEP.check.name
TASKS = [*STEPS, CHECK]


@pytest.fixture(scope="module")
def states() -> dict[str, Any]:
    return to_asl()["States"]


def _chain(states: dict, name: str) -> list[str]:
    order = []
    while name:
        order.append(name)
        name = states[name].get("Next")
    return order


def test_the_steps_chain_in_order_and_every_state_is_reachable(states: dict) -> None:
    asl = to_asl()
    assert asl["StartAt"] == FILE_OR_SWEEP
    assert _chain(states, states[FILE_OR_SWEEP]["Default"]) == STEPS
    assert states["upsert"]["End"] is True
    assert set(states) == {*TASKS, *(f"{s}_failed" for s in TASKS), RECORD_FAILURE,
                           FAILURE_STATE, FILE_OR_SWEEP, SWEEP_ROUTE, NOTHING_PENDING}
    reached, todo = set(), [asl["StartAt"]]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        state = states[name]
        todo += [state.get("Next"), state.get("Default"),
                 *(c["Next"] for c in state.get("Catch", [])),
                 *(c["Next"] for c in state.get("Choices", []))]
        todo = [n for n in todo if n]
    assert reached == set(states)


def test_an_execution_with_a_file_runs_the_pipeline_and_a_sweep_checks_first(
    states: dict
) -> None:
    start = states[FILE_OR_SWEEP]
    # The run input is strings; the schedule's sweep has s3_path "" (deploy/template.yaml).
    assert start["Type"] == "Choice" and start["Default"] == STEPS[0]
    assert start["Choices"] == [{"Variable": "$.s3_path", "StringEquals": "", "Next": CHECK}]
    check = states[CHECK]
    assert check["Resource"] == "arn:aws:states:::lambda:invoke"
    assert check["Parameters"] == {"FunctionName": "${PendingFunctionArn}",
                                   "Payload": {"run_id.$": "$$.Execution.Name", "step": CHECK}}
    # Its counts go beside the run input, which every later step still reads whole.
    assert check["ResultPath"] == "$.pending"
    assert check["ResultSelector"] == {"files.$": "$.Payload.files",
                                       "batches.$": "$.Payload.batches"}
    assert check["Next"] == SWEEP_ROUTE and check["TimeoutSeconds"] == 900
    assert check["Catch"] == [{"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error",
                               "Next": f"{CHECK}_failed"}]
    route = states[SWEEP_ROUTE]
    assert route["Type"] == "Choice"
    assert route["Choices"] == [
        {"Variable": "$.pending.files", "NumericGreaterThan": 0, "Next": "bronze_to_silver"},
        {"Variable": "$.pending.batches", "NumericGreaterThan": 0, "Next": "gold_to_staging"}]
    # Nothing to do: the sweep ends there, before any Glue job or database write.
    assert route["Default"] == NOTHING_PENDING
    assert states[NOTHING_PENDING]["Type"] == "Succeed"
    assert _chain(states, "gold_to_staging") == STEPS[2:]


def test_glue_tasks_run_the_job_with_string_arguments(states: dict) -> None:
    for step in STEPS[:3]:
        state = states[step]
        assert state["Type"] == "Task"
        assert state["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
        args = state["Parameters"]["Arguments"]
        paths = {p: f"$.{p}" for p in task(step).parameters}
        assert args == {**{f"--{p}.$": v for p, v in paths.items()},
                        "--run_id.$": "$$.Execution.Name", "--step": step}
        assert all(isinstance(v, str) for v in args.values())
        assert state["TimeoutSeconds"] == 7200 and state["ResultPath"] is None
    assert "--s3_path.$" in states["bronze_to_silver"]["Parameters"]["Arguments"]
    assert "--s3_path.$" not in states["silver_to_gold"]["Parameters"]["Arguments"]
    assert states["bronze_to_silver"]["Parameters"]["JobName"] == "${BronzeToSilverJobName}"


def test_the_upsert_lambda_gets_the_run_input_in_its_payload(states: dict) -> None:
    up = states["upsert"]
    assert up["Resource"] == "arn:aws:states:::lambda:invoke"
    assert up["Parameters"] == {
        "FunctionName": "${UpsertFunctionArn}",
        "Payload": {"year.$": "$.year", "month.$": "$.month", "day.$": "$.day",
                    "run_id.$": "$$.Execution.Name", "step": "upsert"},
    }
    # Its result is dropped, like every step's: the next state still sees the run input.
    assert up["TimeoutSeconds"] == 900 and up["ResultPath"] is None


def _retriers(state: dict) -> list[dict]:
    for r in state["Retry"]:
        # ASL's and statelint's constraints: positive integer intervals, a real BackoffRate.
        assert isinstance(r["IntervalSeconds"], int) and r["IntervalSeconds"] >= 1
        assert isinstance(r["BackoffRate"], float) and r["BackoffRate"] >= 1.0
        assert isinstance(r["MaxAttempts"], int) and r["MaxAttempts"] >= 0
    return state["Retry"]


def test_glue_tasks_retry_service_errors_with_jitter_then_a_failed_run_twice(
    states: dict
) -> None:
    for step in STEPS[:3]:
        retriers = _retriers(states[step])
        *service, failed_run = retriers
        assert {e for r in service for e in r["ErrorEquals"]} == GLUE_ERRORS
        for r in service:
            assert r["JitterStrategy"] == "FULL" and r["MaxDelaySeconds"] >= r["IntervalSeconds"]
            assert r["BackoffRate"] > 1.0
        # States.TaskFailed matches every error but a timeout: last, and bounded small.
        assert failed_run["ErrorEquals"] == [TASK_FAILED] and failed_run["MaxAttempts"] == 2


@pytest.mark.parametrize("name", ["upsert", CHECK])
def test_lambda_tasks_retry_lambda_errors_and_the_declared_transient_retry(
    states: dict, name: str
) -> None:
    *service, own = _retriers(states[name])
    assert {e for r in service for e in r["ErrorEquals"]} == LAMBDA_ERRORS
    assert all(r["JitterStrategy"] == "FULL" and "MaxDelaySeconds" in r for r in service)
    declared = task(name).retry
    assert own == {"ErrorEquals": [TRANSIENT], "IntervalSeconds": declared.interval_seconds,
                   "BackoffRate": declared.backoff_rate, "MaxAttempts": declared.max_attempts}
    assert all(TASK_FAILED not in r["ErrorEquals"] for r in states[name]["Retry"])


def test_every_catch_records_the_failure_then_fails(states: dict) -> None:
    for step in TASKS:
        assert states[step]["Catch"] == [
            {"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error", "Next": f"{step}_failed"}]
        assert states[f"{step}_failed"] == {
            "Type": "Pass", "Comment": f"{step} failed: name the step for record_failure",
            "Result": step, "ResultPath": "$.failed_step", "Next": RECORD_FAILURE}
    record = states[RECORD_FAILURE]
    assert record["Resource"] == "arn:aws:states:::lambda:invoke"
    assert record["Parameters"] == {
        "FunctionName": "${RecordFailureFunctionArn}",
        "Payload": {"run_id.$": "$$.Execution.Name", "step.$": "$.failed_step",
                    "input.$": "$", "error.$": "$.error"}}
    assert {e for r in _retriers(record) for e in r["ErrorEquals"]} == LAMBDA_ERRORS
    assert record["Next"] == FAILURE_STATE and record["TimeoutSeconds"] == 900
    assert [c["Next"] for c in record["Catch"]] == [FAILURE_STATE]
    # Its own failure keeps the step's error where it was.
    assert record["Catch"][0]["ResultPath"] != "$.error"
    assert states[FAILURE_STATE]["Type"] == "Fail"
    assert all("TimeoutSeconds" in s for s in states.values() if s["Type"] == "Task")


def test_placeholders_are_exactly_the_substitutions() -> None:
    text = render(to_asl())
    assert set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text)) == set(substitutions()) == {
        "BronzeToSilverJobName", "SilverToGoldJobName", "GoldToStagingJobName",
        "UpsertFunctionArn", "PendingFunctionArn", "RecordFailureFunctionArn"}
    assert substitutions()["PendingFunctionArn"] == CHECK
    named = to_asl(resources={"upsert": "arn:aws:lambda:us-east-1:1:function:up"})["States"]
    assert named["upsert"]["Parameters"]["FunctionName"] == (
        "arn:aws:lambda:us-east-1:1:function:up")


def test_render_is_sorted_json_with_a_final_newline() -> None:
    text = render(to_asl())
    assert json.loads(text) == to_asl()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "purchases.cli", "aws", "render", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})


def test_render_command_prints_or_writes_the_same_bytes(tmp_path: Path) -> None:
    printed = _cli(cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == render(to_asl())
    for _ in range(2):  # a second run replaces the file with the same bytes
        wrote = _cli("--out", str(tmp_path / "out" / "deep"), cwd=tmp_path)
        assert wrote.returncode == 0, wrote.stderr
        assert (tmp_path / "out" / "deep" / DEFINITION_FILE).read_text() == printed.stdout
    assert sorted(p.name for p in (tmp_path / "out" / "deep").iterdir()) == [DEFINITION_FILE]


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_render_to_an_unusable_folder_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    done = _cli("--out", str(tmp_path / where), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: --out ") and str(tmp_path / where) in line
