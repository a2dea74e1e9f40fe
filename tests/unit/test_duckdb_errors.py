"""DuckDB's write errors: a write that cannot succeed is permanent and reads as one line.

Before, every DuckDB I/O error was transient: a real write failure (disk full, file too
large) was retried for ~14 s and shown raw (`IO Error: Async write failed for range ...:
{"exception_type":"IO",...,"errno":"27"}`). Now the errno (from DuckDB's JSON, or its
strerror text) goes through the lake's own translation (storage.lake_write_error).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from purchases.engines.duckdb_engine import DuckDBEngine, _translate
from purchases.errors import PermanentError, TransientError
from purchases.storage import Lake

CHILD = r"""
import json, os, sys
from purchases.engines.duckdb_engine import DuckDBEngine
from purchases.errors import PurchasesError
from purchases.storage import Lake
lake = Lake(sys.argv[1])
engine = DuckDBEngine(lake)
os.makedirs(lake.full("_runs/r1/silver"), exist_ok=True)
try:
    engine.write_parquet("SELECT range AS a, md5(range::VARCHAR) AS b FROM range(200000)",
                         lake.url("_runs/r1/silver"))
except PurchasesError as exc:
    print(json.dumps([type(exc).__name__, str(exc), str(exc.__cause__)]))
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writes beyond fail with EFBIG


def test_a_real_write_over_the_file_size_limit_is_permanent_and_names_the_fix(tmp_path) -> None:
    lake = tmp_path / "lake"
    done = subprocess.run([sys.executable, "-c", CHILD, str(lake)], capture_output=True,
                          text=True, preexec_fn=_limit, timeout=120, check=True)
    kind, message, cause = json.loads(done.stdout)
    assert "errno" in cause  # DuckDB's own text, kept as the cause
    assert kind == "PermanentError"
    assert message == (
        f"lake {lake}: file too large for the file system or this process's file-size limit "
        "(writing _runs/r1/silver/part-0.parquet): raise the limit (ulimit -f) and run again")


@pytest.mark.parametrize(
    ("text", "kind", "phrase"),
    [  # DuckDB's wordings for errors it does not give an errno for
        ('IO Error: Could not write file "{lake}/gold/a.parquet": No space left on device',
         PermanentError, "lake {lake}: no space left on device (writing gold/a.parquet): "
                         "free space there and run again"),
        ('IO Error: Cannot open file "{lake}/silver/x.parquet": Read-only file system',
         PermanentError, "lake {lake} is on a read-only file system (writing silver/x.parquet)"),
        ('IO Error: Cannot open file "{lake}/silver/x.parquet": Permission denied',
         PermanentError, "lake {lake}: permission denied (writing silver/x.parquet)"),
        ('IO Error: Could not write file "/spill/duckdb_temp_1_storage-0.tmp": File too large',
         PermanentError, "DuckDB's temporary files in /spill (TMPDIR): file too large"),
        # A file gone or a hiccup: retried as before.
        ('IO Error: Cannot open file "{lake}/bronze/x.csv": No such file or directory',
         TransientError, "DuckDB I/O error: IO Error: Cannot open file"),
        ('IO Error: Async write failed: {{"exception_type":"IO","exception_message":'
         '"Could not write file \\"{lake}/a\\": Connection reset by peer","errno":"104"}}',
         TransientError, "lake {lake}: Connection reset by peer (writing a)"),
    ],
    ids=["enospc", "erofs", "eacces", "efbig-spill", "enoent", "econnreset"],
)
def test_duckdb_io_messages_are_translated_by_errno(
    tmp_path: Path, text: str, kind: type, phrase: str
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    translated = _translate(duckdb.IOException(text.format(lake=lake.root)), lake, "/spill")
    assert type(translated) is kind
    assert phrase.format(lake=lake.root) in str(translated)
    assert "{" not in str(translated)


def test_ctrl_c_during_a_query_is_a_keyboard_interrupt_not_a_failed_step() -> None:
    """DuckDB's client turns Ctrl-C into RuntimeError('Query interrupted'); the engine gives
    the interrupt back, so the run is recorded as interrupted, not as a failed step."""
    # As in a terminal (a test worker may have SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    engine = DuckDBEngine()
    try:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt) as caught:  # seconds of work, stopped at 0.3 s
            engine.fetch("SELECT count(*) FROM range(3000000000) t(i) WHERE i % 7 = 3")
        assert str(caught.value.__cause__) == "Query interrupted"
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
        engine.close()
