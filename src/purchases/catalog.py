"""The lake's commit log: which bronze files are processed and which outputs are published.

A batch becomes visible by one atomic write, its commit record, `_state/commits/<id>.json`.
Outputs are staged under `_runs/<run_id>/` first and moved into place after the record is
written; moving is idempotent, so a publication interrupted at any instant is rolled forward
by the next run. Anything staged without a commit record is discarded and redone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from purchases.storage import Lake

COMMITS_DIR = "_state/commits"
RUNS_STAGING_DIR = "_runs"


@dataclass
class FileOutcome:
    """How one bronze file ended: row counts that add up to rows_in, or a whole-file reject."""

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
    def file_id(self) -> str:
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

    @property
    def published(self) -> list[str]:
        return [dst for _, dst in self.moves]

    def published_under(self, prefix: str) -> list[str]:
        return [p for p in self.published if p.startswith(prefix + "/")]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        data = dict(data)
        data["files"] = [FileOutcome(**f) for f in data["files"]]
        data["moves"] = [tuple(m) for m in data["moves"]]
        return cls(**data)


def commit_path(batch_id: int) -> str:
    return f"{COMMITS_DIR}/{batch_id:012d}.json"


def load_commits(lake: Lake) -> list[Commit]:
    """Every committed batch, oldest first."""
    return [Commit.from_json(data) for _, data in lake.iter_json(COMMITS_DIR)]


def processed_file_ids(commits: list[Commit]) -> set[str]:
    return {f.file_id for c in commits for f in c.files}


def next_batch_id(commits: list[Commit]) -> int:
    return (commits[-1].batch_id + 1) if commits else 1


def customer_state_files(commits: list[Commit]) -> list[str]:
    """The customer state as of the latest batch that published one."""
    for c in reversed(commits):
        state = c.published_under("_state/customers")
        if state:
            return state
    return []


def purchase_key_files(commits: list[Commit]) -> list[str]:
    return [p for c in commits for p in c.published_under("_state/purchase_keys")]


def gold_files(commit: Commit) -> list[str]:
    return commit.published_under("gold")


def publish(lake: Lake, commit: Commit) -> None:
    """Make a batch visible: write its commit record (the commit point), then move outputs."""
    commit.committed_at = datetime.now(UTC).isoformat(timespec="seconds")
    lake.write_json(commit_path(commit.batch_id), commit.to_json())
    complete_publication(lake, commit)


def complete_publication(lake: Lake, commit: Commit) -> None:
    """Move any output of a committed batch still in staging; a no-op once all are moved."""
    for src, dst in commit.moves:
        lake.move(src, dst)
    lake.remove(f"{RUNS_STAGING_DIR}/{commit.run_id}")


def recover(lake: Lake, commits: list[Commit]) -> list[str]:
    """Finish interrupted publications and drop staging of runs that never committed.

    Returns the run ids whose staging was discarded. Call only while holding the writer lock.
    """
    committed_runs = {c.run_id for c in commits}
    for c in commits:
        if lake.exists(f"{RUNS_STAGING_DIR}/{c.run_id}"):
            complete_publication(lake, c)
    discarded = []
    for rel in sorted({p.split("/")[1] for p in lake.list_files(RUNS_STAGING_DIR)}):
        if rel not in committed_runs:
            lake.remove(f"{RUNS_STAGING_DIR}/{rel}")
            discarded.append(rel)
    return discarded


def as_date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
