"""Fault injection for crash tests: PURCHASES_FAULT=<point> kills the process at that point.

`PURCHASES_FAULT=<point>` dies at the first time the point is reached;
`PURCHASES_FAULT=<point>:<n>` at the n-th time (e.g. `mid_publication:3`, the third move), so
points inside loops can be hit at every position. The death is `os._exit(137)`: no `finally`,
no flush, no atexit, exactly what a `kill -9` or a lost machine leaves behind.

`PURCHASES_IO_FAULT` makes the lake's own writes (storage.Lake: writing a file, copying one in,
creating a folder, moving, deleting) fail with the OSError a sick file system gives, so tests
can fill the disk or make the lake read-only without root (see io_fault).
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter

FAULT_ENV = "PURCHASES_FAULT"
DELAY_ENV = "PURCHASES_FAULT_DELAY"
"""`<point>:<seconds>`: pause there each time it is reached (widens race windows in tests)."""
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
    # gold_to_staging / upsert (the serving package holds the last two)
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

    Points: see FAULT_POINTS. PURCHASES_FAULT_DELAY=<point>:<whole seconds> pauses there instead
    (racing-writer tests start a second run inside the pause).
    """
    delay = os.environ.get(DELAY_ENV)
    if delay and delay.partition(":")[0] == name:
        # Whole seconds: the package keeps floats out entirely (test_architecture).
        time.sleep(int(delay.partition(":")[2] or 1))
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == (int(nth) if nth else 1):
        os._exit(KILLED_EXIT_CODE)


IO_FAULT_ENV = "PURCHASES_IO_FAULT"

IO_FAULTS: dict[str, tuple[int, frozenset[str]]] = {
    # A full disk refuses new bytes and new folders; renames and deletes still work there.
    "enospc": (errno.ENOSPC, frozenset({"write", "mkdir"})),
    # A read-only lake (or one we may not write) refuses every change.
    "erofs": (errno.EROFS, frozenset({"write", "mkdir", "move", "remove"})),
    "eacces": (errno.EACCES, frozenset({"write", "mkdir", "move", "remove"})),
}
"""Fault kind -> (errno raised, lake operations it hits)."""

_io_hits = 0


def io_fault(op: str, rel: str) -> None:
    """Raise OSError as a full disk or a read-only lake would, when PURCHASES_IO_FAULT says so.

    Called by storage.Lake before each change it makes to the lake; `op` is one of write
    (a file written or copied in), mkdir, move, remove; `rel` the lake-relative target path.

    `PURCHASES_IO_FAULT=<kind>`: every operation the kind hits fails (kinds: IO_FAULTS).
    `<kind>:<n>`: the n-th such operation of the process and every later one fail (a disk
    that filled up stays full). `<kind>:<path prefix>`: only those whose target starts with
    the prefix fail (e.g. `enospc:_state/commits/`, the commit record).
    """
    wanted = os.environ.get(IO_FAULT_ENV)
    if not wanted:
        return
    kind, _, where = wanted.partition(":")
    if kind not in IO_FAULTS:
        raise ValueError(f"{IO_FAULT_ENV}={wanted!r}: kind must be one of {', '.join(IO_FAULTS)}")
    code, ops = IO_FAULTS[kind]
    if op not in ops:
        return
    global _io_hits
    _io_hits += 1
    if where.isdigit():
        if _io_hits < int(where):
            return
    elif where and not rel.startswith(where):
        return
    raise OSError(code, os.strerror(code), rel)


def reset_io_faults() -> None:
    """Forget how many lake operations were counted (for tests that run several in-process
    runs, each expecting `PURCHASES_IO_FAULT=<kind>:<n>` to count from its own start)."""
    global _io_hits
    _io_hits = 0
