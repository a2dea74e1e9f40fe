"""Fault injection for crash tests: PURCHASES_FAULT=<point> kills the process at that point."""

from __future__ import annotations

import os

FAULT_ENV = "PURCHASES_FAULT"


def fault_point(name: str) -> None:
    """Die abruptly (as a kill -9 would) when PURCHASES_FAULT names this point.

    Points: after_bronze_to_silver, after_silver_write, after_quarantine_write,
    after_gold_write, after_commit, after_staging_load, inside_upsert, after_upsert.
    """
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)
