"""A careless user at the command line (issue 8, defects 5, 6, 8, 9): a real `purchases`
subprocess each time, real files, the documented exit code and one literal line of error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

PURCHASES = str(Path(sys.executable).with_name("purchases"))
HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    return {**clean, "PURCHASES_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]):
    def run(*args: str, expect: int = 0, **extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([PURCHASES, *args], capture_output=True, text=True,
                              env={**env, **extra}, cwd=tmp_path, timeout=120)
        assert proc.returncode == expect, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        return proc

    return run


@pytest.fixture
def in_process(tmp_path: Path, env: dict[str, str], monkeypatch, capsys):
    """`purchases.cli.main` in this process (fast: no interpreter start) -> code, out, err."""
    from purchases import cli as cli_module

    for key in [k for k in os.environ if k.startswith("PURCHASES_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PURCHASES_HOME", env["PURCHASES_HOME"])
    monkeypatch.chdir(tmp_path)

    def run(*args: str, width: int = 200) -> tuple[int, str, str]:
        monkeypatch.setattr(cli_module.out, "width", width)  # as COLUMNS does for a process
        try:
            code = cli_module.main(list(args))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return int(code or 0), out, err

    return run


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def write_csv(path: Path, *rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8", newline="")
    return path


# --- 5. demo never writes into real data ------------------------------------------------------


def test_demo_refuses_a_home_that_holds_data(in_process, tmp_path: Path) -> None:
    write_csv(tmp_path / "in" / "real.csv", "1,Ann,Lee,ann@x.io,100,2024-01-10,16.00,AUD")
    assert in_process("ingest", "in", "--date", "2024-01-15")[0] == 0
    assert in_process("run")[0] == 0

    code, _, err = in_process("demo", "--days", "1", "--rows", "50")
    assert code == 1
    assert err.startswith("Error: demo writes sample data only into a new or empty home")
    assert str(tmp_path / "home") in err and "--home" in err and len(err.splitlines()) == 1

    code, out, _ = in_process("top", "--format", "json")
    assert json.loads(out) == [{"customer_id": 1, "full_name": "Ann Lee", "email": "ann@x.io",
                                "total_spent_aud": "16.00"}]
    code, out, _ = in_process("runs", "--format", "json")
    assert [r["trigger"] for r in json.loads(out)] == ["cli"]


def test_demo_refuses_a_configured_database_or_lake(in_process, tmp_path: Path,
                                                     monkeypatch) -> None:
    # Refused before connecting: the port is closed, and the password is never shown.
    monkeypatch.setenv("PURCHASES_DATABASE_URL",
                       "postgresql+psycopg://postgres:sekret@127.0.0.1:1/prod")
    code, _, err = in_process("demo", "--days", "1", "--rows", "50")
    assert code == 1 and len(err.splitlines()) == 1
    assert "PURCHASES_DATABASE_URL" in err and "--home" in err and "sekret" not in err
    monkeypatch.delenv("PURCHASES_DATABASE_URL")
    monkeypatch.setenv("PURCHASES_DATABASE_SECRET_ARN",
                       "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod-db")
    code, _, err = in_process("demo", "--days", "1", "--rows", "50")
    assert code == 1 and "PURCHASES_DATABASE_SECRET_ARN" in err
    monkeypatch.delenv("PURCHASES_DATABASE_SECRET_ARN")

    code, _, err = in_process("--lake", str(tmp_path / "real-lake"), "demo", "--rows", "50")
    assert code == 1 and "PURCHASES_LAKE" in err
    assert not (tmp_path / "real-lake").exists() and not (tmp_path / "home").exists()


def test_demo_runs_in_an_empty_home(in_process, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    code, out, err = in_process("demo", "--days", "1", "--rows", "50")
    assert code == 0, err
    assert "Top 5 customers" in out and "rows=50" in out


def test_refusals_and_printing_ddl_make_no_folder(in_process, tmp_path: Path) -> None:
    """`aws catalog sync` made ./.purchases/lake before refusing a local lake, and
    `db upgrade --sql --from base` (documented as not connecting) made the home."""
    home = tmp_path / "home"
    code, _, err = in_process("aws", "catalog", "sync", "--database", "db")
    assert code == 1 and "registers a lake on S3" in err, err
    code, _, err = in_process("aws", "catalog", "sync")
    assert code == 1 and "no Glue database configured" in err, err
    code, out, err = in_process("db", "upgrade", "--sql", "--from", "base")
    assert code == 0 and "CREATE TABLE customer_purchase_summary" in out, err
    assert not home.exists() and list(tmp_path.iterdir()) == []


def test_watch_refuses_an_inbox_inside_the_lake(in_process, tmp_path: Path) -> None:
    """It took the lake's bronze files (already run), moved them out and landed them again
    under today's date: rows rejected as future-dated were then accepted."""
    write_csv(tmp_path / "in" / "a.csv", "1,Ann,Lee,ann@x.io,100,2024-01-10,16.00,AUD")
    assert in_process("ingest", "in", "--date", "2024-01-15")[0] == 0
    day = tmp_path / "home" / "lake" / "bronze" / "year=2024" / "month=01" / "day=15"
    for inbox in (day, tmp_path / "home" / "lake"):
        code, _, err = in_process("watch", str(inbox))
        assert (code, err) == (1, f"Error: inbox {inbox} is inside the lake "
                                  f"{tmp_path / 'home' / 'lake'}: watch a folder outside it\n")
    assert sorted(p.name for p in day.iterdir()) == ["a.csv"]


def test_demo_runs_in_a_home_holding_only_what_watch_left(in_process, tmp_path: Path) -> None:
    """A `watch` started and stopped on an empty inbox left inbox/ (and its lock): the home
    holds no data, but demo refused it."""
    (tmp_path / "home" / "inbox").mkdir(parents=True)
    (tmp_path / "home" / "inbox" / ".watch.lock").write_text("")
    (tmp_path / "home" / "run.lock").write_text("")
    code, out, err = in_process("demo", "--days", "1", "--rows", "50")
    assert code == 0, err
    (tmp_path / "other" / "inbox").mkdir(parents=True)
    (tmp_path / "other" / "inbox" / "waiting.csv").write_text(HEADER)  # data: refused
    code, _, err = in_process("--home", str(tmp_path / "other"), "demo", "--rows", "50")
    assert code == 1 and "already holds inbox: " in err, err


# --- 6. data is shown literally -------------------------------------------------------------


def test_markup_and_control_characters_in_data_are_shown_literally(
    in_process, tmp_path: Path
) -> None:
    write_csv(
        tmp_path / "in" / "[bold]f.csv",
        "1,Ann[/],Lee,ann@x.io,100,2024-01-10,16.00,AUD",
        "2,[bold]Bo,Zed,bo@x.io,101,2024-01-10,10.00,AUD",
        "3,Esc\x1b[2J,X,e@x.io,102,2024-01-10,-1,AUD",
    )
    code, out, _ = in_process("ingest", "in", "--date", "2024-01-15")
    assert code == 0 and "day=15/[bold]f.csv" in out
    code, out, _ = in_process("run")
    assert code == 0 and "[bold]f.csv" in out and "negative_amount=1" in out

    code, out, err = in_process("top")
    assert code == 0, err
    assert "Ann[/] Lee" in out and "[bold]Bo Zed" in out and "16.00" in out

    code, out, _ = in_process("rejects", width=400)
    assert code == 0 and "[bold]f.csv" in out
    assert "\x1b" not in out  # the raw field cannot clear the screen ...
    assert "Esc\\x1b[2J" in out  # ... it is shown as a visible escape

    code, out, _ = in_process("query", 'SELECT 1 AS "[/]", \'[red]x\' AS v')
    assert code == 0 and "[/]" in out and "[red]x" in out
    code, _, err = in_process("runs", "show", "[/]")
    assert (code, err) == (1, "Error: no run '[/]' (see `purchases runs`)\n")


def test_a_narrow_terminal_hides_no_part_of_a_value(in_process, tmp_path: Path) -> None:
    write_csv(tmp_path / "in" / "a.csv",
              "1,Siobhán,Smith-Jones,siobhan_smithjones.1078@icloud.com,100,2024-01-10,"
              "58682.33,AUD")
    assert in_process("ingest", "in", "--date", "2024-01-15")[0] == 0
    assert in_process("run", width=40)[0] == 0
    code, out, _ = in_process("top", width=40)
    assert code == 0 and "…" not in out
    assert "58682.33" in out and "Siobhán Smith-Jones" in out
    assert "siobhan_smithjones.1078@icloud.com" in out.replace(" ", "").replace("\n", "")


def test_query_renders_blobs_and_nested_values(in_process, env: dict[str, str]) -> None:
    (Path(env["PURCHASES_HOME"]) / "lake").mkdir(parents=True)
    code, out, err = in_process("query", "SELECT 'x'::BLOB AS b, [1.50::DECIMAL(4,2)] AS l, "
                                "'nan'::DOUBLE AS d", "--format", "json")
    assert code == 0, err
    assert json.loads(out) == [{"b": "78", "l": ["1.50"], "d": "nan"}]
    code, out, err = in_process("query", "SELECT 'x'::BLOB AS b", "--format", "csv")
    assert (code, out) == (0, "b\n78\n"), err


# --- 8. no ingestion date in the future -----------------------------------------------------


def test_a_future_ingestion_date_is_a_usage_error(in_process, tmp_path: Path) -> None:
    write_csv(tmp_path / "in" / "f.csv", "1,Ann,Lee,ann@x.io,100,2098-06-01,16.00,AUD")
    before = datetime.now(UTC).date()
    code, _, err = in_process("ingest", "in", "--date", "2099-01-01")
    after = datetime.now(UTC).date()
    assert code == 2
    assert "--date" in err and "2099-01-01" in err
    assert f"today ({before}" in err or f"today ({after}" in err
    assert not (tmp_path / "home" / "lake" / "bronze" / "year=2099").exists()

    assert in_process("ingest", "in", "--date", str(before))[0] == 0  # today is fine ...
    assert in_process("run")[0] == 0
    code, out, _ = in_process("rejects", "--format", "json")
    assert [r["reason"] for r in json.loads(out)] == ["future_purchase_date"]  # ... rule holds


# --- 9. every mistake: the documented exit code and a message naming the fix -----------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ingest", ".", "--date", "2024-13-45"), "'2024-13-45' is not a date YYYY-MM-DD"),
        (("rejects", "--date", "yesterday"), "'yesterday' is not a date"),
        # Python's fromisoformat takes these; the message and purchase_date's rule do not.
        (("ingest", ".", "--date", "20240115"), "'20240115' is not a date YYYY-MM-DD"),
        (("rejects", "--date", "2024-W03-1"), "'2024-W03-1' is not a date YYYY-MM-DD"),
        (("reprocess", "--date", "20240115"), "'20240115' is not a date YYYY-MM-DD"),
        (("generate", "--out", "g", "--start", "20240115"), "'20240115' is not a date"),
        # A NaN compares false with both bounds: typer's min/max called it "<= 1".
        (("generate", "--out", "g", "--bad-ratio", "nan"), "'nan' is not a number from 0 to 1"),
        (("demo", "--bad-ratio", "1.5"), "'1.5' is not a number from 0 to 1"),
        (("watch", "--settle", "nan"), "'nan' is not a number from 0 to 3600"),
        (("watch", "--debounce", "-1"), "'-1' is not a number from 0 to 3600"),
        # As typed: click said "Input should be a valid number", and showed 1e400 as inf.
        (("generate", "--out", "g", "--bad-ratio", "x"), "'x' is not a number from 0 to 1"),
        (("demo", "--bad-ratio", "1e400"), "'1e400' is not a number from 0 to 1"),
        (("generate", "--out", "g", "--start", "2024-99-01"), "--start"),
        (("top", "-n", "99999999999999999999"), "less than or equal to 1000000"),
        (("rejects", "--limit", "99999999999999999999"), "--limit"),
        (("runs", "--limit", "99999999999999999999"), "--limit"),
        (("generate", "--out", "g", "--rows", "99999999999999999999"), "--rows"),
        (("generate", "--out", "g", "--start", "9999-12-30", "--days", "5"), "past 9999-12-26"),
        # Purchases are dated up to 30 days before the day: was an unexpected OverflowError.
        (("generate", "--out", "g", "--start", "0001-01-01", "--days", "2"),
         "the first day must be 0001-01-31 or later (purchases are dated up to 30 days"),
        (("query", ""), "the SQL is empty"),
        (("query", "  \n "), "the SQL is empty"),
        (("query", ";"), "the SQL is empty"),
        (("query", "--", "-- only a comment"), "the SQL is empty"),
        (("query", "-- top five\nSELECT 1"), "SQL that starts with - is read as an option: give "
         "it after --, `purchases query -- \"-- ...\"`"),
        (("top", "--format", "xml"), "--format"),
        (("watch", "a-file.csv"), "is a file"),
        # "" is the current folder to click: files were written, landed or watched there.
        (("watch", ""), "Invalid value for 'inbox': is empty: give a path (. for the current"),
        (("ingest", ""), "Invalid value for 'paths': is empty: give a path"),
        (("generate", "--out", ""), "Invalid value for '--out': is empty: give a path"),
        (("generate", "--out", "a-file.csv"), "a-file.csv is a file, not a folder: give a folder"),
        (("report", "--out", " "), "Invalid value for '--out': is empty: give a path"),
        (("aws", "render", "--out", ""), "Invalid value for '--out': is empty: give a path"),
        (("aws", "package", "--out", ""), "Invalid value for '--out': is empty: give a path"),
        (("--home", "", "runs"), "Invalid value for '--home': is empty: give a path"),
        (("--fx-rates", "", "runs"), "Invalid value for '--fx-rates': is empty: give a path"),
        # An empty --lake or --database-url was taken for "not given": the default, silently.
        (("--lake", "", "runs"), "Invalid value for '--lake': is empty: give a value"),
        (("--database-url", " ", "top"), "Invalid value for '--database-url': is empty"),
        (("watch", "no-such-inbox"), "'no-such-inbox' does not exist"),
        # The program's name is pytest's here: `purchases --home ... top` from the shell.
        (("top", "--home", "h"), "itself: give it before the command, "),
        (("top", "--home", "h"), " --home ... top`)"),
        (("db", "current", "--engine", "spark"), " --engine ... db current`)"),
    ],
)
def test_usage_errors_exit_2(in_process, tmp_path: Path, args, message) -> None:
    (tmp_path / "a-file.csv").write_text(HEADER)
    code, _, stderr = in_process(*args)
    assert code == 2, stderr
    assert message in stderr and "unexpected" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("args", [(), ("db",), ("aws",)])
def test_a_command_without_arguments_shows_its_help_and_no_empty_error(
    in_process, args: tuple[str, ...]
) -> None:
    code, out, err = in_process(*args)
    assert code == 2
    assert "Usage" in out and "Commands" in out
    assert err == ""  # before: "Try 'purchases --help'" and a bare "Error: "


@pytest.mark.parametrize("args", [
    ("top",), ("db", "current"), ("runs",), ("runs", "show", "r1"), ("rejects",),
    ("query", "SELECT 1 AS n"), ("reprocess",),  # reprocess: nothing to select in no lake
])
def test_a_command_that_only_reads_a_home_that_does_not_exist_says_so_and_creates_nothing(
    cli, tmp_path: Path, args: tuple[str, ...]
) -> None:
    typo = tmp_path / "hoem"
    line = one_error_line(cli(*args, expect=1, PURCHASES_HOME=str(typo)))
    what = f"database folder {typo}" if args[0] in ("top", "db") else f"lake {typo / 'lake'}"
    assert line.startswith(f"Error: {what} does not exist: nothing was ") and (
        "PURCHASES_HOME" in line), line
    assert not typo.exists()
    # A home that is there but was never run: top shows nothing, and neither creates a file.
    empty = tmp_path / "empty-home"
    empty.mkdir()
    assert "no rows" in cli("top", PURCHASES_HOME=str(empty)).stdout
    line = one_error_line(cli("db", "current", expect=1, PURCHASES_HOME=str(empty)))
    assert line == (f"Error: database {empty / 'purchases.db'} does not exist yet: the first "
                    "`purchases run` (or `purchases db upgrade`) creates it"), line
    assert list(empty.iterdir()) == []
    elsewhere = tmp_path / "no" / "such" / "x.db"
    line = one_error_line(cli("top", expect=1, PURCHASES_DATABASE_URL=f"sqlite:///{elsewhere}"))
    assert line.startswith(f"Error: database folder {elsewhere.parent} does not exist"), line
    assert not (tmp_path / "no").exists()


def test_report_only_reads_a_mistyped_home_is_said_and_a_database_never_run_is_not_created(
    cli, tmp_path: Path
) -> None:
    typo = tmp_path / "hoem"
    line = one_error_line(cli("report", "--out", "r.html", expect=1, PURCHASES_HOME=str(typo)))
    assert line.startswith(f"Error: database folder {typo} does not exist: nothing was run"), line
    assert not typo.exists() and not (tmp_path / "r.html").exists()
    # Ingested, never run: the page shows the landed file; the database stays uncreated.
    home = tmp_path / "home"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,1.00,AUD\n")
    cli("ingest", "in", "--date", "2024-01-15")
    assert "report written" in cli("report", "--out", "r.html").stdout
    page = (tmp_path / "r.html").read_text()
    assert 'id="lineage"' in page and "The serving table is empty." in page
    assert not (home / "purchases.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_sqlite_database_is_refused_in_one_line(cli, url: str) -> None:
    said = ("PURCHASES_DATABASE_URL: an in-memory SQLite database keeps nothing between the "
            "pipeline's steps; give a file, sqlite:///path/to/purchases.db")
    line = one_error_line(cli("top", expect=1, PURCHASES_DATABASE_URL=url))
    assert line == f"Error: {said}", line
    # A run does the lake's work first and stops where the database is needed, resumable.
    line = one_error_line(cli("run", expect=1, PURCHASES_DATABASE_URL=url))
    assert f"failed in step gold_to_staging: ConfigError: {said}" in line, line


@pytest.mark.parametrize(("lake", "said"), [
    ("gs://bucket/lake", "Please install gcsfs"),  # a store fsspec knows, without its package
    ("xyz://a/b", "Protocol not known: xyz"),
])
def test_a_lake_of_an_unsupported_kind_is_one_line_naming_it(cli, lake: str, said: str) -> None:
    line = one_error_line(cli("runs", expect=1, PURCHASES_LAKE=lake))
    assert line.startswith(f"Error: lake {lake}: {said}") and line.endswith(
        "; a lake (--lake, PURCHASES_LAKE) is a local folder or s3://bucket/prefix (or another "
        "fsspec URL whose package is installed)"), line


@pytest.mark.parametrize(("lake", "said"), [
    ("file://", "names no place after the scheme"),  # fsspec: the current folder
    ("s3://", "names no bucket: give s3://bucket/prefix"),  # before: a local folder "s3:"
    ("s3:///lake", "names no bucket: give s3://bucket/prefix"),
    ("s3:/bucket/lake",
     "looks like a URL with one slash after the scheme (s3://bucket/prefix has two)"),
    ("file:", "looks like a URL with no slashes after the scheme (s3://bucket/prefix has two)"),
    ("s3:", "looks like a URL with no slashes after the scheme (s3://bucket/prefix has two)"),
    ("memory:lake",
     "looks like a URL with no slashes after the scheme (s3://bucket/prefix has two)"),
    ("file://localhost/lake",  # fsspec: ./localhost/lake
     "names a host or a relative path: give file:///absolute/path, or the path"),
    ("file://lake", "names a host or a relative path: give file:///absolute/path, or the path"),
    ("memory://lake", "is in this process's memory: nothing would be kept between commands"),
    ("https://example.com/lake", "is read-only over HTTP(S): a lake is written to"),
    # s3fs expands patterns when it moves a run's outputs: the run failed, its files unfound
    ("s3://bucket/lake[1]",
     "holds * or [, which the store's client reads as a pattern: rename the prefix"),
    ("s3://bucket/*",
     "holds * or [, which the store's client reads as a pattern: rename the prefix"),
])
def test_a_lake_url_naming_no_lasting_writable_place_is_refused_and_nothing_is_written(
    cli, tmp_path: Path, lake: str, said: str
) -> None:
    line = one_error_line(cli("run", expect=1, PURCHASES_LAKE=lake))
    assert line == (f"Error: lake {lake} {said}; a lake (--lake, PURCHASES_LAKE) is a local "
                    "folder or s3://bucket/prefix"), line
    # The run's lock, in its home, and nothing else: no lake in the current folder, no "s3:".
    home = tmp_path / "home"
    assert sorted(tmp_path.rglob("*")) == [home, home / "run.lock"]


@pytest.mark.parametrize(("lake", "shown", "said"), [
    ("s3://AKIAXX:S3cretPW@bucket/prefix", "s3://bucket/prefix", "carries credentials"),
    ("s3://bucket/prefix?secret=S3cretPW", "s3://bucket/prefix?secret=***", "has a query"),
])
def test_a_lake_url_carrying_a_secret_is_refused_without_showing_it(
    cli, lake: str, shown: str, said: str
) -> None:
    line = one_error_line(cli("runs", expect=1, PURCHASES_LAKE=lake))
    assert line.startswith(f"Error: lake {shown} {said}") and "S3cretPW" not in line, line


def test_an_unusable_home_fails_fast_naming_it(cli, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line = one_error_line(cli("--home", str(tmp_path / "a-file"), "run", expect=1))
    assert f"home {tmp_path / 'a-file'} is a file" in line and "PURCHASES_HOME" in line
    if Path("/proc/1").is_dir():  # root may write nearly anywhere, but never in /proc
        line = one_error_line(cli("--home", "/proc/1", "run", expect=1))  # no longer hangs
        assert "home /proc/1 is not a writable folder" in line and "--home" in line


@pytest.mark.postgres
@pytest.mark.slow
def test_sigint_during_gold_to_staging_says_how_to_resume(
    tmp_path: Path, env: dict[str, str], postgres_url: str
) -> None:
    """Ctrl-C while the serving load waits on a table lock: exit 130 and one line saying
    `purchases run` resumes; it does, once the lock is gone."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url).set(drivername="postgresql")
    db = f"h3_sigint_{uuid.uuid4().hex[:8]}"  # our own database: the lock blocks no one else
    admin = psycopg.connect(server.set(database="postgres").render_as_string(False),
                            autocommit=True)
    admin.execute(f"CREATE DATABASE {db}")
    try:
        env = {**env, "PURCHASES_DATABASE_URL": str(make_url(postgres_url).set(database=db))}

        def purchases(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([PURCHASES, *args], capture_output=True, text=True, env=env,
                                  cwd=tmp_path, timeout=120)

        assert purchases("db", "upgrade").returncode == 0
        write_csv(tmp_path / "in" / "a.csv", "1,Ann,Lee,ann@x.io,100,2024-01-10,16.00,AUD")
        assert purchases("ingest", "in", "--date", "2024-01-15").returncode == 0
        with psycopg.connect(server.set(database=db).render_as_string(False)) as locker:
            locker.execute("LOCK TABLE customer_purchase_summary_staging IN ACCESS EXCLUSIVE MODE")
            proc = subprocess.Popen(
                [PURCHASES, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=env, cwd=tmp_path,
                # Python (and pytest under a shell's background job) may ignore SIGINT.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s " \
                      "AND wait_event_type = 'Lock'"
            for _ in range(1200):  # until the run waits on the lock (not a timing assertion)
                if admin.execute(waiting, [db]).fetchone()[0] or proc.poll() is not None:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            locker.rollback()
        assert proc.returncode == 130, stderr
        assert stderr.strip().splitlines() == [
            "Interrupted (Ctrl-C): the run stopped; `purchases run` resumes it."
        ]
        # On record as it happened: interrupted in that step, with the time it ran.
        stopped = json.loads(purchases("runs", "--format", "json").stdout)[-1]
        assert (stopped["status"], stopped["failed_step"]) == ("interrupted", None)
        assert stopped["seconds"] > 0
        shown = purchases("runs", "show", stopped["run_id"], "--format", "json").stdout
        steps = {s["step"]: s["status"] for s in json.loads(shown)["steps"]}
        assert steps["gold_to_staging"] == "interrupted" and steps["upsert"] == "pending"
        assert purchases("run").returncode == 0
        top = json.loads(purchases("top", "--format", "json").stdout)
        assert [(t["customer_id"], t["total_spent_aud"]) for t in top] == [(1, "16.00")]
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


def test_every_terminal_control_character_becomes_a_visible_escape() -> None:
    from purchases.render import literal, one_line

    assert literal("a\x00b\rc\x1b[2J\x9b\x7fé") == "a\\x00b\\x0dc\\x1b[2J\\x9b\\x7fé"
    assert one_line("Catalog Error: no table x!\n\nLINE 1: \x1b]0;t\x07") == (
        "Catalog Error: no table x! LINE 1: \\x1b]0;t\\x07"
    )
