"""Test helpers for orchestration tests: drive the CLI in its own process and capture the end
state of a home (serving table, lake layers, commit log) in a comparable form."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import forked_cli

from purchases import commit_log, serving
from purchases.config import load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.storage import Lake

PURCHASES = forked_cli.PURCHASES


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `purchases` subprocess working on `home` (nothing inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env.update(PURCHASES_HOME=str(home), COLUMNS="250")
    env.update(extra)  # COLUMNS too may be given
    return env


def purchases(home: Path, *args: str, timeout: float = 300, **env: str
              ) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion, in a new process (forked_cli: without re-importing it)."""
    return forked_cli.run(list(args), cli_env(home, **env), timeout)


def _multiset(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(sorted(r.items())) for r in rows)


def end_state(home: Path) -> dict[str, Any]:
    """Everything a run produces that must not depend on how many times it was killed."""
    settings = load_settings(home=home)
    lake = Lake(settings.lake_uri)
    commits = commit_log.load_commits(lake)
    with serving.connect(settings) as db:
        summary = db.summary()
    return {
        "summary": summary,
        "silver": _multiset(lake_query(lake, "SELECT * FROM silver")),
        "quarantine": _multiset(lake_query(lake, "SELECT * FROM quarantine")),
        "gold": _multiset(lake_query(lake, "SELECT * FROM gold")),
        "customers": _multiset(lake_query(lake, "SELECT * FROM customers")),
        "batches": [(c.batch_id, sorted(f.file_id for f in c.files)) for c in commits],
        "file_counts": sorted(
            (f.path, f.rows_in, f.accepted, f.duplicates, tuple(sorted(f.rejected.items())))
            for c in commits for f in c.files
        ),
    }


def assert_clean_lake(home: Path) -> None:
    """No staging, no run left marked active, no orphan batch folder, no purchase twice."""
    settings = load_settings(home=home)
    lake = Lake(settings.lake_uri)
    assert lake.list_children(commit_log.RUNS_STAGING_DIR) == []
    assert lake.list_children("_state/running") == []
    commits = commit_log.load_commits(lake)
    published = {p for c in commits for p in c.published}
    for kind in (commit_log.CUSTOMERS_DIR, commit_log.PURCHASE_KEYS_DIR, "silver", "quarantine",
                 "gold"):
        for rel in lake.list_files(kind):
            name = rel.rsplit("/", 1)[-1]
            assert name.startswith(".") or rel in published, f"orphan file {rel}"
    ids = lake_query(lake, "SELECT COUNT(*) AS n, COUNT(DISTINCT purchase_id) AS d FROM silver")
    assert ids[0]["n"] == ids[0]["d"], "a purchase is in silver twice"
    processed = [f.file_id for c in commits for f in c.files]
    assert len(processed) == len(set(processed)), "a file was processed twice"
    for c in commits:
        for f in c.files:
            assert f.rows_in == f.accepted + f.rejected_total + f.duplicates
