"""The pipeline is declared once: the steps, their run arguments and the retry terms that the
local runner and the AWS rendering (tests/unit/test_asl.py) both read."""

from __future__ import annotations

import pytest

from purchases.errors import PermanentError, TransientError
from purchases.pipeline import (
    ALL_ERRORS,
    PIPELINE,
    RESOURCES,
    RUN_PARAMETERS,
    SWEEP,
    TASK_FAILED,
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
    assert [t.resource for t in PIPELINE] == ["glue", "glue", "glue", "lambda"]
    assert all(t.resource in RESOURCES for t in PIPELINE)
    with pytest.raises(KeyError):
        task("nope")


def test_the_sweep_checks_with_a_lambda_and_starts_at_a_declared_step() -> None:
    steps = [t.name for t in PIPELINE]
    assert SWEEP.file_parameter in RUN_PARAMETERS
    check = SWEEP.check
    assert check.name not in steps and task(check.name) is check
    # A Lambda: an idle sweep must not start a Glue job to find out it is idle.
    assert check.resource == "lambda" and check.parameters == ()
    assert check.aws_retries == (*RESOURCES["lambda"].retries, check.retry)
    assert check.retry.error_equals == (TRANSIENT,)
    # Pending files need the whole pipeline; unserved batches only the serving steps, which
    # apply every committed batch the database has not applied.
    assert [(r.count, r.step) for r in SWEEP.routes] == [
        ("files", "bronze_to_silver"), ("batches", "gold_to_staging")]
    assert all(r.step in steps for r in SWEEP.routes)
    assert SWEEP.routes[0].step == steps[0]
    assert SWEEP.result not in RUN_PARAMETERS and SWEEP.result not in ("error", "failed_step")


def test_every_step_retries_its_transient_failures() -> None:
    for t in PIPELINE:
        assert t.retry.error_equals == (TRANSIENT,)
        assert t.retry.jitter is False  # the local runner's waits are the declared ones
    assert task("upsert").retry.max_attempts == 5  # its own policy, not the default


def test_local_runner_reads_the_same_terms() -> None:
    assert Retry(interval_seconds=2, backoff_rate=2.0).delay(1) == 2
    assert Retry(interval_seconds=2, backoff_rate=2.0).delay(3) == 8
    capped = Retry(interval_seconds=30, backoff_rate=2.0, max_delay_seconds=100)
    assert [capped.delay(n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
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


def test_aws_retries_are_the_services_then_the_steps_own() -> None:
    upsert = task("upsert")
    assert upsert.aws_retries == (*RESOURCES["lambda"].retries, upsert.retry)
    for t in PIPELINE[:3]:
        # A Glue job run's failure is States.TaskFailed whatever its cause: the step's own
        # Retry cannot match there, a small bound on failed runs stands for it.
        assert t.aws_retries == RESOURCES["glue"].retries
        assert t.aws_retries[-1].error_equals == (TASK_FAILED,)
        assert t.aws_retries[-1].max_attempts == 2
    for t in PIPELINE:
        # States.TaskFailed matches every error: only the last retrier may name it.
        assert all(TASK_FAILED not in r.error_equals for r in t.aws_retries[:-1])
