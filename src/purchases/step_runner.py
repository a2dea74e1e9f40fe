"""One way to run a declared step and record it, for every entry point.

The local orchestrator (all steps in one process), the Glue job (one step per process, as
Step Functions invokes it) and the Lambda handlers all call `run_step`, so the bookkeeping a
run leaves in its history (status, attempts, durations, parameters, counts, error) cannot
drift between them. Retries follow the task's declared Retry when the caller retries itself
(the local orchestrator); on AWS, Step Functions retries by re-invoking the step, and each
invocation adds its attempt to the same record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt

from purchases import history
from purchases.errors import TransientError
from purchases.history import RunRecord, StepRun
from purchases.pipeline import TRANSIENT, Task, error_matches, step_input
from purchases.steps import STEP_FUNCTIONS, RunContext, StepResult
from purchases.storage import Lake

OnStep = Callable[[Task, StepRun], None]


def now() -> str:
    """A run-history timestamp (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_record(
    run_id: str,
    tasks: tuple[Task, ...],
    *,
    trigger: str,
    run_input: dict[str, Any],
    requested_files: list[str] | None = None,
) -> RunRecord:
    """The history record of a run that is starting: every declared step pending."""
    return RunRecord(
        run_id=run_id,
        trigger=trigger,
        started_at=now(),
        steps=[StepRun(t.name) for t in tasks],
        input=run_input,
        requested_files=requested_files,
    )


def load_or_start(
    lake: Lake,
    run_id: str,
    tasks: tuple[Task, ...],
    *,
    trigger: str,
    run_input: dict[str, Any],
    requested_files: list[str] | None = None,
) -> RunRecord:
    """This run's record: the one an earlier step of the same execution wrote, else a new one.

    A step that runs in its own process (Glue job, Lambda) finds the record by run id, so
    the steps of one Step Functions execution add up to one run in `purchases runs`.
    """
    record = history.load(lake, run_id)
    if record is None:
        record = new_record(run_id, tasks, trigger=trigger, run_input=run_input,
                            requested_files=requested_files)
    known = {s.step for s in record.steps}
    record.steps.extend(StepRun(t.name) for t in tasks if t.name not in known)
    return record


def error_names(exc: BaseException) -> tuple[str, ...]:
    """The ASL error names an exception answers to: its class name, plus TRANSIENT when it is
    worth retrying (the product's TransientError, a dropped connection, a timeout)."""
    names = [type(exc).__name__]
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        names.append(TRANSIENT)
    return tuple(names)


def run_step(
    task: Task,
    ctx: RunContext,
    record: RunRecord,
    *,
    retry: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    on_step: OnStep | None = None,
) -> StepResult:
    """Run one declared step and record it in the run's history.

    Args:
        task: the declared step (its Retry policy and Parameters).
        ctx: the run's context (settings, lake, run id, selection).
        record: the run's history record; updated and saved before and after the step.
        retry: retry per the task's Retry here (local runs); False when the caller's
            scheduler retries by invoking the step again (Step Functions).
        sleep: what waits between retries (tests pass a no-op).
        on_step: called when the step starts and when it ends (CLI progress).

    Returns:
        The step's result, also recorded.

    Raises:
        Exception: whatever the step raised once retries are spent (a TransientError naming
            the attempts when every retry failed); the record says failed first, with later
            steps skipped.
    """
    step = next(s for s in record.steps if s.step == task.name)
    step.status, step.started_at = "running", now()
    step.error = step.error_class = None
    step.parameters = step_input(task, record.input)
    record.status = "running"
    if not retry:
        # One attempt per invocation, counted before the record is saved: an attempt killed
        # mid-step (a Glue worker lost) is on record when the scheduler invokes it again.
        step.attempts += 1
    started = time.perf_counter()
    try:
        # Inside the try: a lake that cannot take the record (disk full) fails the step
        # with its cause, like any other error of the step.
        history.save(ctx.lake, record)
        if on_step:
            on_step(task, step)
        result = _attempts(task, ctx, step, sleep, retry=retry)
        step.seconds = round(step.seconds + time.perf_counter() - started, 3)
        step.status, step.counts = "succeeded", result.counts
        if result.files:
            record.files = [asdict(f) | {"file_id": f.file_id} for f in result.files]
            step.counts = {**result.counts, "rejected_by_reason": record.rejected_by_reason()}
        if record.failed_step == task.name:  # an earlier invocation failed; this one did not
            record.failed_step = record.error_class = record.error = None
        history.save(ctx.lake, record)
    except Exception as exc:
        if step.status == "running":
            step.seconds = round(step.seconds + time.perf_counter() - started, 3)
        step.status = "failed"
        step.error_class, step.error = type(exc).__name__, str(exc)
        record.status, record.failed_step = "failed", task.name
        record.error_class, record.error = step.error_class, step.error
        for later in record.steps:
            if later.status == "pending":
                later.status = "skipped"
        # The lake may refuse the record too (disk full): the step's own error stands.
        with contextlib.suppress(Exception):
            finish(ctx.lake, record)
        if on_step:
            on_step(task, step)
        raise
    if on_step:
        on_step(task, step)
    return result


def reopen(record: RunRecord) -> None:
    """Undo the failed state `run_step` recorded for a lost commit race: the run goes on,
    its failed and skipped steps pending again (the caller plans again and saves)."""
    record.status, record.finished_at = "running", None
    record.failed_step = record.error_class = record.error = None
    for s in record.steps:
        if s.status in ("failed", "skipped"):
            s.status = "pending"


def finish(
    lake: Lake, record: RunRecord, status: str | None = None, *, seconds: float | None = None
) -> None:
    """Close a run's record: its status, end time and duration (wall time when the caller
    measured it, else the sum of its steps); drop its running marker."""
    if status is not None:
        record.status = status
    record.finished_at = now()
    record.seconds = round(seconds if seconds is not None else
                           sum(s.seconds for s in record.steps), 3)
    history.save(lake, record)
    history.clear_running(lake, record.run_id)


def _attempts(
    task: Task, ctx: RunContext, step: StepRun, sleep: Callable[[float], None], *, retry: bool
) -> StepResult:
    """Run the step, retrying the errors its Retry names, waiting as the Retry says."""
    work = STEP_FUNCTIONS[task.name]
    if not retry:
        return work(ctx)  # counted by run_step
    policy = task.retry
    first = step.attempts
    retrying = Retrying(
        retry=retry_if_exception(lambda e: error_matches(policy.error_equals, error_names(e))),
        stop=stop_after_attempt(policy.max_attempts + 1),
        wait=lambda state: policy.delay(state.attempt_number),
        sleep=sleep,
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                step.attempts = first + attempt.retry_state.attempt_number
                return work(ctx)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise TransientError(
            f"gave up after {step.attempts} attempts: {type(last).__name__}: {last}"
        ) from last
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["error_names", "finish", "load_or_start", "new_record", "now", "reopen", "run_step"]
