"""Run history: one record per run (steps, attempts, durations, files, counts, error)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from purchases.storage import Lake

RUNS_DIR = "_state/runs"


@dataclass
class StepRun:
    step: str
    status: str = "pending"  # pending | running | succeeded | failed | skipped
    attempts: int = 0
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


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

    def counts(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for s in self.steps:
            merged.update(s.counts)
        return merged

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        data["steps"] = [StepRun(**s) for s in data.get("steps", [])]
        return cls(**data)


def save(lake: Lake, record: RunRecord) -> None:
    lake.write_json(f"{RUNS_DIR}/{record.run_id}.json", asdict(record))


def load_all(lake: Lake) -> list[RunRecord]:
    """Every run, oldest first (run ids sort by start time)."""
    return [RunRecord.from_json(d) for _, d in lake.iter_json(RUNS_DIR)]


def load(lake: Lake, run_id: str) -> RunRecord | None:
    rel = f"{RUNS_DIR}/{run_id}.json"
    return RunRecord.from_json(lake.read_json(rel)) if lake.exists(rel) else None
