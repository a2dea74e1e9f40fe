"""Crash safety: a `purchases run` killed (os._exit, as kill -9) at any fault point, then run
again, ends exactly where a run that was never killed ends: same serving table, same silver,
quarantine, gold and customer state, every file processed once, nothing left half-done.
The same on an `s3://` lake: test_crash_s3.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lakecheck import assert_clean_lake, end_state, purchases

from purchases import bronze
from purchases.config import load_settings
from purchases.faults import FAULT_POINTS, KILLED_EXIT_CODE
from purchases.generate import generate
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake

pytestmark = pytest.mark.slow

# Points reached by a plain run (mid_recovery needs an earlier crash: tested on its own);
# `:n` variants hit a later pass of a point inside a loop.
SINGLE_FAULTS = [p for p in FAULT_POINTS if p != "mid_recovery"] + [
    "mid_publication:2", "mid_publication:5",
    *(f"mid_atomic_write:{n}" for n in range(2, 9)),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A home where day 1 is processed and days 2-3 are landed and pending, plus the end
    state of the same home after one uninterrupted run."""
    root = tmp_path_factory.mktemp("crash")
    files = generate(root / "input", rows=1500, days=3, bad_ratio=0.03)
    start = root / "start"
    settings = load_settings(home=start)
    lake = Lake(settings.lake_uri)
    bronze.land(lake, [files[0].path], files[0].ingestion_date)
    run_pipeline(settings)
    for f in files[1:]:
        bronze.land(lake, [f.path], f.ingestion_date)
    reference = root / "reference"
    shutil.copytree(start, reference)
    run = purchases(reference, "run")
    assert run.returncode == 0, run.stderr
    yield {"start": start, "reference": reference, "root": root,
           "reference_state": end_state(reference)}


def _copy(template: dict[str, Any], tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(template["start"], home)
    return home


@pytest.mark.parametrize("fault", SINGLE_FAULTS)
def test_killed_run_then_rerun_equals_uninterrupted_run(
    template: dict[str, Any], tmp_path: Path, fault: str
) -> None:
    home = _copy(template, tmp_path)
    killed = purchases(home, "run", PURCHASES_FAULT=fault)
    assert killed.returncode == KILLED_EXIT_CODE, (
        f"fault point {fault} was not reached: {killed.stdout} {killed.stderr}")
    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert "succeeded" in rerun.stdout
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)


def test_killed_again_while_recovering(template: dict[str, Any], tmp_path: Path) -> None:
    home = _copy(template, tmp_path)
    assert purchases(home, "run", PURCHASES_FAULT="mid_publication").returncode == (
        KILLED_EXIT_CODE)
    # The next run starts by finishing that publication, and dies in the middle of it.
    assert purchases(home, "run", PURCHASES_FAULT="mid_recovery:2").returncode == (
        KILLED_EXIT_CODE)
    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)
    runs = purchases(home, "runs", "--format", "json")
    statuses = [r["status"] for r in json.loads(runs.stdout)]
    assert statuses == ["succeeded", "interrupted", "interrupted", "succeeded"]


def test_killed_twice_in_a_row_at_every_step(template: dict[str, Any], tmp_path: Path) -> None:
    home = _copy(template, tmp_path)
    for fault in ("after_silver_write", "after_commit_record", "inside_upsert"):
        assert purchases(home, "run", PURCHASES_FAULT=fault).returncode == KILLED_EXIT_CODE
    assert purchases(home, "run").returncode == 0
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)


def test_interrupted_run_is_recorded_and_the_next_run_says_what_it_repaired(
    template: dict[str, Any], tmp_path: Path
) -> None:
    home = _copy(template, tmp_path)
    assert purchases(home, "run", PURCHASES_FAULT="mid_publication").returncode == (
        KILLED_EXIT_CODE)
    assert purchases(home, "run").returncode == 0
    runs = json.loads(purchases(home, "runs", "--format", "json").stdout)
    killed, resumed = runs[-2], runs[-1]
    assert killed["status"] == "interrupted"
    shown = json.loads(purchases(home, "runs", "show", resumed["run_id"], "--format",
                                 "json").stdout)
    assert shown["recovered"]["interrupted_runs"] == [killed["run_id"]]
    assert shown["recovered"]["published_batches"] == [2]
    text = purchases(home, "runs", "show", resumed["run_id"]).stdout
    assert "recovered first: published batches: 2" in text


# --- the same on an S3 lake (moto's server) ------------------------------------------------------
