"""CLI output that fits the terminal (issue 12): at any width every run id is shown whole on
one line and no line is wider than the terminal; `rejects` and `runs` say what they left out;
`run`'s reason list and `demo`'s lines wrap between words, never inside one."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

PURCHASES = str(Path(sys.executable).with_name("purchases"))

pytestmark = pytest.mark.slow


def purchases(home: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env.update(PURCHASES_HOME=str(home), COLUMNS=str(columns))
    proc = subprocess.run([PURCHASES, *args], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=600)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def widest(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three demo days with a third of the rows bad: over 1000 rejects, many reason codes."""
    home = tmp_path_factory.mktemp("fit") / "home"
    out = purchases(home, "demo", "--days", "3", "--rows", "1200", "--bad-ratio", "0.35").stdout
    return {"home": home, "demo": out}


@pytest.mark.parametrize("columns", [80, 100, 120, 140, 165, 200])
def test_runs_shows_whole_run_ids_and_fits(demo: dict, columns: int) -> None:
    ids = [r["run_id"] for r in json.loads(
        purchases(demo["home"], "runs", "--format", "json").stdout)]
    assert len(ids) == 3
    shown = purchases(demo["home"], "runs", columns=columns).stdout
    assert widest(shown) <= columns, shown
    lines = shown.splitlines()
    for run_id in ids:
        assert any(run_id in line for line in lines), (run_id, shown)
    assert "…" not in shown


@pytest.mark.parametrize("columns", [40, 100])
def test_db_current_reads_down_and_names_each_field_at_any_width(
    demo: dict, columns: int
) -> None:
    shown = purchases(demo["home"], "db", "current", columns=columns).stdout
    assert widest(shown) <= columns, shown
    lines = shown.splitlines()
    for field in ("dialect", "revision", "head", "up_to_date", "batches_applied"):
        # The field's name starts its line, its value beside it (never a "value" label).
        assert any(line.strip("│ ").startswith(field) for line in lines), (field, shown)
    assert not any(line.startswith("value ") for line in lines), shown


def test_runs_says_how_many_it_left_out(demo: dict) -> None:
    proc = purchases(demo["home"], "runs", "--limit", "2")
    assert "showing the latest 2 of 3 runs" in proc.stdout and "--limit 0" in proc.stdout
    assert widest(proc.stdout) <= 80
    proc = purchases(demo["home"], "runs", "--limit", "2", "--format", "json")
    assert len(json.loads(proc.stdout)) == 2  # JSON stays JSON: the note goes to stderr
    assert "showing the latest 2 of 3 runs" in proc.stderr
    assert purchases(demo["home"], "runs", "--limit", "0").stderr == ""


def test_rejects_names_its_truncation(demo: dict) -> None:
    every = json.loads(purchases(demo["home"], "rejects", "--limit", "0", "--format",
                                 "json").stdout)
    total = len(every)
    assert total > 1000  # more than the default limit

    table = purchases(demo["home"], "rejects").stdout
    note = " ".join(table.split())  # the note may wrap, between words
    assert f"showing 1000 of {total} rejected rows" in note
    assert "`--limit 0` shows all" in note and "--format csv > rejects.csv" in note
    assert widest(table) <= 80

    # CSV and JSON are unchanged for scripts: the note is on stderr only.
    proc = purchases(demo["home"], "rejects", "--limit", "7", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 7 and "showing" not in proc.stdout
    assert f"showing 7 of {total} rejected rows" in " ".join(proc.stderr.split())
    day = every[0]["ingestion_date"]
    of_day = sum(1 for r in every if r["ingestion_date"] == day)
    proc = purchases(demo["home"], "rejects", "--date", day, "--limit", "3", "--format", "json")
    assert len(json.loads(proc.stdout)) == 3
    assert f"showing 3 of {of_day} rejected rows of {day}" in " ".join(proc.stderr.split())

    # Nothing left out, nothing said.
    assert purchases(demo["home"], "rejects", "--limit", "0", "--format", "csv").stderr == ""
    assert "showing" not in purchases(demo["home"], "rejects", "--limit", str(total)).stdout


def test_demo_and_run_lines_wrap_between_words(demo: dict, tmp_path: Path) -> None:
    # demo: one line per day, every `name=value` whole on one line, none wider than 80.
    out = demo["demo"]
    assert widest(out) <= 80
    days = [line for line in out.splitlines() if re.match(r"\d{4}-\d{2}-\d{2}: ", line)]
    assert len(days) == 3
    tokens = re.findall(r"\b\w+=\d+", out)
    assert sum(t.startswith("rows=") for t in tokens) == 3
    assert {t.split("=")[0] for t in tokens} >= {"rows", "accepted", "rejected", "duplicates",
                                                 "customers_changed"}

    # run: the reason list of a batch with many reasons wraps between `reason=count` items.
    generated = tmp_path / "more"
    purchases(demo["home"], "generate", "--out", str(generated), "--rows", "900", "--days", "1",
              "--start", "2024-03-01", "--bad-ratio", "0.4", "--seed", "5")
    purchases(demo["home"], "ingest", str(generated), "--date", "2024-03-01")
    run = purchases(demo["home"], "run").stdout
    assert widest(run) <= 80, run
    listed = " ".join(run.split("rejected by reason:", 1)[1].split("customers changed")[0].split())
    reasons = dict(item.split("=") for item in listed.split(", "))
    assert len(reasons) >= 8
    record = json.loads(purchases(demo["home"], "runs", "--format", "json").stdout)[-1]
    assert sum(int(v) for v in reasons.values()) == record["rejected"]
    for reason, count in reasons.items():
        assert any(f"{reason}={count}" in line for line in run.splitlines()), reason


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():  # a group (typer's own click)
        yield from _commands(sub, (*path, name))


def test_help_paragraphs_break_only_where_their_lines_end_at_80_columns() -> None:
    """Rich keeps a docstring's line breaks after its first paragraph: a line longer than
    the 80-column help box wrapped, then broke again, leaving a word or two on a line."""
    import typer

    from purchases.cli import app

    too_long, seen, broken_summaries = [], [], []
    for path, command in _commands(typer.main.get_command(app)):
        seen.append(" ".join(path))
        # The first paragraph is the command's line in its group's list, where Rich keeps
        # its line breaks too ("report" broke after "FX"): it must be one line.
        if "\n" in (command.help or "").split("\n\n")[0].strip():
            broken_summaries.append(" ".join(path))
        paragraphs = (command.help or "").split("\n\n")[1:]
        too_long += [(" ".join(path), line) for p in paragraphs for line in p.splitlines()
                     if len(line.strip()) > 76]  # 80 columns less the box's margins
    assert {"watch", "demo", "aws package", "db current"} <= set(seen)
    assert too_long == []
    assert broken_summaries == []


@pytest.mark.parametrize("columns", [50, 79])
def test_help_below_80_columns_cuts_no_word(tmp_path: Path, columns: int) -> None:
    """Rich's panels cut option help mid-word below 80 columns (PURCHASES_DATAB…) and split
    choices (<table|csv|j son>): there the plain layout is used, which wraps at words."""
    import typer
    from lakecheck import purchases as forked  # a forked process: no interpreter start each

    from purchases.cli import app

    def shown(*args: str, width: int) -> str:
        done = forked(tmp_path / "home", *args, "--help", COLUMNS=str(width))
        assert done.returncode == 0, done.stderr
        return done.stdout

    for path, _ in _commands(typer.main.get_command(app)):
        text = shown(*path, width=columns)
        assert "…" not in text and widest(text) <= columns, (path, text)
        assert "<table|csv|j" not in text or "<table|csv|json>" in text, (path, text)
        if not path:
            for name in ("PURCHASES_HOME", "PURCHASES_DATABASE_URL", "PURCHASES_FX_RATES"):
                assert name in text, text
    assert "╭─ Options" in shown(width=80)  # Rich's panels from 80 columns on


def test_a_record_value_that_fits_the_line_is_not_folded() -> None:
    """The record layout padded after the value: at 50 columns a 34-character e-mail beside a
    15-character field name was folded one character short of the edge."""
    from rich.console import Console

    from purchases.render import OutputFormat, render_rows

    buf = io.StringIO()
    row = {"customer_id": 1, "full_name": "Siobhan Smith-Jones",
           "email": "siobhan_smithjones.1078@icloud.com", "total_spent_aud": 1}
    render_rows(Console(file=buf, width=50), [row], list(row), OutputFormat.table)
    assert "email           siobhan_smithjones.1078@icloud.com" in buf.getvalue().splitlines()
    assert widest(buf.getvalue()) <= 50
