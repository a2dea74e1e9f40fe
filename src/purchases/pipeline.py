"""The pipeline, declared once as data; the local orchestrator runs it, AWS renders it to ASL.

Terms follow Amazon States Language: a Task with Parameters, Retry (ErrorEquals,
IntervalSeconds, BackoffRate, MaxAttempts, MaxDelaySeconds, JitterStrategy) and Catch to a
failure path. `purchases.aws.asl.to_asl()` renders this very declaration as a Step Functions
state machine, so the local runner and AWS cannot drift apart: change a retry policy here and
both follow.

Each task has its own Retry, the one for the step's transient failures (`TRANSIENT`): the local
runner applies it, and so does Step Functions when the service reports the step's error under
its own name (a Lambda handler's error type). On AWS a task is also retried on the errors of
the service that runs it (`RESOURCES`): throttling, a busy job, and for Glue a failed job run,
which Glue reports as `States.TaskFailed` whatever the script's exit status was.

`SWEEP` is for AWS alone: how an execution without a file (the hourly sweep) first counts
what is waiting and starts at the step that has work, so that an idle sweep starts no Glue job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TRANSIENT = "Purchases.Transient"
"""Error name of transient failures (the local runner matches errors.TransientError)."""

ALL_ERRORS = "States.ALL"
"""ASL's wildcard error name: matches every error."""

TASK_FAILED = "States.TaskFailed"
"""ASL's error of a failed Task (a Glue job run that ended FAILED). In a Retrier it matches
every error but States.Timeout, so it must come last in a Retry list."""

RECORD_FAILURE = "record_failure"
"""The Lambda every Catch leads to (`aws.lambdas.record_failure`): it records the failed step
in the run history, as the local runner does before it raises RunFailed."""

FAILURE_STATE = "run_failed"
"""The Fail state an execution ends in after a step failed for good."""

RUN_PARAMETERS: tuple[str, ...] = ("year", "month", "day", "s3_path")
"""What a run is started with (the execution input): the ingestion date of the file that
triggered it and that file's URL (s3://... on AWS, a local path otherwise; None for a run
over every pending file)."""


@dataclass(frozen=True)
class Retry:
    """ASL Retrier: wait interval × backoff^(n-1), at most max_delay_seconds, before retry n;
    at most max_attempts retries. With jitter (ASL `JitterStrategy: FULL`) Step Functions waits
    a random time up to that delay instead, so retries that failed together spread out."""

    error_equals: tuple[str, ...] = (TRANSIENT,)
    interval_seconds: int = 2  # ASL requires a positive integer
    # A float on purpose: ASL's BackoffRate is a JSON number and statelint wants a real (2.0).
    backoff_rate: float = 2.0
    max_attempts: int = 3  # retries after the first attempt, as in ASL
    max_delay_seconds: int | None = None  # ASL MaxDelaySeconds: the cap of one wait
    jitter: bool = False

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry); with jitter, the
        longest of the random waits."""
        wait = self.interval_seconds * self.backoff_rate ** (retry_number - 1)
        return wait if self.max_delay_seconds is None else min(wait, self.max_delay_seconds)


@dataclass(frozen=True)
class Resource:
    """How a kind of task runs on AWS: its Step Functions integration and time limit, the
    retries of the service's own errors, and whether the step's errors reach Step Functions
    under their own names (then the task's Retry applies there too)."""

    integration: str
    timeout_seconds: int
    retries: tuple[Retry, ...]
    reports_step_errors: bool


GLUE_SERVICE_BUSY = ("Glue.ConcurrentRunsExceededException",)
GLUE_SERVICE_ERRORS = ("Glue.ThrottlingException", "Glue.InternalServiceException")
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)

RESOURCES: Mapping[str, Resource] = {
    "glue": Resource(
        integration="arn:aws:states:::glue:startJobRun.sync",
        # Generous for a daily file, short of Glue's 48 h default: a hung job is stopped.
        timeout_seconds=2 * 3600,
        retries=(
            # MaxConcurrentRuns is 1: files landing together queue on the job, one run each.
            Retry(GLUE_SERVICE_BUSY, interval_seconds=30, backoff_rate=2.0, max_attempts=30,
                  max_delay_seconds=300, jitter=True),
            Retry(GLUE_SERVICE_ERRORS, interval_seconds=10, backoff_rate=2.0, max_attempts=6,
                  max_delay_seconds=120, jitter=True),
            # A failed job run, transient (exit 75) or not (exit 1): Glue cannot tell them
            # apart, so a small bound; a lost commit race re-plans inside the job itself.
            Retry((TASK_FAILED,), interval_seconds=60, backoff_rate=2.0, max_attempts=2,
                  jitter=True),
        ),
        reports_step_errors=False,
    ),
    "lambda": Resource(
        integration="arn:aws:states:::lambda:invoke",
        timeout_seconds=900,  # Lambda's own maximum
        retries=(
            Retry(LAMBDA_SERVICE_ERRORS, interval_seconds=2, backoff_rate=2.0, max_attempts=6,
                  max_delay_seconds=60, jitter=True),
        ),
        reports_step_errors=True,
    ),
}
"""Where each kind of task runs on AWS (Task.resource names one)."""


@dataclass(frozen=True)
class Task:
    """ASL Task state: one pipeline step, the run arguments it receives, its retry."""

    name: str
    resource: str  # a key of RESOURCES: "glue" (a Glue job on AWS) or "lambda"
    parameters: tuple[str, ...]  # the run arguments the step receives
    retry: Retry = field(default_factory=Retry)  # the step's own transient failures

    @property
    def aws_retries(self) -> tuple[Retry, ...]:
        """The Retry list of this task on Step Functions, in the order ASL tries them: the
        service's errors first, then the task's own Retry where the service reports it."""
        kind = RESOURCES[self.resource]
        return (*kind.retries, *((self.retry,) if kind.reports_step_errors else ()))


PIPELINE: tuple[Task, ...] = (
    Task("bronze_to_silver", "glue", ("year", "month", "day", "s3_path")),
    Task("silver_to_gold", "glue", ("year", "month", "day")),
    Task("gold_to_staging", "glue", ("year", "month", "day")),
    Task("upsert", "lambda", ("year", "month", "day"),
         retry=Retry(interval_seconds=1, backoff_rate=2.0, max_attempts=5)),
)


@dataclass(frozen=True)
class Route:
    """Where a sweep starts when one of its check's counts is above zero."""

    count: str  # a count the check returns (a key of its result)
    step: str  # the PIPELINE step to start at


@dataclass(frozen=True)
class Sweep:
    """How an execution without a file (the scheduled sweep) starts on AWS.

    An execution whose `file_parameter` is empty first runs `check`, a Lambda
    (`aws.lambdas.<function>`) that counts what is waiting and writes nothing to the lake; the
    first route whose count is above zero picks the step the execution starts at, and with
    every count zero it ends there: an idle sweep starts no Glue job. An execution with a file
    starts at the first step, as the local runner does. The local orchestrator has no use for
    this: a local run that finds nothing pending is cheap already.
    """

    file_parameter: str
    check: Task
    function: str
    result: str  # the check's counts are kept at $.<result>, beside the run input
    routes: tuple[Route, ...]  # tried in order


SWEEP = Sweep(
    file_parameter="s3_path",
    check=Task("find_pending", "lambda", (),
               retry=Retry(interval_seconds=1, backoff_rate=2.0, max_attempts=3)),
    function="pending",
    result="pending",
    routes=(
        # A pending bronze file (path + sha256 in no commit): the whole pipeline, as for a file.
        Route("files", "bronze_to_silver"),
        # Only committed batches the database has not applied: stage and apply them.
        Route("batches", "gold_to_staging"),
    ),
)
"""The sweep's check and routes (rendered by `aws.asl.to_asl`; the check is
`aws.lambdas.pending`)."""


def task(name: str) -> Task:
    """The declared task of that name (a PIPELINE step, or the sweep's check)."""
    for t in (*PIPELINE, SWEEP.check):
        if t.name == name:
            return t
    raise KeyError(name)


def step_input(t: Task, run_input: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a task receives from the run's input (its declared Parameters)."""
    return {p: run_input.get(p) for p in t.parameters}


def error_matches(error_equals: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """ASL matching: an ErrorEquals entry names the error, or is States.ALL."""
    return any(e == ALL_ERRORS or e in names for e in error_equals)
