"""Fault injection for crash tests: PURCHASES_FAULT=<point> kills the process at that point.

`PURCHASES_FAULT=<point>` dies at the first time the point is reached;
`PURCHASES_FAULT=<point>:<n>` at the n-th time (e.g. `mid_publication:3`, the third move), so
points inside loops can be hit at every position. The death is `os._exit(137)`: no `finally`,
no flush, no atexit, exactly what a `kill -9` or a lost machine leaves behind.
"""

from __future__ import annotations

import os
from collections import Counter

FAULT_ENV = "PURCHASES_FAULT"
KILLED_EXIT_CODE = 137

FAULT_POINTS: tuple[str, ...] = (
    # orchestrator
    "after_run_start",  # lock held, run record saved, no step run yet
    # bronze_to_silver (staging only: nothing is visible yet)
    "after_silver_write",
    "after_quarantine_write",
    "after_keys_write",
    "after_bronze_to_silver",  # plan.json written
    # silver_to_gold
    "after_gold_write",
    "after_state_write",
    "after_commit_record",  # the commit point passed, no output moved yet
    "mid_publication",  # after each move of a committed output (use :n for the n-th)
    "after_publication",  # every output moved, staging folder not yet removed
    "after_commit",  # publish() returned
    "mid_recovery",  # after each move the next run's recovery makes (use :n)
    # gold_to_staging / upsert (serving.py holds the last two)
    "after_staging_load",
    "inside_upsert",
    "after_upsert",
    # storage: any small atomic write (run records, plans, commits), between the temporary
    # file and its rename (use :n for the n-th write of the run)
    "mid_atomic_write",
)
"""Every named point. A crash test kills a run at each one and checks the re-run's result."""

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Die abruptly (as a kill -9 would) when PURCHASES_FAULT names this point.

    Points: see FAULT_POINTS.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == (int(nth) if nth else 1):
        os._exit(KILLED_EXIT_CODE)
