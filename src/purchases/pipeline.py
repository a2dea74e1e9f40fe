"""The pipeline, declared once as data; the local orchestrator runs it, AWS renders it to ASL.

Terms follow Amazon States Language: a Task with Parameters, Retry (ErrorEquals,
IntervalSeconds, BackoffRate, MaxAttempts) and Catch to a failure state.
`purchases.aws.asl.to_asl()` renders this very declaration as a Step Functions state machine,
so the local runner and AWS cannot drift apart: change a retry policy here and both follow.
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
