"""Triggers: turn "a file arrived" into a run, for the local folder watcher and AWS Lambda.

Both speak one language, the S3 event notification:

    {"Records": [{"s3": {"bucket": {"name": ...}, "object": {"key": <URL-encoded>}}}]}

`parse_notifications` is the one parser of such events (and of EventBridge "Object Created"
events, and S3's `s3:TestEvent`): a pure function from an event to the bronze files it names
and the records it skips, each with its reason. `handle_event` turns its files into a local
run; `purchases watch` lands each complete file in bronze and builds the same event for it
(`event_for`); the AWS trigger (`purchases.aws.lambdas.trigger`) starts one Step Functions
execution per file it returns.

Idempotence: the decision to run is taken under the writer lock, against the lake's processed
set (path + content hash). A delivery repeated (S3 delivers at least once), or two deliveries
racing, start one run: the second finds the file processed and starts none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from filelock import FileLock, Timeout

from purchases import bronze, commit_log
from purchases.config import Settings
from purchases.errors import InputError, PurchasesError
from purchases.history import RunRecord
from purchases.orchestrator import run_locked, writer_lock
from purchases.steps import pending_files
from purchases.storage import Lake, is_bronze_data_file, parse_bronze_path

log = logging.getLogger("purchases.triggers")

WATCH_EVENT_SOURCE = "purchases:watch"


@dataclass(frozen=True)
class Skipped:
    """A record of the event that starts nothing, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class CreatedObject:
    """One object creation an event names that is a bronze data file of the lake."""

    path: str  # lake-relative bronze path
    bucket: str
    key: str  # the object's key, decoded
    etag: str = ""
    sequencer: str = ""
    version_id: str = ""

    @property
    def delivery_id(self) -> str:
        """A stable name for this creation: bucket, key and object version (ETag, sequencer,
        version id). The same delivery repeated, or told by S3 and by EventBridge, gets the
        same id; the same key written again gets a new one. 64 hex characters."""
        return _delivery_id(self.bucket, self.key, self.etag, self.sequencer, self.version_id)


@dataclass
class TriggerResult:
    """What an event led to: the run started (if any), for which files, and what was skipped."""

    files: list[str] = field(default_factory=list)  # lake-relative bronze paths run
    skipped: list[Skipped] = field(default_factory=list)
    run: RunRecord | None = None

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None


# --- events ---------------------------------------------------------------------------------


def lake_bucket(lake: Lake) -> tuple[str, str]:
    """(bucket, key prefix) under which S3 events name this lake's objects.

    For an object-store lake, the bucket and the lake's prefix inside it. A local lake plays
    bucket itself: its root path is the bucket name and keys are lake-relative.
    """
    if lake.is_local:
        return lake.root, ""
    bucket, _, prefix = lake.root.partition("/")
    return bucket, prefix


def delivery_id(record: dict[str, Any]) -> str:
    """CreatedObject.delivery_id of one S3 notification record (whatever its key names)."""
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    return _delivery_id((s3.get("bucket") or {}).get("name", ""),
                        unquote_plus(obj.get("key", "")), obj.get("eTag", ""),
                        obj.get("sequencer", ""), obj.get("versionId", ""))


def _delivery_id(bucket: str, key: str, etag: Any, sequencer: Any, version_id: Any) -> str:
    # S3 shows an ETag quoted in some APIs and bare in events: compare it bare.
    parts = [bucket, key, str(etag or "").strip('"'), sequencer or "", version_id or ""]
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def event_for(lake: Lake, paths: list[str], etags: dict[str, str] | None = None) -> dict[str, Any]:
    """An S3-event-shaped notification for lake-relative paths (what `watch` hands on)."""
    bucket, prefix = lake_bucket(lake)
    records = []
    for rel in paths:
        key = f"{prefix}/{rel}" if prefix else rel
        obj: dict[str, Any] = {"key": quote_plus(key)}
        if etags and rel in etags:
            obj["eTag"] = etags[rel]
        records.append({
            "eventSource": WATCH_EVENT_SOURCE,
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": obj},
        })
    return {"Records": records}


TEST_EVENT = "s3:TestEvent"
EVENTBRIDGE_CREATED = "Object Created"


def parse_notifications(
    event: Any, bucket_name: str, prefix: str = ""
) -> tuple[list[CreatedObject], list[Skipped]]:
    """The bronze files an event names under `bucket_name`/`prefix` (in order, once each) and
    the records skipped, each with its reason. Pure: reads nothing but the event.

    Understands S3 event notifications (several Records, URL-encoded keys: `+` is a space,
    `%2F` a slash), S3's `s3:TestEvent` (sent when notifications are configured) and
    EventBridge "Object Created" events (whose `detail.object.key` is not URL-encoded).
    """
    if isinstance(event, dict) and event.get("Event") == TEST_EVENT:
        return [], [Skipped("", f"{TEST_EVENT}: the message S3 sends when notifications are "
                                "configured; no object")]
    if isinstance(event, dict) and isinstance(event.get("detail"), dict) and (
            "detail-type" in event or event.get("source") == "aws.s3"):
        return _parse_eventbridge(event, bucket_name, prefix)
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return [], [Skipped("", "not an S3 event notification (no Records list) nor an "
                                "EventBridge Object Created event")]
    found: list[CreatedObject] = []
    skipped: list[Skipped] = []
    for record in records:
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            key = unquote_plus(obj["key"])
        except (KeyError, TypeError):
            skipped.append(Skipped("", "malformed record: no s3.bucket.name / s3.object.key"))
            continue
        source = record.get("eventSource")
        name = record.get("eventName", "ObjectCreated:")
        if source not in (None, "aws:s3", WATCH_EVENT_SOURCE):
            skipped.append(Skipped(key, f"not an S3 record (eventSource {source})"))
        elif not str(name).startswith("ObjectCreated"):
            skipped.append(Skipped(key, f"not an object creation ({name})"))
        else:
            _take(found, skipped, bucket_name, prefix, bucket, key, etag=obj.get("eTag"),
                  sequencer=obj.get("sequencer"), version_id=obj.get("versionId"))
    return found, skipped


def _parse_eventbridge(
    event: dict[str, Any], bucket_name: str, prefix: str
) -> tuple[list[CreatedObject], list[Skipped]]:
    detail = event["detail"]
    try:
        bucket = detail["bucket"]["name"]
        obj = detail["object"]
        key = str(obj["key"])
    except (KeyError, TypeError):
        return [], [Skipped("", "malformed EventBridge event: no detail.bucket.name / "
                                "detail.object.key")]
    kind = event.get("detail-type")
    if event.get("source", "aws.s3") != "aws.s3":
        return [], [Skipped(key, f"not an S3 event (source {event.get('source')})")]
    if kind != EVENTBRIDGE_CREATED:
        return [], [Skipped(key, f"not an object creation ({kind})")]
    found: list[CreatedObject] = []
    skipped: list[Skipped] = []
    _take(found, skipped, bucket_name, prefix, bucket, key, etag=obj.get("etag"),
          sequencer=obj.get("sequencer"), version_id=obj.get("version-id"))
    return found, skipped


def _take(found: list[CreatedObject], skipped: list[Skipped], bucket_name: str, prefix: str,
          bucket: str, key: str, **version: Any) -> None:
    """Add the object to `found` if it is a new bronze data file of the lake, else the reason
    to `skipped`."""
    reason = None
    rel = key[len(prefix) + 1:] if prefix else key
    if bucket != bucket_name:
        reason = f"bucket {bucket!r} is not the lake's ({bucket_name!r})"
    elif prefix and not key.startswith(prefix + "/"):
        reason = f"outside the lake (prefix {prefix}/)"
    elif key.endswith("/"):
        reason = "a folder marker, not a file"
    elif not is_bronze_data_file(rel.rsplit("/", 1)[-1]):
        reason = "not a CSV file (.csv or .csv.gz; hidden and _ names are never data)"
    elif parse_bronze_path(rel) is None or not rel.startswith("bronze/"):
        reason = ("outside bronze (expected bronze/year=YYYY/month=MM/day=DD/<name> "
                  "or bronze/YYYY/MM/DD/<name>)")
    elif any(f.path == rel for f in found):
        reason = "named twice in this event"
    if reason is not None:
        skipped.append(Skipped(key, reason))
        return
    found.append(CreatedObject(rel, bucket, key, **{
        k: str(v).strip('"') if k == "etag" else str(v)
        for k, v in version.items() if v not in (None, "")}))


def parse_event(event: Any, lake: Lake) -> tuple[list[str], list[Skipped]]:
    """The bronze files an event names (lake-relative, in order, once each) and the records
    skipped, each with its reason (parse_notifications for this lake)."""
    found, skipped = parse_notifications(event, *lake_bucket(lake))
    return [f.path for f in found], skipped


def handle_event(
    event: Any,
    settings: Settings,
    *,
    trigger: str = "s3",
    wait: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> TriggerResult:
    """Start a run for the new bronze files an S3-shaped event names; skip the rest.

    Keys are URL-decoded; records that are not object creations, not CSV, not in this lake's
    bronze, no longer present or already processed are skipped, each with a logged reason.
    The check and the run happen under the writer lock, so the same delivery twice (or at
    once) starts one run at most.

    Raises:
        RunBusy: another run holds the lock and wait is False.
        RunFailed: the run started and failed (recorded in history; a Lambda retries).
    """
    lake = Lake(settings.lake_uri)
    wanted, skipped = parse_event(event, lake)
    result = TriggerResult(skipped=skipped)
    if wanted:
        with writer_lock(settings, wait=wait):
            present = []
            for rel in wanted:
                if lake.bronze_object(rel) is None:
                    skipped.append(Skipped(rel, "no longer in the lake"))
                else:
                    present.append(rel)
            todo = {o.path for o in pending_files(lake, commit_log.load_commits(lake), present)}
            for rel in present:
                if rel not in todo:
                    skipped.append(Skipped(rel, "already processed (same path and content)"))
            result.files = [rel for rel in present if rel in todo]
            if result.files:
                log.info("starting a %s run for %d file(s): %s", trigger, len(result.files),
                         ", ".join(result.files))
                result.run = run_locked(settings, trigger=trigger, only_files=result.files,
                                        sleep=sleep)
    for s in skipped:
        log.info("skipped %s: %s", s.key or "<record>", s.reason)
    return result


# --- the local folder watcher -------------------------------------------------------------------


@dataclass(frozen=True)
class WatchOptions:
    """How `purchases watch` decides a file is complete and when to start a run."""

    settle: float = 2.0  # seconds a file's size and mtime must stay the same
    debounce: float = 2.0  # quiet seconds after the last landed file before a run
    max_delay: float = 30.0  # a steady stream still starts a run this long after its first file
    poll: float = 0.2  # seconds between checks
    rescan: float = 10.0  # full listing of the inbox, in case an event was missed
    retry_delay: float = 30.0  # after a failed run, run every pending file again this much later
    # A landed file is watched this long in <inbox>/.landed/: a writer that paused longer
    # than `settle` writes on into it there (its open file moved with it).
    recheck: float = 3600.0


WATCH_LOCK = ".watch.lock"  # in the inbox: hidden, so never taken for data


def is_inbox_candidate(path: Path) -> bool:
    """A name that may be a finished data file: .csv/.csv.gz, not hidden, not a temporary
    (`x.csv.part`, `x.csv.tmp`, `.x.csv` and `_x.csv` are never picked up)."""
    return is_bronze_data_file(path.name)


class SettleTracker:
    """Decides when a file is complete: its size and mtime unchanged for `settle` seconds.

    Writers that write in place are waited for; writers that write `x.part` and rename it
    are seen at the rename. `clock` is injectable for tests.
    """

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self._seen: dict[Path, tuple[tuple[int, int] | None, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def touch(self, path: Path) -> None:
        """An event named this path: start watching it (no-op when already watched)."""
        if path not in self._seen:
            self._seen[path] = (None, self.clock())

    def ready(self) -> list[Path]:
        """Paths stable for the settle period, in name order; they are no longer watched."""
        now = self.clock()
        done = []
        for path, (signature, since) in list(self._seen.items()):
            try:
                st = path.stat()
            except FileNotFoundError:
                del self._seen[path]  # moved away or deleted before it settled
                continue
            current = (st.st_size, st.st_mtime_ns)
            if current != signature:
                self._seen[path] = (current, now)
            elif now - since >= self.settle:
                del self._seen[path]
                done.append(path)
        return sorted(done)


def _handler(queue: SimpleQueue[Path]) -> Any:
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        # Runs on watchdog's thread: only hands paths over; the main loop does the work.
        def on_any_event(self, event: Any) -> None:
            if event.is_directory:
                return
            target = getattr(event, "dest_path", "") or event.src_path
            if event.event_type != "deleted" and target:
                queue.put(Path(os.fsdecode(target)))

    return Handler()


class FolderWatcher:
    """`purchases watch`: land complete files from an inbox into bronze and run them.

    Each complete file is landed under its arrival date (UTC) and moved to
    `<inbox>/.landed/<date>/`; files landed close together are run together once the inbox
    has been quiet for `debounce` seconds. At start, files already in the inbox are taken and
    bronze files left pending by an earlier stop or failure are run.
    """

    def __init__(self, settings: Settings, inbox: Path, options: WatchOptions | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.inbox = Path(inbox)
        self.options = options or WatchOptions()
        self.clock = clock
        self.lake = Lake(settings.lake_uri)
        self.tracker = SettleTracker(self.options.settle, clock)
        self.stop = threading.Event()
        self.events: SimpleQueue[Path] = SimpleQueue()
        self.landed: dict[str, str] = {}  # bronze path -> sha256, waiting for a run
        # Files moved to .landed/: (size, mtime) when landed, and when.
        self.archived: dict[Path, tuple[tuple[int, int], float]] = {}
        self.next_recheck = 0.0
        self.first_landed = self.last_activity = 0.0
        self.catch_up_at: float | None = clock()  # run pending bronze files at start
        self.runs: list[RunRecord] = []

    # -- the loop --

    def run(self) -> None:
        """Watch until stop is set (SIGINT/SIGTERM when run from the main thread).

        Raises:
            InputError: another watcher holds the inbox.
        """
        self.inbox.mkdir(parents=True, exist_ok=True)
        with self._inbox_lock():
            self._watch()

    @contextmanager
    def _inbox_lock(self) -> Iterator[None]:
        """One watcher per inbox: two would race to land and move the same files (every file
        but one "could not land" in the second's log)."""
        path = self.inbox / WATCH_LOCK
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise InputError(f"inbox {self.inbox} is already watched by another `purchases "
                             f"watch` (it holds {path}): stop it first, or watch another "
                             "folder") from None
        except OSError as exc:
            raise InputError(f"inbox {self.inbox}: cannot take its watch lock {path}: "
                             f"{exc.strerror or exc}") from None
        try:
            yield
        finally:
            lock.release()

    def _watch(self) -> None:
        from watchdog.observers import Observer

        observer = Observer()
        observer.schedule(_handler(self.events), str(self.inbox), recursive=False)
        observer.start()
        restore = self._install_signal_handlers()
        log.info("watching %s (settle %.1fs, debounce %.1fs); Ctrl-C to stop",
                 self.inbox, self.options.settle, self.options.debounce)
        try:
            self._scan()
            next_scan = self.clock() + self.options.rescan
            while not self.stop.is_set():
                self.tick()
                if self.clock() >= next_scan:
                    self._scan()
                    next_scan = self.clock() + self.options.rescan
                self.stop.wait(self.options.poll)
        finally:
            restore()
            observer.stop()
            observer.join()
        if self.landed:
            log.info("stopped; %d landed file(s) not run yet: the next watch or `purchases "
                     "run` processes them", len(self.landed))
        else:
            log.info("stopped")

    def tick(self) -> None:
        """One pass: take events, land settled files, and start a run when one is due."""
        while True:
            try:
                path = self.events.get_nowait()
            except Empty:
                break
            # Late events for a file already landed and moved aside are not activity.
            if path.parent == self.inbox and is_inbox_candidate(path) and path.exists():
                self.tracker.touch(path)
                self.last_activity = self.clock()
        self._recheck_archived()
        for path in self.tracker.ready():
            if self.stop.is_set():
                return
            self._land(path)
        now = self.clock()
        if self.landed and (now - self.last_activity >= self.options.debounce
                            or now - self.first_landed >= self.options.max_delay):
            self._run_landed()
        elif self.catch_up_at is not None and now >= self.catch_up_at and not self.landed:
            self._catch_up()

    # -- steps of the loop --

    def _scan(self) -> None:
        try:
            entries = list(self.inbox.iterdir())
        except FileNotFoundError:
            return
        for path in entries:
            if path.is_file() and is_inbox_candidate(path):
                self.tracker.touch(path)

    def _recheck_archived(self) -> None:
        """A landed file that changed in .landed/ was still being written: its writer paused
        longer than the settle period. Once it settles again it is landed again, whole (a new
        bronze file; the rows already run are counted as duplicates), so no row is lost."""
        now = self.clock()
        if now < self.next_recheck:
            return
        # A change only counts once it has settled: looking more often would find it no sooner.
        self.next_recheck = now + self.options.settle / 2
        for path, (signature, since) in list(self.archived.items()):
            try:
                st = path.stat()
            except FileNotFoundError:
                del self.archived[path]
                continue
            if (st.st_size, st.st_mtime_ns) != signature:
                del self.archived[path]
                log.warning("%s changed after it was landed (its writer paused longer than "
                            "--settle %gs): landing it again once it settles; its rows already "
                            "run count as duplicates", path, self.options.settle)
                self.tracker.touch(path)
            elif now - since >= self.options.recheck:
                del self.archived[path]

    def _land(self, path: Path) -> None:
        day = datetime.now(UTC).date()
        try:
            st = path.stat()
            (item,) = bronze.land(self.lake, [path], day)
        except (OSError, PurchasesError) as exc:
            log.error("could not land %s: %s", path, exc)
            if path.parent != self.inbox:  # from .landed/, which no scan looks at: try again
                self.archived[path] = ((-1, -1), self.clock())
            return
        target = path
        if path.parent == self.inbox:
            target = self._move_aside(path, self.inbox / ".landed" / day.isoformat())
        if target is not None:
            self.archived[target] = ((st.st_size, st.st_mtime_ns), self.clock())
        log.info("%s %s -> %s", "already landed" if item.skipped else "landed", path.name,
                 item.path)
        if not self.landed:
            self.first_landed = self.clock()
        self.landed[item.path] = item.sha256
        self.last_activity = self.clock()

    @staticmethod
    def _move_aside(path: Path, archive: Path) -> Path | None:
        """Move a landed file into the archive folder; where it went (None: left in place)."""
        # A name taken already (the same name landed earlier that day) gets ~N before its
        # suffix: still a data file's name, should it be landed again from here.
        stem, dot, suffix = path.name.partition(".")
        target = archive / path.name
        n = 1
        while target.exists():
            target = archive / f"{stem}~{n}{dot}{suffix}"
            n += 1
        try:
            archive.mkdir(parents=True, exist_ok=True)
            path.replace(target)
        except OSError as exc:  # landed all the same: bronze ignores the same bytes again
            log.warning("landed %s but could not move it to %s: %s", path, archive, exc)
            return None
        return target

    def _run_landed(self) -> None:
        paths, etags = list(self.landed), dict(self.landed)
        self.landed.clear()
        try:
            result = handle_event(event_for(self.lake, paths, etags), self.settings,
                                  trigger="watch")
        except PurchasesError as exc:
            self._failed(exc)
            return
        if result.run is not None:
            self._report(result.run)

    def _catch_up(self) -> None:
        self.catch_up_at = None
        try:
            with writer_lock(self.settings):
                if not pending_files(self.lake, commit_log.load_commits(self.lake)):
                    return
                log.info("running the bronze files left pending")
                record = run_locked(self.settings, trigger="watch")
        except PurchasesError as exc:
            self._failed(exc)
            return
        self._report(record)

    def _failed(self, exc: Exception) -> None:
        log.error("%s", exc)
        # Its files stay pending in bronze; try them again later even if nothing new arrives.
        self.catch_up_at = self.clock() + self.options.retry_delay

    def _report(self, record: RunRecord) -> None:
        self.runs.append(record)
        c = record.counts()
        log.info("run %s %s: %d file(s), accepted=%s rejected=%s duplicates=%s "
                 "customers changed=%s (%.1fs)", record.run_id, record.status, len(record.files),
                 c.get("accepted", 0), c.get("rejected", 0), c.get("duplicates", 0),
                 c.get("customers_changed", 0), record.seconds)
        # A file rejected whole holds no row in those counts: name it, as `purchases run` does.
        for f in record.files:
            if f.get("file_rejection"):
                log.warning("file rejected whole: %s: %s (%s)", f["path"], f["file_rejection"],
                            f.get("detail") or "")

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, _frame: Any) -> None:
            if self.stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now (runs are crash-safe)
            log.info("%s received: stopping after the current run",
                     signal.Signals(signum).name)
            self.stop.set()

        for s in previous:
            signal.signal(s, on_signal)

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore


def log_to_stderr() -> None:
    """Show the triggers' INFO log (what was landed, run or skipped, and why) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def watch_folder(settings: Settings, inbox: Path, options: WatchOptions | None = None) -> None:
    """Run `purchases watch` on inbox until SIGINT/SIGTERM (see FolderWatcher)."""
    FolderWatcher(settings, inbox, options).run()
