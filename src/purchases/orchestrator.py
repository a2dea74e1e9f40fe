"""Local orchestrator: runs the declared pipeline under a single-writer lock, with retries.

It interprets pipeline.PIPELINE the way Step Functions interprets its ASL rendering: each
Task receives its declared Parameters from the run input, is retried per its Retry (errors
matched by ASL name, interval × backoff^(n-1) between attempts) and, once retries are spent
or on an error no Retry matches, is caught to the failure state: the run is recorded as
failed with the step, error class and message, and RunFailed is raised.

Resuming needs no special path: every run first rolls forward or discards what a dead run
left (catalog.recover), and every step is idempotent, so the next run ends where a run that
never failed would have.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt

from purchases import catalog, history
from purchases.config import Settings
from purchases.errors import PurchasesError, TransientError
from purchases.faults import fault_point
from purchases.history import RunRecord, StepRun
from purchases.pipeline import PIPELINE, TRANSIENT, Task, error_matches, step_input
from purchases.steps import STEP_FUNCTIONS, RunContext, StepResult
from purchases.storage import Lake, parse_bronze_path


class RunBusy(PurchasesError):
    """Another run holds the writer lock and --no-wait was given."""


class RunFailed(PurchasesError):
    """A step failed for good; the record says which and why."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(
            f"run {record.run_id} failed in step {record.failed_step}: "
            f"{record.error_class}: {record.error} "
            "(fix the cause, then `purchases run` resumes where it stopped)"
        )
        self.record = record


def new_run_id() -> str:
    """A run id that sorts by start time and is unique across processes."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def lock_path(settings: Settings) -> Path:
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.home / "run.lock"


@contextmanager
def writer_lock(settings: Settings, *, wait: bool = True) -> Iterator[None]:
    """Hold the single-writer lock of this home for the duration of the block.

    The lock is an flock on $PURCHASES_HOME/run.lock: the OS drops it when its holder dies,
    however it dies, so a killed run never leaves a lock behind that needs clearing by hand.

    Raises:
        RunBusy: another process holds it and wait is False.
    """
    lock = FileLock(str(lock_path(settings)))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise RunBusy("another `purchases run` is in progress (use --wait to queue)") from None
    try:
        yield
    finally:
        lock.release()


def run_input(only_files: list[str] | None, lake: Lake | None = None) -> dict[str, Any]:
    """The run's input in the shape the AWS state machine receives it (pipeline.RUN_PARAMETERS).

    year/month/day: the latest ingestion date among the requested files (today, UTC, for a
    run over every pending file); s3_path: the requested file's URL when there is one.
    """
    days = [d for d in (parse_bronze_path(p) for p in only_files or []) if d]
    day = max((d for d, _ in days), default=None) or datetime.now(UTC).date()
    path: str | None = None
    if only_files and len(only_files) == 1:
        path = lake.url(only_files[0]) if lake is not None else only_files[0]
    return {"year": f"{day:%Y}", "month": f"{day:%m}", "day": f"{day:%d}", "s3_path": path}


def run_pipeline(
    settings: Settings,
    *,
    trigger: str = "cli",
    only_files: list[str] | None = None,
    wait: bool = True,
    on_step: Callable[[Task, StepRun], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord:
    """Process every pending bronze file (or only `only_files`) through every step.

    One writer at a time: a second call waits for the lock (or raises RunBusy), then finds
    the files the first processed already done. `sleep` is what waits between retries.

    Raises:
        RunBusy: another run is active and wait is False.
        RunFailed: a step failed permanently or ran out of retries (recorded in history).
    """
    with writer_lock(settings, wait=wait):
        return run_locked(settings, trigger=trigger, only_files=only_files, on_step=on_step,
                          sleep=sleep)


def run_locked(
    settings: Settings,
    *,
    trigger: str = "cli",
    only_files: list[str] | None = None,
    on_step: Callable[[Task, StepRun], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord:
    """run_pipeline's body, for callers already holding writer_lock (the triggers)."""
    lake = Lake(settings.lake_uri)
    interrupted = _close_interrupted(lake)
    record = RunRecord(
        run_id=new_run_id(),
        trigger=trigger,
        started_at=_now(),
        steps=[StepRun(t.name) for t in PIPELINE],
        input=run_input(only_files, lake),
        requested_files=list(only_files) if only_files is not None else None,
    )
    history.mark_running(lake, record.run_id)
    history.save(lake, record)
    started = time.perf_counter()
    # Recorded before repairing, so a run that dies while repairing is on record too.
    try:
        record.recovered = _recover(lake, interrupted)
    except Exception as exc:  # noqa: BLE001 - recorded like a failed step, then raised
        record.status, record.failed_step = "failed", "recover"
        record.error_class, record.error = type(exc).__name__, str(exc)
        for step in record.steps:
            step.status = "skipped"
        _finish(lake, record, started)
        raise RunFailed(record) from exc
    if record.recovered:
        history.save(lake, record)
    fault_point("after_run_start")
    ctx = RunContext(settings, lake, record.run_id, only_files)
    for task, step in zip(PIPELINE, record.steps, strict=True):
        step.status, step.started_at = "running", _now()
        step.parameters = step_input(task, record.input)
        if on_step:
            on_step(task, step)
        step_started = time.perf_counter()
        try:
            result = _attempt(task, ctx, step, sleep)
        except Exception as exc:  # noqa: BLE001 - the Catch: every error ends the run recorded
            step.seconds = round(time.perf_counter() - step_started, 3)
            step.status = "failed"
            step.error_class, step.error = type(exc).__name__, str(exc)
            record.status, record.failed_step = "failed", task.name
            record.error_class, record.error = step.error_class, step.error
            for later in record.steps:
                if later.status == "pending":
                    later.status = "skipped"
            _finish(lake, record, started)
            if on_step:
                on_step(task, step)
            raise RunFailed(record) from exc
        step.seconds = round(time.perf_counter() - step_started, 3)
        step.status, step.counts = "succeeded", result.counts
        if result.files:
            record.files = [asdict(f) | {"file_id": f.file_id} for f in result.files]
            step.counts = {**result.counts, "rejected_by_reason": record.rejected_by_reason()}
        history.save(lake, record)
        if on_step:
            on_step(task, step)
    record.status = "succeeded"
    _finish(lake, record, started)
    return record


def error_names(exc: BaseException) -> tuple[str, ...]:
    """The ASL error names an exception answers to: its class name, plus TRANSIENT when it is
    worth retrying (the product's TransientError, a dropped connection, a timeout)."""
    names = [type(exc).__name__]
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        names.append(TRANSIENT)
    return tuple(names)


def _attempt(task: Task, ctx: RunContext, step: StepRun, sleep) -> StepResult:
    """Run one step, retrying the errors its Retry names, waiting as the Retry says."""
    policy = task.retry
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
                step.attempts = attempt.retry_state.attempt_number
                return STEP_FUNCTIONS[task.name](ctx)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise TransientError(
            f"gave up after {step.attempts} attempts: {type(last).__name__}: {last}"
        ) from last
    raise AssertionError("unreachable")  # pragma: no cover


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _finish(lake: Lake, record: RunRecord, started: float) -> None:
    record.finished_at = _now()
    record.seconds = round(time.perf_counter() - started, 3)
    history.save(lake, record)
    history.clear_running(lake, record.run_id)


def _recover(lake: Lake, interrupted: list[str]) -> dict[str, list[Any]]:
    """Repair what dead runs left: roll committed batches forward, discard uncommitted
    staging. Returns what was done (with the runs found dead), for the run record."""
    commits = catalog.load_commits(lake)
    staged = set(lake.list_children(catalog.RUNS_STAGING_DIR))
    finished = [c.batch_id for c in commits if c.run_id in staged]
    discarded = catalog.recover(lake, commits)
    found = {"interrupted_runs": interrupted, "published_batches": finished,
             "discarded_runs": discarded}
    return {k: v for k, v in found.items() if v}


def _close_interrupted(lake: Lake) -> list[str]:
    """Runs still marked running hold no lock, so they died: record them as interrupted."""
    closed = []
    for run_id in history.running(lake):
        record = history.load(lake, run_id)
        if record is not None and record.status == "running":
            record.status = "interrupted"
            record.error = "the process stopped before the run finished; the next run resumed it"
            for step in record.steps:
                if step.status == "running":
                    step.status = "interrupted"
            history.save(lake, record)
            closed.append(run_id)
        history.clear_running(lake, run_id)
    return closed


__all__ = [
    "RunBusy", "RunFailed", "error_names", "lock_path", "new_run_id", "run_input",
    "run_locked", "run_pipeline", "writer_lock",
]
