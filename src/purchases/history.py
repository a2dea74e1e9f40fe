"""Run history: one record per run (steps, attempts, durations, files, counts, error).

Records live in `_state/runs/<run_id>.json` (run ids sort by start time). A run also leaves a
marker in `_state/running/` while it is active, so the next run finds a run that died without
reading the whole history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from purchases.storage import Lake

RUNS_DIR = "_state/runs"
RUNNING_DIR = "_state/running"


@dataclass
class StepRun:
    step: str
    status: str = "pending"  # pending | running | succeeded | failed | skipped
    attempts: int = 0
    seconds: float = 0.0  # wall time of every attempt and the waits between them
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_class: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # what the step received
    started_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRun:
        return cls(**_known(cls, data))


@dataclass
class RunRecord:
    run_id: str
    trigger: str
    started_at: str
    status: str = "running"  # running | succeeded | failed | interrupted
    finished_at: str | None = None
    seconds: float = 0.0
    steps: list[StepRun] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    failed_step: str | None = None
    error_class: str | None = None
    error: str | None = None
    input: dict[str, Any] = field(default_factory=dict)  # the run's input (year/month/day/path)
    requested_files: list[str] | None = None  # what the trigger asked for; None: all pending
    # What this run found left by runs that died, and repaired before its own work.
    recovered: dict[str, list[Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for s in self.steps:
            merged.update(s.counts)
        return merged

    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected rows of every file of the run, per reason code."""
        total: dict[str, int] = {}
        for f in self.files:
            for reason, n in (f.get("rejected") or {}).items():
                total[reason] = total.get(reason, 0) + n
        return dict(sorted(total.items()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = _known(cls, data)
        data["steps"] = [StepRun.from_json(s) for s in data.get("steps", [])]
        return cls(**data)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    # Records written by an older or newer version still load: unknown keys are ignored.
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def save(lake: Lake, record: RunRecord) -> None:
    lake.write_json(f"{RUNS_DIR}/{record.run_id}.json", asdict(record))


def mark_running(lake: Lake, run_id: str, owner: str = "") -> None:
    """Note that a run is active (before its record, so a crash never leaves it unnoticed).
    `owner` names the writer lock the run holds (host and home), so only a run holding that
    same lock may take the marker for a dead run's."""
    lake.write_json(f"{RUNNING_DIR}/{run_id}.json", {"run_id": run_id, "owner": owner})


def running_owner(lake: Lake, run_id: str) -> str:
    """The owner a running marker names ("" for markers from before owners were noted)."""
    rel = f"{RUNNING_DIR}/{run_id}.json"
    try:
        return str(lake.read_json(rel).get("owner") or "")
    except FileNotFoundError:
        return ""


def clear_running(lake: Lake, run_id: str) -> None:
    lake.remove(f"{RUNNING_DIR}/{run_id}.json")


def running(lake: Lake) -> list[str]:
    """Run ids marked active. Under the writer lock these are runs that died."""
    return [
        p.rsplit("/", 1)[-1][: -len(".json")]
        for p in lake.list_files(RUNNING_DIR)
        if p.endswith(".json") and not p.rsplit("/", 1)[-1].startswith(".")
    ]


def run_ids(lake: Lake) -> list[str]:
    """Every run id, oldest first (names only: no record is read)."""
    return [
        p.rsplit("/", 1)[-1][: -len(".json")]
        for p in lake.list_files(RUNS_DIR)
        if p.endswith(".json") and not p.rsplit("/", 1)[-1].startswith(".")
    ]


def load_all(lake: Lake, limit: int | None = None) -> list[RunRecord]:
    """Every run, oldest first (run ids sort by start time); with limit, only the latest ones."""
    ids = run_ids(lake)
    if limit is not None:
        ids = ids[-limit:] if limit > 0 else []
    return [r for r in (load(lake, i) for i in ids) if r is not None]


def can_name_a_record(run_id: str) -> bool:
    """Whether run_id can be a record's file name: one path component (no /, \\ or leading
    .), within a file name's length. Ids are chosen by the orchestrator, Glue's --run_id or a
    Step Functions execution name; `runs show` asks before it makes a path of a typed one."""
    return (0 < len(run_id.encode()) <= 200 and not run_id.startswith(".")
            and not set(run_id) & {"/", "\\", "\0"})


def load(lake: Lake, run_id: str) -> RunRecord | None:
    try:
        return RunRecord.from_json(lake.read_json(f"{RUNS_DIR}/{run_id}.json"))
    except FileNotFoundError:
        return None
