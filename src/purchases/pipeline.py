"""The pipeline, declared once as data; the local orchestrator runs it, AWS renders it to ASL.

Terms follow Amazon States Language: a Task with Parameters, Retry (ErrorEquals,
IntervalSeconds, BackoffRate, MaxAttempts) and Catch to a failure state. `to_asl()` renders
this very declaration as a Step Functions state machine, so the local runner and AWS cannot
drift apart: change a retry policy here and both follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TRANSIENT = "Purchases.Transient"
"""Error name of transient failures (the local runner matches errors.TransientError)."""

ALL_ERRORS = "States.ALL"
"""ASL's wildcard error name: matches every error."""

FAILURE_STATE = "FailureNotification"

RUN_PARAMETERS: tuple[str, ...] = ("year", "month", "day", "s3_path")
"""What a run is started with (the execution input): the ingestion date of the file that
triggered it and that file's URL (s3://... on AWS, a local path otherwise; None for a run
over every pending file)."""


@dataclass(frozen=True)
class Retry:
    """ASL Retrier: wait interval × backoff^(n-1) before retry n, at most max_attempts retries."""

    error_equals: tuple[str, ...] = (TRANSIENT,)
    interval_seconds: int = 2  # ASL requires a positive integer
    backoff_rate: float = 2.0
    max_attempts: int = 3  # retries after the first attempt, as in ASL

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry)."""
        return self.interval_seconds * self.backoff_rate ** (retry_number - 1)


@dataclass(frozen=True)
class Task:
    """ASL Task state: one pipeline step, the run arguments it receives, its retry and catch."""

    name: str
    resource: str  # "glue" (a Glue job on AWS) or "lambda"
    parameters: tuple[str, ...]  # the run arguments the step receives
    retry: Retry = field(default_factory=Retry)
    catch_to: str = FAILURE_STATE


PIPELINE: tuple[Task, ...] = (
    Task("bronze_to_silver", "glue", ("year", "month", "day", "s3_path")),
    Task("silver_to_gold", "glue", ("year", "month", "day")),
    Task("gold_to_staging", "glue", ("year", "month", "day")),
    Task("upsert", "lambda", ("year", "month", "day"),
         retry=Retry(interval_seconds=1, backoff_rate=2.0, max_attempts=5)),
)


def task(name: str) -> Task:
    """The declared task of that name."""
    for t in PIPELINE:
        if t.name == name:
            return t
    raise KeyError(name)


def step_input(t: Task, run_input: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a task receives from the run's input (its declared Parameters)."""
    return {p: run_input.get(p) for p in t.parameters}


def error_matches(error_equals: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """ASL matching: an ErrorEquals entry names the error, or is States.ALL."""
    return any(e == ALL_ERRORS or e in names for e in error_equals)


# --- Amazon States Language ------------------------------------------------------------------


def to_asl(
    *,
    name_prefix: str = "purchases",
    resources: Mapping[str, str] | None = None,
    comment: str = "purchases: bronze -> silver -> gold -> staging -> upsert",
) -> dict[str, Any]:
    """Render PIPELINE as an Amazon States Language state machine (a JSON-ready dict).

    Glue tasks run `glue:startJobRun.sync` with job `<name_prefix>-<task>` and receive their
    Parameters as `--<name>` job arguments; Lambda tasks run `lambda:invoke` with function
    `<name_prefix>-<task>` and receive them in the payload. `resources` overrides a task's
    job or function name (e.g. with an ARN). Every task retries per its Retry and catches
    every error to the failure state, keeping the error under `$.error`.
    """
    resources = resources or {}
    states: dict[str, Any] = {}
    for i, t in enumerate(PIPELINE):
        target = resources.get(t.name, f"{name_prefix}-{t.name}")
        if t.resource == "glue":
            state: dict[str, Any] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::glue:startJobRun.sync",
                "Parameters": {
                    "JobName": target,
                    "Arguments": {
                        **{f"--{p}.$": f"$.{p}" for p in t.parameters},
                        # One run id for every step of an execution: they share staging.
                        "--run_id.$": "$$.Execution.Name",
                        "--step": t.name,
                    },
                },
            }
        elif t.resource == "lambda":
            state = {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": target,
                    "Payload": {
                        **{f"{p}.$": f"$.{p}" for p in t.parameters},
                        "run_id.$": "$$.Execution.Name",
                        "step": t.name,
                    },
                },
            }
        else:  # pragma: no cover - guarded by the declaration above
            raise ValueError(f"task {t.name}: unknown resource {t.resource!r}")
        # Each step's output is discarded so every task receives the run's own input.
        state["ResultPath"] = None
        state["Retry"] = [{
            "ErrorEquals": list(t.retry.error_equals),
            "IntervalSeconds": t.retry.interval_seconds,
            "BackoffRate": t.retry.backoff_rate,
            "MaxAttempts": t.retry.max_attempts,
        }]
        state["Catch"] = [{"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error",
                           "Next": t.catch_to}]
        if i + 1 < len(PIPELINE):
            state["Next"] = PIPELINE[i + 1].name
        else:
            state["End"] = True
        states[t.name] = state
    for target in sorted({t.catch_to for t in PIPELINE}):
        states[target] = {
            "Type": "Fail",
            "Error": "Purchases.RunFailed",
            "Cause": "a pipeline step failed; the execution input and $.error say which",
        }
    return {"Comment": comment, "StartAt": PIPELINE[0].name, "States": states}
