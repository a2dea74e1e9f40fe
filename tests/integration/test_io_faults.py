"""A full disk, a read-only lake and a serving database that is down when the run starts:
each gives a clear one-line error and exit 1, publishes nothing it should not, and the next
run (fault gone) ends exactly where a run that never failed ends.

Faults are injected without root: PURCHASES_IO_FAULT makes the lake's own writes raise the
OSError a full or read-only file system raises (faults.io_fault, at storage.Lake's edges),
and a database "down" is a PostgreSQL URL on a port nothing listens on.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from lakecheck import PURCHASES, assert_clean_lake, cli_env, end_state, purchases

from conftest import HEADER
from purchases import bronze, commit_log, faults, history, serving
from purchases.config import load_settings
from purchases.errors import PermanentError, PurchasesError, TransientError
from purchases.generate import generate
from purchases.orchestrator import RunFailed, run_pipeline
from purchases.storage import Lake

# Folders readers list. The customer state and purchase keys are reached only through a
# commit record, so a file there without one is invisible by design (the next run drops it).
PUBLISHED_LAYERS = ("silver", "quarantine", "gold")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A home where day 1 is processed and day 2 is landed and pending, plus the end state
    of that home after one uninterrupted run."""
    root = tmp_path_factory.mktemp("iofaults")
    files = generate(root / "input", rows=400, days=2, bad_ratio=0.05, seed=8)
    start = root / "start"
    settings = load_settings(home=start)
    lake = Lake(settings.lake_uri)
    bronze.land(lake, [files[0].path], files[0].ingestion_date)
    run_pipeline(settings)
    bronze.land(lake, [files[1].path], files[1].ingestion_date)
    reference = root / "reference"
    shutil.copytree(start, reference)
    assert purchases(reference, "run").returncode == 0
    yield {"start": start, "reference": reference, "reference_state": end_state(reference)}


def copy_home(template: dict[str, Any], tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(template["start"], home)
    return home


def lake_files(home: Path) -> list[str]:
    """Every file of the lake, hidden temporaries included."""
    lake = Lake(load_settings(home=home).lake_uri)
    return lake.list_files("")


def visible(home: Path) -> dict[str, Any]:
    """What readers and the business query see: commits, published files, serving table."""
    settings = load_settings(home=home)
    lake = Lake(settings.lake_uri)
    with serving.connect(settings) as db:
        summary = db.summary()
    return {
        "commits": [c.batch_id for c in commit_log.load_commits(lake)],
        "files": {layer: [p for p in lake.list_files(layer) if "/." not in p]
                  for layer in PUBLISHED_LAYERS},
        "summary": summary,
    }


def assert_one_clear_line(stderr: str, *phrases: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


# --- the translation at the lake's edge -------------------------------------------------------


@pytest.mark.parametrize(
    "code, kind, phrase",
    [(errno.ENOSPC, PermanentError, "no space left on device"),
     (errno.EDQUOT, PermanentError, "no space left on device"),
     (errno.EROFS, PermanentError, "read-only file system"),
     (errno.EACCES, PermanentError, "permission denied"),
     (errno.ECONNRESET, TransientError, "reset"),
     (errno.ETIMEDOUT, TransientError, "timed out")],
)
def test_lake_write_errors_become_the_products_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, kind: type, phrase: str
) -> None:
    lake = Lake(str(tmp_path / "lake"))

    def refuse(*_: Any, **__: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(lake.fs, "open", refuse)
    with pytest.raises(kind) as raised:
        lake.write_json("_state/x.json", {"a": 1})
    assert phrase in str(raised.value).lower() and str(tmp_path / "lake") in str(raised.value)
    assert "_state/x.json" in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)  # chained: --debug shows the cause
    assert lake.list_files("_state") == []  # nothing half-written left behind


def test_other_os_errors_pass_through_unchanged(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(str(tmp_path / "lake"))

    def clash(*_: Any, **__: Any) -> None:
        raise IsADirectoryError(errno.EISDIR, "Is a directory")

    monkeypatch.setattr(lake.fs, "mv", clash)
    with pytest.raises(IsADirectoryError):  # a bug of ours, not the disk's: shown as it is
        lake.write_bytes("a.json", b"{}")


def test_io_fault_spec_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.IO_FAULT_ENV, "full")
    with pytest.raises(ValueError, match="enospc, erofs, eacces"):
        Lake(str(tmp_path / "lake"))


# --- disk full -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "enospc:1",  # the disk is full before the run writes anything
        "enospc:_runs/",  # fills up while bronze_to_silver stages its output
        "enospc:_state/commits/",  # fills up at the commit record itself
    ],
)
def test_disk_full_fails_cleanly_publishes_nothing_and_next_run_completes(
    template: dict[str, Any], tmp_path: Path, fault: str
) -> None:
    home = copy_home(template, tmp_path)
    before = visible(home)
    failed = purchases(home, "run", PURCHASES_IO_FAULT=fault)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lake = str(home / "lake")
    assert_one_clear_line(failed.stderr, lake, "no space left on device",
                          "free space there and run again")
    if fault != "enospc:1":  # a run that had started says it resumes
        assert_one_clear_line(failed.stderr, "failed in step", "`purchases run` resumes")
    assert visible(home) == before, "a run that failed on a full disk published something"
    assert not [p for p in lake_files(home) if p.endswith(".tmp")], "partial temporary left"

    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)


def file_size_limit(limit: int):
    """preexec_fn: the child may write no file beyond `limit` bytes (writes then fail with
    EFBIG, as on a full disk; Python ignores SIGXFSZ), so the engine's own Parquet writes,
    which storage.Lake never sees, meet a real write error without root."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_engine_write_failing_for_real_publishes_nothing_and_next_run_completes(
    template: dict[str, Any], tmp_path: Path
) -> None:
    """The big writes are DuckDB's (staged Parquet), outside storage.Lake: a real write error
    there (a file-size limit) must leave the lake as before and be resumed."""
    home = copy_home(template, tmp_path)
    before = visible(home)
    failed = subprocess.run([PURCHASES, "run"], capture_output=True, text=True,
                            env=cli_env(home), preexec_fn=file_size_limit(4096), timeout=300)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # Before: DuckDB's raw text (`IO Error: Async write failed ... {"exception_type":"IO",
    # ... "errno":"27"}`), retried as transient for ~14 s. Now: the lake's one line, with the
    # file and the fix, and no retry (a file-size limit does not go away).
    assert_one_clear_line(failed.stderr, "failed in step bronze_to_silver",
                          f"lake {home / 'lake'}: file too large", "(writing _runs/",
                          "raise the limit (ulimit -f)", "`purchases run` resumes")
    assert "{" not in failed.stderr and "IO Error" not in failed.stderr, failed.stderr
    [record] = history.load_all(Lake(str(home / "lake")), limit=1)
    [step] = [s for s in record.steps if s.step == "bronze_to_silver"]
    assert step.attempts == 1, record
    assert visible(home) == before
    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)


def test_disk_full_while_saving_the_run_record_still_names_the_cause(
    template: dict[str, Any], tmp_path: Path
) -> None:
    """On this home the run's 3rd lake write is the record saved as its first step starts,
    outside the step's own error handling. The error must still say what happened, not
    `failed in step None: None: None`."""
    home = copy_home(template, tmp_path)
    before = visible(home)
    failed = purchases(home, "run", PURCHASES_IO_FAULT="enospc:3")
    assert failed.returncode == 1
    assert_one_clear_line(failed.stderr, "no space left on device", str(home / "lake"))
    assert visible(home) == before
    assert purchases(home, "run").returncode == 0
    assert end_state(home) == template["reference_state"]


# --- read-only lake --------------------------------------------------------------------------


def test_read_only_lake_fails_at_the_first_write_and_changes_nothing(
    template: dict[str, Any], tmp_path: Path
) -> None:
    home = copy_home(template, tmp_path)
    before, files_before = visible(home), lake_files(home)
    failed = purchases(home, "run", PURCHASES_IO_FAULT="erofs")
    assert failed.returncode == 1
    assert_one_clear_line(failed.stderr, str(home / "lake"), "read-only file system",
                          "_state/running", "make it writable", "run again")
    # Failed before any work: not one file of the lake was touched.
    assert lake_files(home) == files_before
    assert visible(home) == before

    (tmp_path / "new.csv").write_text(HEADER + "1,A,B,a@b.co,1,2024-01-19,1.00,AUD\n")
    landing = purchases(home, "ingest", "--date", "2024-01-20", str(tmp_path / "new.csv"),
                        PURCHASES_IO_FAULT="erofs")
    assert landing.returncode == 1
    assert_one_clear_line(landing.stderr, "read-only file system", "bronze/year=2024")
    assert lake_files(home) == files_before

    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == template["reference_state"]
    assert_clean_lake(home)


# --- a fault at every write of a run -----------------------------------------------------------


@contextmanager
def io_fault(monkeypatch: pytest.MonkeyPatch, spec: str) -> Iterator[None]:
    faults.reset_io_faults()
    monkeypatch.setenv(faults.IO_FAULT_ENV, spec)
    try:
        yield
    finally:
        monkeypatch.delenv(faults.IO_FAULT_ENV)
        faults.reset_io_faults()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["enospc", "erofs"])
def test_disk_full_or_read_only_from_any_write_on_then_next_run_completes(
    template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The lake stops taking writes at its n-th change of the run, for every n until a run
    gets through: the run fails with the clear error, nothing becomes visible before the
    commit point, and the next run always reaches the reference state."""
    for key in [k for k in os.environ if k.startswith("PURCHASES_")]:
        monkeypatch.delenv(key)
    phrase = {"enospc": "no space left on device", "erofs": "read-only file system"}[kind]
    n = 0
    while True:
        n += 1
        assert n < 200, "the run never got through"
        home = tmp_path / f"{kind}-{n}"
        shutil.copytree(template["start"], home)
        settings = load_settings(home=home)
        before = visible(home)
        with io_fault(monkeypatch, f"{kind}:{n}"):
            try:
                run_pipeline(settings, sleep=lambda _: None)
            except PurchasesError as exc:
                message = str(exc)
            else:
                break  # n is past the run's last change: every position was tried
        assert phrase in message and str(home / "lake") in message, (n, message)
        after = visible(home)
        if after["commits"] == before["commits"]:
            assert after == before, f"{kind}:{n}: visible before the commit point"
        else:  # failed after the commit point: published, never served half
            assert after["summary"] in (before["summary"],
                                        template["reference_state"]["summary"]), n
        run_pipeline(settings)
        assert end_state(home) == template["reference_state"], f"{kind}:{n}"
        assert_clean_lake(home)
        shutil.rmtree(home)
    assert n > 10  # the fault really walked through the run's writes


# --- the serving database is down when the run starts ------------------------------------------


def closed_port() -> int:
    """A local TCP port nothing listens on (bound and released: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_database_down_at_start_commits_the_lake_and_next_run_serves_once(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: str
) -> None:
    files = generate(tmp_path / "input", rows=300, days=1, bad_ratio=0.05, seed=3)
    lake = Lake(settings.lake_uri)
    bronze.land(lake, [files[0].path], files[0].ingestion_date)
    down = f"postgresql+psycopg://postgres:s3cr3t-pw@127.0.0.1:{closed_port()}/test"
    waits: list[float] = []
    with pytest.raises(RunFailed) as failed:
        run_pipeline(settings.model_copy(update={"database_url": down}), sleep=waits.append)
    record = failed.value.record
    assert record.failed_step == "gold_to_staging"
    steps = {s.step: s for s in record.steps}
    assert steps["gold_to_staging"].attempts == 4 and len(waits) == 3  # retried, then gave up
    assert steps["upsert"].status == "skipped"
    message = str(failed.value)
    assert "s3cr3t-pw" not in message and "***" in message, message
    assert "127.0.0.1" in message and "gold_to_staging" in message
    # The lake batch is committed and published; the database has seen nothing.
    (commit,) = commit_log.load_commits(lake)
    assert commit_log.gold_files(commit) and all(lake.exists(p) for p in commit.published)

    good = settings.model_copy(update={"database_url": postgres_database})
    rerun = run_pipeline(good)
    assert rerun.status == "succeeded"
    assert rerun.counts()["customers_upserted"] == commit.customers_changed > 0
    with serving.connect(good) as db:
        assert db.applied_batches() == {commit.batch_id}
        served = db.summary()
    again = run_pipeline(good)
    assert again.counts().get("customers_upserted", 0) == 0  # served exactly once
    with serving.connect(good) as db:
        assert db.summary() == served
    silver_total = sum(r["amount_aud"] for r in _silver(lake))
    assert sum(r["total_spent_aud"] for r in served) == silver_total


def _silver(lake: Lake) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for rel in lake.list_files("silver"):
        if rel.endswith(".parquet") and "/." not in rel:
            rows.extend(pq.read_table(lake.full(rel)).to_pylist())
    return rows


@pytest.mark.slow
def test_database_down_at_start_gives_one_clear_line_on_the_cli(template, tmp_path) -> None:
    """The same through the CLI (the retries' real waits: about 14 seconds)."""
    home = copy_home(template, tmp_path)
    down = f"postgresql+psycopg://postgres:s3cr3t-pw@127.0.0.1:{closed_port()}/test"
    failed = purchases(home, "run", PURCHASES_DATABASE_URL=down)
    assert failed.returncode == 1
    assert_one_clear_line(failed.stderr, "gold_to_staging", "database postgresql+psycopg://",
                          "127.0.0.1", "`purchases run` resumes")
    assert "s3cr3t-pw" not in failed.stderr + failed.stdout
    rerun = purchases(home, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == template["reference_state"]
