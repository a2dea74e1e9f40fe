"""The pipeline, declared once as data; the local orchestrator runs it, AWS renders it to ASL.

Terms follow Amazon States Language: a Task with Parameters, Retry (ErrorEquals,
IntervalSeconds, BackoffRate, MaxAttempts) and Catch to a failure state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRANSIENT = "Purchases.Transient"
"""Error name of transient failures (the local runner matches errors.TransientError)."""


@dataclass(frozen=True)
class Retry:
    error_equals: tuple[str, ...] = (TRANSIENT,)
    interval_seconds: float = 2.0
    backoff_rate: float = 2.0
    max_attempts: int = 3  # retries after the first attempt, as in ASL


@dataclass(frozen=True)
class Task:
    name: str
    resource: str  # "glue" (a Glue job on AWS) or "lambda"
    parameters: tuple[str, ...]  # the run arguments the step receives
    retry: Retry = field(default_factory=Retry)
    catch_to: str = "FailureNotification"


PIPELINE: tuple[Task, ...] = (
    Task("bronze_to_silver", "glue", ("year", "month", "day", "s3_path")),
    Task("silver_to_gold", "glue", ("year", "month", "day")),
    Task("gold_to_staging", "glue", ("year", "month", "day")),
    Task("upsert", "lambda", ("year", "month", "day"),
         retry=Retry(interval_seconds=1.0, backoff_rate=2.0, max_attempts=5)),
)
