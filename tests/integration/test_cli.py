"""The CLI as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

PURCHASES = str(Path(sys.executable).with_name("purchases"))
HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"


@pytest.fixture
def cli(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["PURCHASES_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "200"

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([PURCHASES, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
        assert proc.returncode == expect, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        return proc

    return run


def test_ingest_run_top_rejects_runs_query(cli, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text(
        HEADER
        + "1,John,Doe,john@example.com,100,2024-01-10,100.00,USD\n"
        + "2,Ann,Lee,ann@x.io,101,2024-01-10,20.5,AUD\n"
        + "3,Bad,Row,b@x.io,102,2024-01-10,-1,AUD\n"
    )
    out = cli("ingest", str(inbox), "--date", "2024-01-15").stdout
    assert "bronze/year=2024/month=01/day=15/a.csv" in out
    out = cli("run").stdout
    assert "a.csv" in out and "negative_amount=1" in out and "customers changed: 2" in out

    top = json.loads(cli("top", "--format", "json").stdout)
    assert top == [
        {"customer_id": 1, "full_name": "John Doe", "email": "john@example.com",
         "total_spent_aud": "150.00"},
        {"customer_id": 2, "full_name": "Ann Lee", "email": "ann@x.io",
         "total_spent_aud": "20.50"},
    ]
    assert Decimal(top[0]["total_spent_aud"]) == Decimal("150.00")
    csv_out = cli("top", "-n", "1", "--format", "csv").stdout.splitlines()
    assert csv_out == ["customer_id,full_name,email,total_spent_aud",
                       "1,John Doe,john@example.com,150.00"]

    rejects = json.loads(cli("rejects", "--date", "2024-01-15", "--format", "json").stdout)
    assert [(r["purchase_id"], r["reason"]) for r in rejects] == [("102", "negative_amount")]
    assert rejects[0]["ingestion_date"] == "2024-01-15"

    runs = json.loads(cli("runs", "--format", "json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["accepted"] == 2
    shown = cli("runs", "show", runs[0]["run_id"]).stdout
    assert "bronze_to_silver" in shown and "upsert" in shown
    # A local run of one file has no s3_path: the line names what there is, not "=None".
    assert "input: day=" in shown and "None" not in shown

    q = json.loads(cli("query", "SELECT currency, SUM(amount_aud) AS aud FROM silver "
                       "GROUP BY currency ORDER BY currency", "--format", "json").stdout)
    assert q == [{"currency": "AUD", "aud": "20.50"}, {"currency": "USD", "aud": "150.00"}]
    gold = json.loads(cli("query", "SELECT customer_id, year, month, day FROM gold "
                          "ORDER BY customer_id", "--format", "json").stdout)
    assert [g["customer_id"] for g in gold] == [1, 2]
    assert cli("run").stdout.startswith("no pending files")


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("ingest", "nope.csv"), "nope.csv: no such file or folder", 1),
        (("ingest", "/dev/null"), "/dev/null: not a regular file or a folder", 1),  # it exists
        (("ingest", ".", "--date", "2024-13-01"), "'2024-13-01' is not a date YYYY-MM-DD", 2),
        (("query", "SELECT * FROM nowhere"), "nowhere", 1),
        (("runs", "show", "missing"), "no run 'missing'", 1),
        (("runs", "show", "r" * 300), f"no run '{'r' * 300}'", 1),  # was "File name too long"
        (("runs", "show", "../../lake/x"), "no run '../../lake/x'", 1),
        (("top", "-n", "0"), "", 2),
        (("frobnicate",), "No such command", 2),
    ],
)
def test_user_mistakes_give_one_line_errors(cli, tmp_path: Path, args, message, code) -> None:
    (tmp_path / "home" / "lake").mkdir(parents=True)  # a home where nothing is ingested yet
    proc = cli(*args, expect=code)
    assert message in proc.stderr
    if code == 1:
        assert proc.stderr.strip().startswith("Error:")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_setting_names_the_key(cli, tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    proc = subprocess.run([PURCHASES, "--engine", "oracle", "top"], capture_output=True,
                          text=True, env={**os.environ, "PURCHASES_HOME": str(env_home)})
    assert proc.returncode == 1
    assert proc.stderr == "Error: invalid --engine: Input should be 'duckdb' or 'spark'\n"
    by_env = subprocess.run([PURCHASES, "top"], capture_output=True, text=True,
                            env={**os.environ, "PURCHASES_HOME": str(env_home),
                                 "PURCHASES_ENGINE": "oracle"})
    assert by_env.returncode == 1
    assert "invalid setting PURCHASES_ENGINE" in by_env.stderr and "Traceback" not in by_env.stderr


def test_help_on_every_command(cli) -> None:
    for command in ("ingest", "run", "top", "rejects", "runs", "query", "generate", "demo"):
        assert "Usage" in cli(command, "--help").stdout


def test_generate_is_deterministic(cli, tmp_path: Path) -> None:
    cli("generate", "--out", "g1", "--rows", "300", "--days", "2", "--seed", "9")
    cli("generate", "--out", "g2", "--rows", "300", "--days", "2", "--seed", "9")
    names = sorted(p.name for p in (tmp_path / "g1").iterdir())
    assert len(names) == 2
    for name in names:
        assert (tmp_path / "g1" / name).read_bytes() == (tmp_path / "g2" / name).read_bytes()


def test_generate_never_replaces_a_file_unless_told(cli, tmp_path: Path) -> None:
    mine = tmp_path / "g" / "purchases_2024-01-16_1.csv"
    mine.parent.mkdir()
    mine.write_text("my own data\n")
    err = cli("generate", "--out", "g", "--rows", "30", "--days", "3", expect=2).stderr
    assert (f"Invalid value for '--out': {Path('g') / mine.name} exists already: give another "
            "folder, or --overwrite to replace the files of those names") in err
    assert sorted(p.name for p in mine.parent.iterdir()) == [mine.name]  # nothing written
    assert mine.read_text() == "my own data\n"
    cli("generate", "--out", "g", "--rows", "30", "--days", "3", "--overwrite")
    assert mine.read_text().startswith("customer_id,")
    assert len(list(mine.parent.iterdir())) == 3
    (tmp_path / "f" / "purchases_2024-01-15_1.csv").mkdir(parents=True)  # a folder in its way
    err = cli("generate", "--out", "f", "--rows", "3", "--days", "1", "--overwrite",
              expect=2).stderr
    assert f"{Path('f') / 'purchases_2024-01-15_1.csv'} is a folder: it cannot be replaced" in err


@pytest.mark.slow
def test_demo_prints_top_five(cli) -> None:
    out = cli("demo", "--days", "2", "--rows", "2000").stdout
    assert "Top 5 customers" in out
    assert out.count("rows=2000") == 2


def test_query_help_names_every_view(cli) -> None:
    shown = " ".join(cli("query", "--help").stdout.split())
    for view in ("silver", "quarantine", "gold", "customers", "bronze", "bronze_files"):
        assert view in shown


def test_runs_show_takes_any_id_a_run_can_have(cli, tmp_path: Path) -> None:
    """Glue's --run_id and Step Functions execution names may hold '.': such a record must
    load (history.load also serves recovery and run_is_dead), and `runs show` shows it."""
    import json

    from purchases import history
    from purchases.storage import Lake

    home = tmp_path / "home"
    data = tmp_path / "in" / "a.csv"
    data.parent.mkdir()
    data.write_text("customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,"
                    "currency\n1,A,B,a@x.io,10,2024-01-10,4.00,AUD\n")
    cli("ingest", str(data), "--date", "2024-01-15")
    cli("run")
    lake = Lake(str(home / "lake"))
    [record] = history.load_all(lake)
    named = "nightly.2024-01-15"
    copied = {**json.loads(lake.open(f"{history.RUNS_DIR}/{record.run_id}.json").read()),
              "run_id": named}
    lake.write_json(f"{history.RUNS_DIR}/{named}.json", copied)
    assert history.load(lake, named).run_id == named
    assert f"run {named} " in cli("runs", "show", named).stdout
