"""Local orchestrator: runs the declared pipeline under a single-writer lock, with retries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from purchases import catalog, history
from purchases.config import Settings
from purchases.errors import PurchasesError, TransientError
from purchases.history import RunRecord, StepRun
from purchases.pipeline import PIPELINE, Task
from purchases.steps import STEP_FUNCTIONS, RunContext, StepResult
from purchases.storage import Lake


class RunBusy(PurchasesError):
    """Another run holds the writer lock and --no-wait was given."""


class RunFailed(PurchasesError):
    """A step failed for good; the record says which and why."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(
            f"run {record.run_id} failed in step {record.failed_step}: {record.error} "
            "(fix the cause, then `purchases run` resumes where it stopped)"
        )
        self.record = record


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def lock_path(settings: Settings) -> Path:
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.home / "run.lock"


def run_pipeline(
    settings: Settings,
    *,
    trigger: str = "cli",
    only_files: list[str] | None = None,
    wait: bool = True,
    on_step: Callable[[Task, StepRun], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord:
    """Process every pending bronze file through every step; one writer at a time.

    Raises:
        RunBusy: another run is active and wait is False.
        RunFailed: a step failed permanently or ran out of retries (recorded in history).
    """
    lock = FileLock(str(lock_path(settings)))
    try:
        # The OS releases the lock when its holder dies, so a killed run never blocks this.
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise RunBusy("another `purchases run` is in progress (use --wait to queue)") from None
    try:
        return _run_locked(settings, trigger, only_files, on_step, sleep)
    finally:
        lock.release()


def _run_locked(settings, trigger, only_files, on_step, sleep) -> RunRecord:
    lake = Lake(settings.lake_uri)
    _close_interrupted(lake)
    catalog.recover(lake, catalog.load_commits(lake))
    record = RunRecord(
        run_id=new_run_id(),
        trigger=trigger,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        steps=[StepRun(t.name) for t in PIPELINE],
    )
    history.save(lake, record)
    ctx = RunContext(settings, lake, record.run_id, only_files)
    started = time.perf_counter()
    for task, step in zip(PIPELINE, record.steps, strict=True):
        step.status = "running"
        if on_step:
            on_step(task, step)
        try:
            result = _attempt(task, ctx, step, sleep)
        except PurchasesError as exc:
            step.status = "failed"
            step.error = str(exc)
            record.status, record.failed_step = "failed", task.name
            record.error_class, record.error = type(exc).__name__, str(exc)
            _finish(lake, record, started)
            if on_step:
                on_step(task, step)
            raise RunFailed(record) from exc
        step.status, step.counts, step.seconds = "succeeded", result.counts, result.seconds
        if result.files:
            record.files = [asdict(f) | {"file_id": f.file_id} for f in result.files]
        history.save(lake, record)
        if on_step:
            on_step(task, step)
    record.status = "succeeded"
    _finish(lake, record, started)
    return record


def _attempt(task: Task, ctx: RunContext, step: StepRun, sleep) -> StepResult:
    """Run one step, retrying transient failures per the task's Retry policy."""
    policy = task.retry
    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(policy.max_attempts + 1),
        wait=wait_exponential(multiplier=policy.interval_seconds, exp_base=policy.backoff_rate),
        sleep=sleep,
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                step.attempts = attempt.retry_state.attempt_number
                return STEP_FUNCTIONS[task.name](ctx)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise TransientError(f"gave up after {step.attempts} attempts: {last}") from last
    raise AssertionError("unreachable")  # pragma: no cover


def _finish(lake: Lake, record: RunRecord, started: float) -> None:
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    record.seconds = round(time.perf_counter() - started, 3)
    history.save(lake, record)


def _close_interrupted(lake: Lake) -> None:
    """Runs still marked running hold no lock, so they died: record them as interrupted."""
    for record in history.load_all(lake):
        if record.status == "running":
            record.status = "interrupted"
            record.error = "the process stopped before the run finished; the next run resumed it"
            history.save(lake, record)
