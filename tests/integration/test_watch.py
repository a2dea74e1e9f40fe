"""`purchases watch` as a user runs it: a subprocess watching a folder that receives files one
after another (some written slowly, some together, some renamed in), stopped by a signal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lakecheck import PURCHASES, assert_clean_lake, cli_env

from purchases import commit_log, history
from purchases.config import load_settings
from purchases.generate import generate
from purchases.storage import Lake

pytestmark = pytest.mark.slow

DEADLINE = 120  # seconds any wait may take before the test gives up (never a pass criterion)


class Watcher:
    """A running `purchases watch` whose log lines are collected as they come."""

    def __init__(self, home: Path, inbox: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [PURCHASES, "watch", str(inbox), *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=cli_env(home))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            assert self.proc.poll() is None, f"watch exited early:\n{self.log}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=DEADLINE)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    files = generate(tmp_path / "generated", rows=400, days=6, bad_ratio=0.02)
    return [f.path for f in files]


@pytest.fixture
def watcher_factory(tmp_path: Path) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(*args: str) -> Watcher:
        (tmp_path / "inbox").mkdir(exist_ok=True)  # a folder named to watch must exist
        w = Watcher(tmp_path / "home", tmp_path / "inbox", *args)
        started.append(w)
        w.wait_for(lambda: "watching" in w.log, "the watcher to start")
        return w

    yield start
    for w in started:
        w.kill()


def _commits(home: Path) -> list[commit_log.Commit]:
    return commit_log.load_commits(Lake(load_settings(home=home).lake_uri))


def _processed_names(home: Path) -> list[str]:
    return [f.path.rsplit("/", 1)[-1] for c in _commits(home) for f in c.files]


def test_watch_processes_every_file_exactly_once(
    tmp_path: Path, sources: list[Path], watcher_factory: Callable[..., Watcher]
) -> None:
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    w = watcher_factory("--settle", "2.0", "--debounce", "0.5")
    names = [p.name for p in sources]

    # Two files arriving together.
    for src in sources[:2]:
        shutil.copy(src, inbox / src.name)
    # One written slowly, in pieces, with pauses shorter than the settle period.
    data = sources[2].read_bytes()
    with (inbox / sources[2].name).open("wb") as fh:
        for i in range(0, len(data), len(data) // 8 + 1):
            fh.write(data[i : i + len(data) // 8 + 1])
            fh.flush()
            time.sleep(0.3)
    # One written under a temporary name and renamed in when complete.
    part = inbox / (sources[3].name + ".part")
    shutil.copy(sources[3], part)
    os.rename(part, inbox / sources[3].name)
    # Things that are never data.
    (inbox / ".hidden.csv").write_bytes(sources[0].read_bytes())
    (inbox / "notes.txt").write_text("not a csv")
    (inbox / "upload.csv.tmp").write_bytes(sources[4].read_bytes())
    # Two more together.
    for src in sources[4:]:
        shutil.copy(src, inbox / src.name)

    w.wait_for(lambda: sorted(_processed_names(home)) == sorted(names), "all six files run")
    assert w.stop(signal.SIGINT) == 0, w.log
    assert "SIGINT received: stopping after the current run" in w.log
    assert "Traceback" not in w.log

    # Every file landed once, processed once, whole.
    lake = Lake(load_settings(home=home).lake_uri)
    assert sorted(o.path.rsplit("/", 1)[-1] for o in lake.list_bronze()) == sorted(names)
    processed = _processed_names(home)
    assert sorted(processed) == sorted(names)
    assert all(f.rows_in == 400 for c in _commits(home) for f in c.files)
    assert_clean_lake(home)
    # Files arriving together were run together.
    batch_of = {f.path.rsplit("/", 1)[-1]: c.batch_id for c in _commits(home) for f in c.files}
    assert batch_of[names[0]] == batch_of[names[1]]
    assert batch_of[names[4]] == batch_of[names[5]]
    runs = [r for r in history.load_all(lake) if r.files]
    assert len(runs) < len(names) and all(r.trigger == "watch" for r in runs)
    assert all(r.status == "succeeded" for r in runs)
    # The inbox keeps only what is not data; landed files were moved aside.
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        ".hidden.csv", ".watch.lock", "notes.txt", "upload.csv.tmp"]
    assert sorted(p.name for p in (inbox / ".landed").rglob("*.csv")) == sorted(names)


def test_sigterm_during_a_run_finishes_it_first(
    tmp_path: Path, sources: list[Path], watcher_factory: Callable[..., Watcher]
) -> None:
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    w = watcher_factory("--settle", "0.3", "--debounce", "0.2")
    shutil.copy(sources[0], inbox / sources[0].name)
    w.wait_for(lambda: "starting a watch run" in w.log, "a run to start")
    assert w.stop(signal.SIGTERM) == 0, w.log
    assert "SIGTERM received" in w.log
    lake = Lake(load_settings(home=home).lake_uri)
    (run,) = history.load_all(lake)
    assert run.status == "succeeded" and len(run.files) == 1
    assert_clean_lake(home)


def test_restarted_watch_runs_files_left_pending(
    tmp_path: Path, sources: list[Path], watcher_factory: Callable[..., Watcher]
) -> None:
    """Files already in the inbox at start are taken; landing the same bytes again (after a
    watcher died between landing and moving the file aside) starts no second run."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(sources[0], inbox / sources[0].name)
    w = watcher_factory("--settle", "0.3", "--debounce", "0.2")
    w.wait_for(lambda: _processed_names(home) == [sources[0].name], "the first file")
    assert w.stop() == 0
    # As if the file had not been moved aside: it comes back, with the same bytes.
    shutil.copy(sources[0], inbox / sources[0].name)
    w2 = watcher_factory("--settle", "0.3", "--debounce", "0.2")
    w2.wait_for(lambda: "already processed" in w2.log, "the duplicate to be recognised")
    assert w2.stop() == 0
    assert _processed_names(home) == [sources[0].name]
    lake = Lake(load_settings(home=home).lake_uri)
    assert len([r for r in history.load_all(lake) if r.files]) == 1


def test_a_second_watch_of_the_same_inbox_is_refused(
    tmp_path: Path, sources: list[Path], watcher_factory: Callable[..., Watcher]
) -> None:
    """Two watchers raced for every file: the second logged "could not land" for each."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    w = watcher_factory("--settle", "0.3", "--debounce", "0.2")
    for other_home in (home, tmp_path / "other-home"):
        second = subprocess.run([PURCHASES, "watch", str(inbox)], capture_output=True,
                                text=True, env=cli_env(other_home), timeout=DEADLINE)
        assert second.returncode == 1, second.stderr
        assert second.stderr == (
            f"Error: inbox {inbox} is already watched by another `purchases watch` (it holds "
            f"{inbox / '.watch.lock'}): stop it first, or watch another folder\n")
    shutil.copy(sources[0], inbox / sources[0].name)
    w.wait_for(lambda: _processed_names(home) == [sources[0].name], "the file")
    assert w.stop() == 0 and "could not land" not in w.log, w.log
    # Once the first has stopped, the inbox can be watched again.
    again = watcher_factory("--settle", "0.3")
    assert again.stop() == 0


def test_a_file_rejected_whole_is_named_in_the_log(
    tmp_path: Path, sources: list[Path], watcher_factory: Callable[..., Watcher]
) -> None:
    """Its rows are in no count of the run's summary line, so the line alone hid it."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    w = watcher_factory("--settle", "0.3", "--debounce", "0.5")
    (inbox / "zero.csv").write_bytes(b"")
    shutil.copy(sources[0], inbox / sources[0].name)
    w.wait_for(lambda: " succeeded: 2 file(s)" in w.log, "the run")
    assert w.stop() == 0, w.log
    rejected = [line for line in w.lines if "file rejected whole" in line]
    assert len(rejected) == 1, w.log
    assert "file rejected whole: bronze/year=" in rejected[0], w.log
    assert "/zero.csv: empty (" in rejected[0], w.log
    assert sorted(_processed_names(home)) == sorted(["zero.csv", sources[0].name])
