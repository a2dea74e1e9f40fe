"""The lake's commit log: which bronze files are processed and which outputs are published.

A batch becomes visible by one atomic write, its commit record, `_state/commits/<id>.json`.
Two kinds of output hang off a record:

* outputs readers find by listing folders (silver, quarantine, gold) are staged under
  `_runs/<run_id>/` and moved into place after the record is written. Each move is one
  rename of a whole file, and idempotent, so a publication interrupted at any instant is
  rolled forward by the next run; nothing is ever in those folders without a commit record.
* outputs only ever reached through a commit record (`_state/customers`,
  `_state/purchase_keys`) are written straight to a folder named after the run
  (`run-<run_id>`; lakes from before name them `batch-<id>`, and readers follow whatever
  path the record lists). Until the record exists nothing points at them, so there is
  nothing to move and no moment at which the record names a file that is not there yet.

The record is created with a conditional write (storage.Lake.create_exclusive): of writers
on any number of machines that planned the same batch id, exactly one commits it; the others
get CommitConflict, discard their own run's outputs and plan again on the new log. Nothing a
run writes before its commit is named after the batch id, so a racing run can never
overwrite or clear it.

Anything staged without a commit record is discarded by recovery once its run is known to be
dead (never while it may still be running on another machine). Every CHECKPOINT_EVERY
batches the log is compacted into `_state/checkpoint.json`, so reading it costs one file plus
the few records written since, however long the history.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any

from purchases.errors import PurchasesError
from purchases.faults import fault_point
from purchases.storage import Lake

COMMITS_DIR = "_state/commits"
CHECKPOINT_PATH = "_state/checkpoint.json"
RUNS_STAGING_DIR = "_runs"
CUSTOMERS_DIR = "_state/customers"
PURCHASE_KEYS_DIR = "_state/purchase_keys"
CHECKPOINT_EVERY = 20
STATES_KEPT = 3  # customer-state snapshots kept (each batch writes a full one)
REPROCESS_PREFIX = "reprocess:"
"""Path prefix of a FileOutcome that counts quarantined rows re-validated by `purchases
reprocess` (per original bronze file), not the processing of a bronze file."""


class CommitConflict(PurchasesError):
    """Another writer committed this batch id first (or since this run planned its batch).

    Not a TransientError: retrying the commit step alone cannot help, the batch must be
    planned again on the new log. The local orchestrator and the Glue job's silver_to_gold
    (`aws.glue_job.commit_or_plan_again`) both do that by themselves, at most
    `orchestrator.MAX_REPLANS` times; only past that bound does the run fail with it (a Glue
    job exits EXIT_CONFLICT), its files still pending for the next run or sweep.
    """

    def __init__(self, run_id: str, batch_id: int) -> None:
        super().__init__(
            f"run {run_id}: another run committed batch {batch_id} first; this run's outputs "
            "were discarded and its files are still pending (run again to process them)"
        )
        self.run_id, self.batch_id = run_id, batch_id


@dataclass
class FileOutcome:
    """How one bronze file ended: row counts that add up to rows_in, or a whole-file reject.

    A reprocess batch records one entry per original bronze file of the rows it re-validated:
    path `reprocess:<bronze path>`, no sha256, version `batch-<id>`. Such an entry never
    marks (or unmarks) a bronze file as processed: see `is_reprocess`.
    """

    path: str
    sha256: str
    ingestion_date: str
    version: str = ""
    rows_in: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    invalid_emails: int = 0
    file_rejection: str | None = None
    detail: str = ""

    @property
    def is_reprocess(self) -> bool:
        return self.path.startswith(REPROCESS_PREFIX)

    @property
    def file_id(self) -> str:
        if self.is_reprocess:
            # Unique per reprocess batch: the same bronze file's rows may be re-validated again.
            return f"{self.path}@{self.version}"
        return f"{self.path}#{self.sha256}"

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class Commit:
    batch_id: int
    run_id: str
    ingestion_date: str  # the gold partition day: latest ingestion date of the batch's files
    files: list[FileOutcome]
    moves: list[tuple[str, str]]  # staged path -> published path
    customers_changed: int
    committed_at: str = ""
    outputs: list[str] = field(default_factory=list)  # written in place (see module doc)
    # purchase-key file -> [min, max] purchase_id it holds, so a run reads only the key files
    # whose range meets its own purchase ids.
    key_ranges: dict[str, list[int]] = field(default_factory=dict)
    # Published files of earlier batches this batch replaces (e.g. a quarantine file whose
    # rows `purchases reprocess` re-validated): from this commit on, readers skip them.
    superseded: list[str] = field(default_factory=list)

    @property
    def published(self) -> list[str]:
        return [*self.outputs, *(dst for _, dst in self.moves)]

    def published_under(self, prefix: str) -> list[str]:
        return [p for p in self.published if p.startswith(prefix + "/")]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["files"] = [FileOutcome(**f) for f in data["files"]]
        data["moves"] = [tuple(m) for m in data["moves"]]
        return cls(**data)


def commit_path(batch_id: int) -> str:
    return f"{COMMITS_DIR}/{batch_id:012d}.json"


def run_dir(kind_dir: str, run_id: str) -> str:
    """Folder of a run's in-place output (customer state or purchase keys).

    Named after the run, never the batch id: two runs that plan the same batch id (on
    different machines) write to different folders, and only the one that commits is ever
    referred to."""
    return f"{kind_dir}/run-{run_id}"


IN_PLACE_DIRS = (CUSTOMERS_DIR, PURCHASE_KEYS_DIR)


def load_commits(lake: Lake) -> list[Commit]:
    """Every committed batch, oldest first.

    Reads the checkpoint and then probes for the records after it (batch ids are
    consecutive), so the cost does not grow with the number of batches.
    """
    checkpoint = lake.read_json_if_exists(CHECKPOINT_PATH)
    if checkpoint is not None:
        commits = [Commit.from_json(c) for c in checkpoint["commits"]]
    else:
        # No checkpoint yet (a young lake, or one from before checkpoints): list once.
        commits = [Commit.from_json(data) for _, data in lake.iter_json(COMMITS_DIR)]
    while True:
        data = lake.read_json_if_exists(commit_path(next_batch_id(commits)))
        if data is None:
            return commits
        commits.append(Commit.from_json(data))


def bronze_outcomes(commits: list[Commit]) -> list[FileOutcome]:
    """How every processed bronze file ended (reprocess entries left out)."""
    return [f for c in commits for f in c.files if not f.is_reprocess]


def processed_file_ids(commits: list[Commit]) -> set[str]:
    return {f.file_id for f in bronze_outcomes(commits)}


def next_batch_id(commits: list[Commit]) -> int:
    return (commits[-1].batch_id + 1) if commits else 1


def customer_state_files(commits: list[Commit]) -> list[str]:
    """The customer state as of the latest batch that published one."""
    for c in reversed(commits):
        state = c.published_under(CUSTOMERS_DIR)
        if state:
            return state
    return []


def purchase_key_files(commits: list[Commit]) -> list[str]:
    """Every purchase-key file ever published (all accepted purchase ids)."""
    return [p for c in commits for p in c.published_under(PURCHASE_KEYS_DIR)]


def purchase_key_ranges(commits: list[Commit]) -> list[tuple[str, int | None, int | None]]:
    """(file, min purchase_id, max purchase_id) of every key file; None where not recorded."""
    out: list[tuple[str, int | None, int | None]] = []
    for c in commits:
        for p in c.published_under(PURCHASE_KEYS_DIR):
            lo, hi = c.key_ranges.get(p, (None, None))
            out.append((p, lo, hi))
    return out


def published_files(commits: list[Commit], layer: str) -> list[str]:
    """The files of a lake layer (silver, quarantine, gold) readers should see now.

    Only what a commit record lists, less what a later commit superseded: a file being moved
    into place (copy-then-delete on S3) or left by a run that never committed is never read.
    """
    gone = {p for c in commits for p in c.superseded}
    return [p for c in commits for p in c.published_under(layer) if p not in gone]


def gold_files(commit: Commit) -> list[str]:
    return commit.published_under("gold")


def publish(lake: Lake, commit: Commit) -> None:
    """Make a batch visible: create its commit record (the commit point), then move outputs.

    Raises:
        CommitConflict: another writer's record for this batch id exists; nothing of this
            run was published (the caller discards its outputs and plans again).
    """
    commit.committed_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = json.dumps(commit.to_json(), indent=1, sort_keys=True, default=str).encode()
    if not lake.create_exclusive(commit_path(commit.batch_id), record):
        raise CommitConflict(commit.run_id, commit.batch_id)
    fault_point("after_commit_record")
    complete_publication(lake, commit)
    if commit.batch_id % CHECKPOINT_EVERY == 0:
        write_checkpoint(lake)


def complete_publication(lake: Lake, commit: Commit, *, _fault: str = "mid_publication") -> None:
    """Move any output of a committed batch still in staging; a no-op once all are moved."""
    move_outputs(lake, commit, _fault=_fault)
    fault_point("after_publication")
    lake.remove(f"{RUNS_STAGING_DIR}/{commit.run_id}")


def move_outputs(lake: Lake, commit: Commit, *, _fault: str | None = "mid_publication") -> None:
    """Move a committed batch's staged outputs into place (each move idempotent, and safe
    while the committing run or another reader is moving them too), so the published paths
    hold the whole batch. Leaves the staging folder to the committing run or recovery."""
    for src, dst in commit.moves:
        lake.move(src, dst)
        if _fault:
            fault_point(_fault)


def drop_old_state(lake: Lake, commits: list[Commit]) -> None:
    """Delete the customer-state snapshot that just fell out of the last STATES_KEPT.

    Each batch writes the full state; only the latest is ever read, the few before it are
    kept for readers that loaded the log a moment earlier. One snapshot goes per batch, so
    the lake's size does not grow with the number of batches either.
    """
    with_state = [c for c in commits if c.published_under(CUSTOMERS_DIR)]
    if len(with_state) > STATES_KEPT:
        old = with_state[-STATES_KEPT - 1]
        folders = set()
        for p in old.published_under(CUSTOMERS_DIR):
            folder = posixpath.dirname(p)
            if posixpath.basename(folder).startswith(("run-", "batch-")):
                folders.add(folder)  # the snapshot's own folder (run-<id>, or older batch-<id>)
            else:
                lake.remove(p)  # a snapshot from before in-place folders
        for folder in sorted(folders):
            lake.remove(folder)


def write_checkpoint(lake: Lake) -> None:
    """Compact the commit log into one file (the records stay: they are the source of truth)."""
    commits = load_commits(lake)
    lake.write_json(
        CHECKPOINT_PATH,
        {"last_batch_id": commits[-1].batch_id if commits else 0,
         "commits": [c.to_json() for c in commits]},
    )


def discard_run(lake: Lake, run_id: str) -> None:
    """Delete everything an uncommitted run wrote: its in-place outputs, then its staging
    (in that order, so a crash half-way leaves the staging folder that makes the next
    recovery finish the job)."""
    for kind_dir in IN_PLACE_DIRS:
        lake.remove(run_dir(kind_dir, run_id))
    lake.remove(f"{RUNS_STAGING_DIR}/{run_id}")


def recover(lake: Lake, commits: list[Commit], is_dead: Callable[[str], bool]) -> list[str]:
    """Finish interrupted publications and discard the outputs of dead runs that never
    committed.

    `is_dead(run_id)` says whether an uncommitted run is known to have stopped; a run that
    may still be live (on another machine sharing the lake) keeps its staging: it commits
    or loses its race by itself, and until a commit names them its files are never read.
    Finishing a committed batch's publication is safe at any time, even while its own run
    is still moving. Returns the run ids whose outputs were discarded. Only staging
    folders that exist are looked at, so the cost does not grow with history.
    """
    committed = {c.run_id: c for c in commits}
    discarded = []
    for run_id in lake.list_children(RUNS_STAGING_DIR):
        commit = committed.get(run_id)
        if commit is not None:
            complete_publication(lake, commit, _fault="mid_recovery")
        elif is_dead(run_id):
            discard_run(lake, run_id)
            discarded.append(run_id)
    return discarded


def as_date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
