"""The pipeline is declared once; its ASL rendering chains, retries and catches as declared."""

from __future__ import annotations

import json

import pytest

from purchases.aws.asl import to_asl
from purchases.errors import PermanentError, TransientError
from purchases.pipeline import (
    ALL_ERRORS,
    FAILURE_STATE,
    PIPELINE,
    TRANSIENT,
    Retry,
    error_matches,
    step_input,
    task,
)
from purchases.step_runner import error_names


def test_declaration_is_the_four_steps_in_order() -> None:
    assert [t.name for t in PIPELINE] == [
        "bronze_to_silver", "silver_to_gold", "gold_to_staging", "upsert"
    ]
    assert task("upsert").resource == "lambda"
    with pytest.raises(KeyError):
        task("nope")


def test_asl_chains_the_declared_steps_and_ends() -> None:
    asl = to_asl()
    states = asl["States"]
    assert asl["StartAt"] == PIPELINE[0].name
    name, order = asl["StartAt"], []
    while True:
        order.append(name)
        state = states[name]
        assert state["Type"] == "Task"
        if state.get("End"):
            assert "Next" not in state
            break
        name = state["Next"]
    assert order == [t.name for t in PIPELINE]
    # Nothing unreachable but the failure state.
    assert set(states) == {*order, FAILURE_STATE}
    json.dumps(asl)  # JSON-ready as Step Functions wants it


def test_asl_retries_exactly_as_declared() -> None:
    states = to_asl()["States"]
    for t in PIPELINE:
        (retry,) = states[t.name]["Retry"]
        assert retry == {
            "ErrorEquals": list(t.retry.error_equals),
            "IntervalSeconds": t.retry.interval_seconds,
            "BackoffRate": t.retry.backoff_rate,
            "MaxAttempts": t.retry.max_attempts,
        }
        # ASL's constraints on a Retrier.
        assert isinstance(retry["IntervalSeconds"], int) and retry["IntervalSeconds"] >= 1
        assert retry["BackoffRate"] >= 1.0 and retry["MaxAttempts"] >= 0
    assert states["upsert"]["Retry"][0]["MaxAttempts"] == 5  # its own policy, not the default


def test_asl_catches_every_error_to_the_failure_state() -> None:
    states = to_asl()["States"]
    for t in PIPELINE:
        assert states[t.name]["Catch"] == [
            {"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error", "Next": t.catch_to}
        ]
    assert states[FAILURE_STATE]["Type"] == "Fail"


def test_asl_passes_each_task_its_declared_parameters() -> None:
    states = to_asl(name_prefix="acme", resources={"upsert": "arn:aws:lambda:fn"})["States"]
    b2s = states["bronze_to_silver"]
    assert b2s["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert b2s["Parameters"]["JobName"] == "acme-bronze_to_silver"
    assert b2s["Parameters"]["Arguments"] == {
        "--year.$": "$.year", "--month.$": "$.month", "--day.$": "$.day",
        "--s3_path.$": "$.s3_path", "--run_id.$": "$$.Execution.Name",
        "--step": "bronze_to_silver",
    }
    up = states["upsert"]
    assert up["Resource"] == "arn:aws:states:::lambda:invoke"
    assert up["Parameters"] == {
        "FunctionName": "arn:aws:lambda:fn",
        "Payload": {"year.$": "$.year", "month.$": "$.month", "day.$": "$.day",
                    "run_id.$": "$$.Execution.Name", "step": "upsert"},
    }
    # A step's output never replaces the run input the next step reads its parameters from.
    assert all(states[t.name]["ResultPath"] is None for t in PIPELINE)


def test_local_runner_reads_the_same_terms() -> None:
    assert Retry(interval_seconds=2, backoff_rate=2.0).delay(1) == 2
    assert Retry(interval_seconds=2, backoff_rate=2.0).delay(3) == 8
    run_input = {"year": "2024", "month": "01", "day": "15", "s3_path": "/lake/x.csv"}
    assert step_input(task("silver_to_gold"), run_input) == {
        "year": "2024", "month": "01", "day": "15"
    }
    assert step_input(task("bronze_to_silver"), run_input)["s3_path"] == "/lake/x.csv"
    assert error_matches((TRANSIENT,), error_names(TransientError("x")))
    assert error_matches((TRANSIENT,), error_names(ConnectionResetError()))
    assert not error_matches((TRANSIENT,), error_names(PermanentError("x")))
    assert error_matches((ALL_ERRORS,), error_names(PermanentError("x")))
    assert error_matches(("PermanentError",), error_names(PermanentError("x")))
