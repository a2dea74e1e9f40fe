"""Local orchestrator: runs the declared pipeline under a single-writer lock, with retries.

It interprets pipeline.PIPELINE the way Step Functions interprets its ASL rendering: each
Task receives its declared Parameters from the run input, is retried per its Retry (errors
matched by ASL name, interval × backoff^(n-1) between attempts) and, once retries are spent
or on an error no Retry matches, is caught to the failure state: the run is recorded as
failed with the step, error class and message, and RunFailed is raised.

Resuming needs no special path: every run first rolls forward or discards what a dead run
left (commit_log.recover), and every step is idempotent, so the next run ends where a run that
never failed would have.

The lock is per home; writers with other homes (other machines) on one `s3://` lake are
kept apart by the commit record's conditional write instead. A run that loses that race
(CommitConflict) plans its batch again on the new commit log, up to MAX_REPLANS times, and
recovery discards only outputs of runs known to be dead (`run_is_dead`), never those of a
run that may be live elsewhere.

`reprocess_pipeline` runs the same loop over REPROCESS_PIPELINE, whose first step re-validates
quarantined rows instead of reading bronze (`purchases reprocess`).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from purchases import commit_log, history, lineage
from purchases.commit_log import CommitConflict
from purchases.config import Settings
from purchases.errors import ConfigError, PurchasesError
from purchases.faults import fault_point
from purchases.history import RunRecord, StepRun
from purchases.pipeline import PIPELINE, Task
from purchases.step_runner import error_names, finish, new_record, reopen, run_step
from purchases.steps import REPROCESS_STEP, RunContext, Selection
from purchases.storage import Lake, day_parts, parse_bronze_path


class RunBusy(PurchasesError):
    """Another run holds the writer lock and --no-wait was given."""


class RunFailed(PurchasesError):
    """A step failed for good; the record says which and why."""

    def __init__(self, record: RunRecord) -> None:
        # A reprocess batch that never committed is discarded by the next run, not resumed;
        # reprocessing again finishes whatever did commit and re-selects what is still there.
        again = ("then run `purchases reprocess` again" if record.trigger == REPROCESS_TRIGGER
                 else "then `purchases run` resumes where it stopped")
        super().__init__(
            f"run {record.run_id} failed in step {record.failed_step}: "
            f"{record.error_class}: {record.error} (fix the cause, {again})"
        )
        self.record = record


REPROCESS_TRIGGER = "reprocess"

REPROCESS_PIPELINE: tuple[Task, ...] = (
    Task(REPROCESS_STEP, "glue", ("reasons", "ingestion_date")),
    *PIPELINE[1:],
)
"""`purchases reprocess`: the pipeline with its first step reading quarantine, not bronze."""


MAX_REPLANS = 5
"""Times a run plans its batch again after another writer committed first, before it gives
up (recorded failed with CommitConflict; its files stay pending for the next run)."""

STALE_AFTER = timedelta(hours=72)
"""A run on another machine (another home) that shows no activity for this long is taken for
dead: its staging is discarded and its running marker closed. Generous on purpose: longer than
a Glue job's default timeout (48 h), so a live run is never mistaken for a dead one, while
the only cost of waiting is disk space (nothing refers to an uncommitted run's files)."""


def new_run_id() -> str:
    """A run id that sorts by start time and is unique across processes."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def lock_path(settings: Settings) -> Path:
    """The home's run-lock file, created if needed.

    Raises:
        ConfigError: the home is not a folder this process can write. Checked up front,
            since filelock takes "cannot open the lock file" for "held" and would wait forever.
    """
    home = settings.home
    fix = "set --home or PURCHASES_HOME to a folder you can write"
    if home.exists() and not home.is_dir():
        raise ConfigError(f"home {home} is a file, not a folder: {fix}")
    path = home / "run.lock"
    try:
        home.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"home {home} is not a writable folder ({reason}): {fix}") from None
    return path


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
    return {**day_parts(day), "s3_path": path}


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
    return _execute(
        settings, lake, PIPELINE, trigger=trigger, run_in=run_input(only_files, lake),
        requested_files=list(only_files) if only_files is not None else None,
        only_files=only_files, on_step=on_step, sleep=sleep,
    )


def reprocess_pipeline(
    settings: Settings,
    reasons: Sequence[str] = (),
    day: date | None = None,
    *,
    wait: bool = True,
    on_step: Callable[[Task, StepRun], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord:
    """Re-validate quarantined rows (those with one of `reasons`, default every reason whose
    rows have fields; landed on `day`, default any) as a new batch under the current rules
    and FX table, then carry the newly accepted purchases to gold and the serving table.

    Runs like run_pipeline (same lock, recovery, retries, history, commit protocol) with
    trigger "reprocess"; its first step is quarantine_to_silver instead of bronze_to_silver.

    Raises:
        InputError: a reason that is not a code, or that names rows without fields.
        RunBusy: another run is active and wait is False.
        RunFailed: a step failed permanently or ran out of retries (recorded in history).
    """
    selection = Selection(tuple(reasons), day)
    with writer_lock(settings, wait=wait):
        lake = Lake(settings.lake_uri)
        run_in = run_input(None, lake) | {
            "reasons": [str(r) for r in selection.reasons],
            "ingestion_date": day.isoformat() if day else None,
        }
        return _execute(settings, lake, REPROCESS_PIPELINE, trigger=REPROCESS_TRIGGER,
                        run_in=run_in, selection=selection, on_step=on_step, sleep=sleep)


def _execute(
    settings: Settings,
    lake: Lake,
    tasks: tuple[Task, ...],
    *,
    trigger: str,
    run_in: dict[str, Any],
    requested_files: list[str] | None = None,
    only_files: list[str] | None = None,
    selection: Selection | None = None,
    on_step: Callable[[Task, StepRun], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunRecord:
    """One run of `tasks` under the lock the caller holds: record, recover, run each step."""
    owner = lock_owner(settings)
    interrupted = _close_interrupted(lake, owner)
    record = new_record(new_run_id(), tasks, trigger=trigger, run_input=run_in,
                        requested_files=requested_files)
    history.mark_running(lake, record.run_id, owner)
    history.save(lake, record)
    lineage.emit(settings, record, "START")  # off unless configured (purchases.lineage)
    started = time.perf_counter()
    try:
        _run_recorded(settings, lake, tasks, record, owner, interrupted, started,
                      only_files=only_files, selection=selection, on_step=on_step, sleep=sleep)
    except KeyboardInterrupt:
        _record_interrupt(lake, record, started)
        raise
    except Exception:
        lineage.emit(settings, record, "FAIL")
        raise
    lineage.emit(settings, record, "COMPLETE")
    return record


def _run_recorded(
    settings: Settings,
    lake: Lake,
    tasks: tuple[Task, ...],
    record: RunRecord,
    owner: str,
    interrupted: list[str],
    started: float,
    *,
    only_files: list[str] | None,
    selection: Selection | None,
    on_step: Callable[[Task, StepRun], None] | None,
    sleep: Callable[[float], None],
) -> None:
    """_execute's work once the run is on record (since perf_counter `started`): recover,
    then run each step."""
    # Recorded before repairing, so a run that dies while repairing is on record too.
    try:
        record.recovered = _recover(lake, interrupted, record.run_id)
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
    ctx = RunContext(settings, lake, record.run_id, only_files, selection=selection)
    lost: list[int] = []
    position = 0
    while position < len(tasks):
        try:
            run_step(tasks[position], ctx, record, sleep=sleep, on_step=on_step)
        except CommitConflict as exc:
            # Another writer (another home, another machine) committed this batch id first;
            # the step discarded this run's outputs. Plan again from the new commit log.
            lost.append(exc.batch_id)
            record.recovered["lost_commit_races"] = list(lost)
            if len(lost) > MAX_REPLANS:
                history.save(lake, record)
                raise RunFailed(record) from exc
            _reopen(lake, record, owner)
            position = 0
            continue
        except Exception as exc:  # noqa: BLE001 - the Catch: every error ends the run recorded
            raise RunFailed(record) from exc
        position += 1
    _finish(lake, record, started, "succeeded")


def _record_interrupt(lake: Lake, record: RunRecord, started: float) -> None:
    """Ctrl-C: the run goes on record as interrupted now, with the time it ran, rather than
    as running until the next run finds it dead. What it left is repaired by the next run
    all the same (its recovery treats an interrupted run as dead)."""
    record.error = "interrupted (Ctrl-C); the next `purchases run` resumes it"
    for step in record.steps:
        if step.status == "running":
            step.status = "interrupted"
    _finish(lake, record, started, "interrupted")


def lock_owner(settings: Settings) -> str:
    """Who holds this home's writer lock: host and home (a running marker names it)."""
    return f"{socket.gethostname()}:{settings.home.resolve()}"


def _reopen(lake: Lake, record: RunRecord, owner: str) -> None:
    """Undo the failed state run_step recorded for a lost commit race: the run goes on,
    marked running again under this home's lock."""
    reopen(record)
    history.mark_running(lake, record.run_id, owner)
    history.save(lake, record)


def run_is_dead(lake: Lake, run_id: str, *, now: datetime | None = None) -> bool:
    """Whether an uncommitted run is known to have stopped, so its outputs may be discarded.

    Dead: no history record (every run saves one before it writes anything else), or one
    that says it ended (succeeded, interrupted, or failed outside AWS: a local run stops
    with its record), or no activity for STALE_AFTER. Not dead: a run marked running (on
    another machine: this home's dead runs were closed as interrupted first), a Glue
    execution whose step failed (Step Functions may invoke it again), and a run that lost
    a commit race (it discarded its own outputs and is planning again).
    """
    record = history.load(lake, run_id)
    if record is None:
        return True
    ended = record.status in ("succeeded", "interrupted") or (
        record.status == "failed" and record.trigger != "glue"
        and record.error_class != CommitConflict.__name__)
    return ended or _idle_for(record, now or datetime.now(UTC)) > STALE_AFTER


def _idle_for(record: RunRecord, now: datetime) -> timedelta:
    stamps = [record.started_at, record.finished_at, *(s.started_at for s in record.steps)]
    seen = []
    for stamp in filter(None, stamps):
        try:
            seen.append(datetime.fromisoformat(stamp))
        except ValueError:
            continue  # unreadable: the other stamps decide
    latest = max((t if t.tzinfo else t.replace(tzinfo=UTC) for t in seen), default=None)
    return now - latest if latest else timedelta.max


def _finish(lake: Lake, record: RunRecord, started: float, status: str | None = None) -> None:
    finish(lake, record, status, seconds=time.perf_counter() - started)


def _recover(lake: Lake, interrupted: list[str], me: str) -> dict[str, list[Any]]:
    """Repair what dead runs left: roll committed batches forward, discard uncommitted
    staging of dead runs. Returns what was done (with the runs found dead), for the record."""
    commits = commit_log.load_commits(lake)
    staged = set(lake.list_children(commit_log.RUNS_STAGING_DIR))
    finished = [c.batch_id for c in commits if c.run_id in staged]
    discarded = commit_log.recover(
        lake, commits, lambda run_id: run_id != me and run_is_dead(lake, run_id))
    found = {"interrupted_runs": interrupted, "published_batches": finished,
             "discarded_runs": discarded}
    return {k: v for k, v in found.items() if v}


def _close_interrupted(lake: Lake, owner: str) -> list[str]:
    """Runs marked running by this home's lock (which we hold now) died: record them as
    interrupted. A marker of another home (another machine on a shared lake) is a live run
    unless it has been idle for STALE_AFTER."""
    closed = []
    for run_id in history.running(lake):
        record = history.load(lake, run_id)
        theirs = history.running_owner(lake, run_id) not in ("", owner)
        if theirs and (record is None or
                       _idle_for(record, datetime.now(UTC)) <= STALE_AFTER):
            continue
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
    "MAX_REPLANS", "REPROCESS_PIPELINE", "STALE_AFTER", "RunBusy", "RunFailed", "error_names",
    "lock_owner", "lock_path", "new_run_id", "reprocess_pipeline", "run_input", "run_is_dead",
    "run_locked", "run_pipeline", "writer_lock",
]
