"""The `purchases` command line: parses arguments, calls the pipeline, renders results.

Exit codes: 0 success; 1 error (a failed run, unusable input or setting); 2 usage error;
3 another run holds the writer lock and --no-wait was given; 130 interrupted (Ctrl-C).

Everything printed that comes from data or from an error is shown literally (render.text,
render.say): never parsed as Rich markup, control characters shown as escapes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

from purchases import bronze, history, insights, serving
from purchases.cli_aws import aws_app
from purchases.cli_db import db_app
from purchases.cli_params import given_path, given_text
from purchases.config import Settings, load_settings
from purchases.contract import TOP_CUSTOMERS_COLUMNS
from purchases.errors import ConfigError, InputError, PurchasesError
from purchases.render import (
    LiteralFormatter,
    OutputFormat,
    one_line,
    render_batches,
    render_rows,
    say,
    say_wrapped,
    text,
)
from purchases.storage import Lake, file_in_the_way, not_a_folder

EXIT_ERROR, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 1, 2, 3, 130
# Upper bound of -n/--limit/--rows: beyond it a table is no use, and a larger integer would
# overflow the database's or DuckDB's INTEGER/BIGINT before it could mean anything.
MAX_ROWS = 1_000_000
MAX_DAYS = 3660

app = typer.Typer(
    name="purchases",
    help="Customer-purchases pipeline: CSV -> Bronze -> Silver -> Gold -> SQL summary table.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Run history.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(aws_app, name="aws")

out = Console()
err = Console(stderr=True)


class State:
    settings: Settings
    debug: bool = False
    command: str | None = None
    interrupted: bool = False
    flags: dict[str, str] = {}  # PURCHASES_X -> the flag that set it this time (--x)


state = State()

FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="table (people), csv or json (scripts).")
]


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            parser=given_path, metavar="PATH",
            help="Folder for the lake, database and lock "
            "(env PURCHASES_HOME; default ./.purchases)."
        ),
    ] = None,
    lake: Annotated[str | None, typer.Option(parser=given_text, metavar="URI",
                                             help="Lake URI (env PURCHASES_LAKE).")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(parser=given_text, metavar="URL",
                     help="SQLAlchemy URL of the serving database (env PURCHASES_DATABASE_URL)."),
    ] = None,
    fx_rates: Annotated[
        Path | None,
        typer.Option(
            parser=given_path, metavar="PATH",
            help="FX rates CSV (env PURCHASES_FX_RATES; default: the shipped illustrative table)."
        ),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="duckdb or spark (env PURCHASES_ENGINE).")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks on errors.",
                                        show_default=False)] = False,
) -> None:
    state.debug = debug
    state.command = ctx.invoked_subcommand
    given = {"home": home, "lake": lake, "database_url": database_url, "fx_rates": fx_rates,
             "engine": engine}
    flags = {name: "--" + name.replace("_", "-") for name in given}
    state.flags = {f"PURCHASES_{name.upper()}": flags[name]
                   for name, value in given.items() if value is not None}
    state.settings = load_settings(flags, **given)


def _lake(*, create: bool = True) -> Lake:
    """The lake; a command that only reads passes create=False, so that a mistyped home
    fails naming it instead of showing empty results from a new one."""
    return Lake(state.settings.lake_uri, create=create)


def database_not_created() -> bool:
    """For a command that only reads the serving database, which must create nothing: True
    when it is an embedded file not there yet (a home ingested into but never run).

    Raises:
        ConfigError: not even the file's folder is there: a mistyped home (or URL).
    """
    from purchases import serving

    file = serving.database_file(state.settings)
    if file is None:
        return False
    absent = not_a_folder(file.parent, missing="does not exist: nothing was run there")
    if absent:
        raise ConfigError(f"database folder {file.parent} {absent} (check --home / "
                          "PURCHASES_HOME, or PURCHASES_DATABASE_URL)")
    return not file.exists()


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(value: str | date) -> date:
    """A YYYY-MM-DD option value; a bad one is a usage error (exit 2) naming the option.
    Only that form: Python's fromisoformat would also take 20240115 and 2024-W03-1, which
    the message (and purchase_date's rule) do not."""
    if isinstance(value, date):
        return value
    try:
        if _ISO_DAY.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from None


# click's own number parsing (a ratio, seconds: not money, which is Decimal throughout).
_NUMBER = click.types.FloatParamType()


def _between(low: float, high: float) -> Callable[[str | float], float]:
    """A parser of a number from `low` to `high`, refusing anything else as it was typed
    ("x", "1e400", "nan"). Not typer's min/max: a NaN compares false with both, and was
    refused as "less than or equal to 1"; nor its float type, which said "Input should be a
    valid number" and showed 1e400 as inf."""

    def parse(text: str | float) -> float:
        try:
            value = _NUMBER.convert(text, None, None)  # the default comes as a number
        except click.BadParameter:
            value = None
        if value is None or not low <= value <= high:  # NaN and inf fail too
            raise typer.BadParameter(f"{text!r} is not a number from {low:g} to {high:g}")
        return value

    return parse


def _ingestion_day(value: str | date) -> date:
    """An ingestion date: not after today (UTC), or the future-purchase rule is void."""
    day, today = _day(value), datetime.now(UTC).date()
    if day > today:
        raise typer.BadParameter(
            f"{day} is after today ({today}, UTC): an ingestion date is the day a file "
            "arrived; give today or an earlier date, or leave --date out for today"
        )
    return day


def _require_writable_home() -> None:
    """Fail fast when the home cannot hold the run lock (else the lock waits forever)."""
    from purchases.orchestrator import lock_path

    lock_path(state.settings)


# --- ingest / run ----------------------------------------------------------------------------


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(parser=given_path,
                                                help="CSV/.csv.gz files or folders of them.")],
    day: Annotated[
        date | None,
        typer.Option(
            "--date",
            parser=_ingestion_day,
            metavar="YYYY-MM-DD",
            help="Ingestion date, today or earlier (default: today, UTC).",
        ),
    ] = None,
) -> None:
    """Land files in bronze/year=YYYY/month=MM/day=DD/ (atomically; same bytes again: no-op)."""
    when = day or datetime.now(UTC).date()
    files = bronze.source_files(paths)
    if not files:
        raise InputError(f"no .csv or .csv.gz files in {', '.join(map(str, paths))}")
    landed = bronze.land(_lake(), files, when)
    for item in landed:
        note = "already landed (same bytes)" if item.skipped else "landed"
        say(out, f"{note}: {item.path}")
    say(out, f"{sum(not i.skipped for i in landed)} file(s) landed for {when}")


@app.command()
def run(
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a run in progress, or exit 3.")
    ] = True,
) -> None:
    """Process every pending bronze file through all steps and print what happened."""
    from purchases.orchestrator import RunBusy, run_pipeline

    _require_writable_home()
    try:
        with err.status("running…") as status:
            record = run_pipeline(
                state.settings,
                wait=wait,
                on_step=lambda task, step: status.update(text(f"{task.name}: {step.status}")),
            )
    except RunBusy as exc:
        say(err, one_line(exc), "yellow")
        raise typer.Exit(EXIT_BUSY) from None
    print_run(record)


@app.command()
def watch(
    inbox: Annotated[
        Path | None,
        # A folder named on the command line must exist: a typo would otherwise be watched,
        # empty, forever. The default inbox is created on first use.
        typer.Argument(parser=given_path,
                       help="Folder to watch (default: $PURCHASES_HOME/inbox, created if "
                       "missing)."),
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            parser=_between(0, 3600),
            metavar="0..3600",
            help="Seconds a file's size and mtime must stay unchanged before it is "
            "taken (write to x.part and rename to skip the wait).",
        ),
    ] = 2.0,
    debounce: Annotated[
        float,
        typer.Option(
            parser=_between(0, 3600),
            metavar="0..3600",
            help="Quiet seconds after the last landed file before a run starts: files "
            "arriving together are run together.",
        ),
    ] = 2.0,
) -> None:
    """Watch a folder: land each complete new CSV in bronze under its arrival date, then run.

    Landed files move to <inbox>/.landed/<date>/.
    Ctrl-C or SIGTERM stops after the current run.
    """
    from purchases.triggers import WatchOptions, log_to_stderr, watch_folder

    if inbox is not None and not inbox.is_dir():
        raise typer.BadParameter(
            f"'{inbox}' is a file, not a folder" if inbox.exists() else
            f"'{inbox}' does not exist (a folder named to watch must exist)",
            param_hint="'inbox'")
    folder = inbox or state.settings.home / "inbox"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"inbox {folder} is a file, not a folder: give a folder to watch")
    lake = state.settings.lake_uri.removeprefix("file://")
    if "://" not in lake and _inside(folder, Path(lake)):
        # It would take the lake's own files (bronze already run) and land them again.
        raise InputError(f"inbox {folder} is inside the lake {lake}: watch a folder outside it")
    _require_writable_home()
    log_to_stderr()
    for handler in logging.getLogger("purchases.triggers").handlers:
        handler.setFormatter(LiteralFormatter("%(asctime)s %(message)s"))
    watch_folder(state.settings, folder, WatchOptions(settle=settle, debounce=debounce))


def print_run(record: history.RunRecord) -> None:
    rows = []
    for f in record.files:
        rejected = f.get("rejected") or {}
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items()))
        if f.get("file_rejection"):
            reasons = f"FILE REJECTED: {f['file_rejection']} ({f['detail']})"
        rows.append(
            {
                "file": f["path"],
                "rows": f["rows_in"],
                "accepted": f["accepted"],
                "rejected": sum(rejected.values()),
                "duplicates": f["duplicates"],
                "invalid_emails": f["invalid_emails"],
                "reasons": reasons,
            }
        )
    if rows:
        render_rows(out, rows, list(rows[0]), OutputFormat.table, title=f"run {record.run_id}")
    else:
        say(out, "no pending files" if record.status == "succeeded" else "no files processed")
    counts = record.counts()
    # Wrapped at spaces, not by the terminal: a reason code and its count stay on one line.
    say_wrapped(
        out,
        f"rows: in={counts.get('rows_in', 0)} accepted={counts.get('accepted', 0)} "
        f"rejected={counts.get('rejected', 0)} duplicates={counts.get('duplicates', 0)}",
    )
    by_reason = ", ".join(f"{k}={v}" for k, v in record.rejected_by_reason().items())
    if by_reason:
        say_wrapped(out, f"rejected by reason: {by_reason}")
    say_wrapped(
        out,
        f"customers changed: {counts.get('customers_changed', 0)}; "
        f"customers upserted: {counts.get('customers_upserted', 0)}; "
        f"{record.status} in {record.seconds:.1f}s",
    )


# --- reading results ---------------------------------------------------------------------------


@app.command()
def top(
    n: Annotated[
        int, typer.Option("-n", "--limit", min=1, max=MAX_ROWS, help="How many customers.")
    ] = 5,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Top customers by total spent in AUD (the business query)."""
    rows = [] if database_not_created() else insights.top_customers(state.settings, n)
    render_rows(out, rows, list(TOP_CUSTOMERS_COLUMNS), fmt, title=f"Top {n} customers")


@app.command()
def rejects(
    when: Annotated[
        date | None,
        typer.Option("--date", parser=_day, metavar="YYYY-MM-DD", help="Only this ingestion date."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=0, max=MAX_ROWS, help="At most this many rows (0: all of them).")
    ] = 1000,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Quarantined rows with their reason codes (says how many it left out, if any)."""
    shown = insights.rejected_rows(_lake(create=False), when, limit)
    render_rows(out, shown.rows, list(insights.REJECT_COLUMNS), fmt, title="Rejected rows")
    if shown.left_out:
        of = f" of {when}" if when else ""
        _note_left_out(
            fmt,
            f"showing {len(shown.rows)} of {shown.total} rejected rows{of}; "
            "`--limit 0` shows all, `--format csv > rejects.csv` saves them",
        )


def _note_left_out(fmt: OutputFormat, note: str) -> None:
    """Say what a listing left out: under a table, or on stderr so CSV/JSON stay clean."""
    say_wrapped(out if fmt is OutputFormat.table else err, note, "yellow")


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    fmt: FormatOption = OutputFormat.table,
    limit: Annotated[
        int, typer.Option(min=0, max=MAX_ROWS, help="The latest N runs (0: every run).")
    ] = 50,
) -> None:
    """Run history: id, start, status, files, counts, duration."""
    if ctx.invoked_subcommand:
        return
    shown = insights.latest_runs(_lake(create=False), limit)
    rows = [insights.run_row(r) for r in shown.rows]
    render_rows(out, rows, list(insights.RUN_COLUMNS), fmt, title="Runs")
    if shown.left_out:
        _note_left_out(
            fmt, f"showing the latest {len(rows)} of {shown.total} runs; `--limit 0` shows all"
        )


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id from `purchases runs`.")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """One run: per-step status, attempts, durations, files, counts and error."""
    # A 300-character id was "File name too long", ../x a path outside the run records.
    record = history.load(_lake(create=False), run_id) if history.can_name_a_record(
        run_id) else None
    if record is None:
        raise InputError(f"no run {run_id!r} (see `purchases runs`)")
    if fmt is OutputFormat.json:
        out.file.write(json.dumps(asdict(record), default=str) + "\n")
        return
    say_wrapped(
        out,
        f"run {record.run_id}  trigger={record.trigger}  status={record.status}  "
        f"started={record.started_at}  finished={record.finished_at}  "
        f"seconds={record.seconds}",
    )
    given = {k: v for k, v in (record.input or {}).items() if v is not None}  # not "=None"
    if given:
        say_wrapped(out, "input: " + "  ".join(f"{k}={v}" for k, v in given.items()))
    for what, items in record.recovered.items():
        say_wrapped(out, f"recovered first: {what.replace('_', ' ')}: {', '.join(map(str, items))}")
    if record.failed_step:
        say_wrapped(
            out,
            f"failed step: {record.failed_step}  {record.error_class}: {one_line(record.error)}",
            "red",
        )
    elif record.error:
        say_wrapped(out, one_line(record.error), "yellow")
    steps = [
        {
            "step": s.step,
            "status": s.status,
            "attempts": s.attempts,
            "seconds": round(s.seconds, 3),
            "counts": ", ".join(
                f"{k}={v}" for k, v in s.counts.items() if k != "rejected_by_reason"
            ),
            "error": f"{s.error_class}: {s.error}" if s.error else None,
        }
        for s in record.steps
    ]
    render_rows(out, steps, list(steps[0]) if steps else [], OutputFormat.table, title="Steps")
    print_run(record)


@app.command()
def report(
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", parser=given_path, metavar="FILE",
            help="HTML file to write (default: <home>/report.html)."
        ),
    ] = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the page in the default web browser.")
    ] = False,
    runs: Annotated[
        int,
        typer.Option(min=0, max=MAX_ROWS, help="The latest N runs in detail (0: every run)."),
    ] = 50,
) -> None:
    """One self-contained HTML page on how the runs went.

    Each run, rejects over time, FX gaps, lineage from bronze to the serving
    table, and the top customers."""
    from purchases.report import write_report

    if out_file is not None and out_file.is_dir():
        raise typer.BadParameter(f"'{out_file}' is a folder: give the HTML file to write",
                                 param_hint="'--out'")
    # A mistyped home is said so, as `top` does; in a home never run the page says "no runs
    # yet", and an embedded database not created yet stays so (its figures are empty).
    served = not database_not_created()
    path = write_report(state.settings, out_file or state.settings.home / "report.html",
                        runs=runs, served=served)
    say(out, f"report written: {path}")
    if open_it:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            say(err, f"no web browser found here: open {path.as_uri()} yourself", "yellow")


@app.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="SQL over the views silver, quarantine, gold, customers (current "
            "state), bronze (the landed rows as text) and bronze_files (every landed file)."
        ),
    ],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """SQL over the lake (an embedded stand-in for Athena), run by DuckDB."""
    from purchases.engines.duckdb_engine import engine_memory_limit
    from purchases.engines.duckdb_lake import holds_no_statement, query_result

    if holds_no_statement(sql):  # blanks, comments, semicolons: a usage error, as "" is
        raise typer.BadParameter(
            "the SQL is empty: give a query, e.g. 'SELECT * FROM customers LIMIT 5'",
            param_hint="'SQL'",
        )
    limit = f"{engine_memory_limit(state.settings.memory_limit)}B"
    with query_result(_lake(create=False), sql, memory_limit=limit) as result:
        try:
            render_batches(out, result.columns, result.batches(), fmt)
        except BrokenPipeError:
            # The reader stopped early (`| head`): it has what it wanted, so exit 0, as a
            # result written whole did (click would exit 1). Python's flush at exit would
            # fail again on the closed pipe: stdout goes to null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None


# --- sample data -----------------------------------------------------------------------------


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", parser=given_path, metavar="PATH",
                                          help="Folder to write CSV files to.")],
    rows: Annotated[int, typer.Option(min=0, max=MAX_ROWS * 10, help="Rows per day.")] = 15_000,
    days: Annotated[int, typer.Option(min=1, max=MAX_DAYS, help="Number of ingestion days.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    bad_ratio: Annotated[
        float, typer.Option(parser=_between(0, 1), metavar="0..1",
                            help="Share of bad rows per day.")
    ] = 0.02,
    start: Annotated[
        date, typer.Option(parser=_day, metavar="YYYY-MM-DD", help="First ingestion date.")
    ] = date(2024, 1, 15),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files of the same names in --out.")
    ] = False,
) -> None:
    """Write realistic sample purchase files, with a controllable share of bad rows."""
    from purchases.generate import days_problem, file_paths
    from purchases.generate import generate as write_files

    if problem := days_problem(start, days):
        raise typer.BadParameter(problem, param_hint="'--start' / '--days'")
    if blocked := file_in_the_way(out_dir):  # mkdir said only "File exists"
        raise typer.BadParameter(f"{blocked} is a file, not a folder: give a folder to write "
                                 "the CSV files to", param_hint="'--out'")
    paths = file_paths(out_dir, days=days, start=start)
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise typer.BadParameter(f"{folders[0]} is a folder: it cannot be replaced by a file",
                                 param_hint="'--out'")
    taken = [] if overwrite else [p for p in paths if p.exists() or p.is_symlink()]
    if taken:
        raise typer.BadParameter(
            f"{taken[0]} exists already{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}"
            ": give another folder, or --overwrite to replace the files of those names",
            param_hint="'--out'",
        )
    files = write_files(
        out_dir,
        rows=rows,
        days=days,
        seed=seed,
        bad_ratio=bad_ratio,
        start=start,
    )
    for f in files:
        say(out, f"{f.path}  ({f.rows} rows, ingest on {f.ingestion_date})")


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=1, max=MAX_ROWS * 10, help="Rows per day.")] = 15_000,
    days: Annotated[int, typer.Option(min=1, max=MAX_DAYS, help="Number of days.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    bad_ratio: Annotated[float, typer.Option(parser=_between(0, 1), metavar="0..1",
                                             help="Share of bad rows per day.")] = 0.02,
) -> None:
    """Generate sample data, ingest and run it day by day, then show the top 5 customers.

    Only into a new or empty home with its own lake and SQLite file:
    sample customers must never merge into real data.
    """
    from purchases.generate import generate as write_files
    from purchases.orchestrator import run_pipeline

    _require_fresh_home()
    _require_writable_home()
    with tempfile.TemporaryDirectory(prefix="purchases-demo-") as tmp:
        files = write_files(Path(tmp), rows=rows, days=days, seed=seed, bad_ratio=bad_ratio)
        lake = _lake()
        for f in files:
            bronze.land(lake, [f.path], f.ingestion_date)
            with err.status(f"day {f.ingestion_date}: running…"):
                record = run_pipeline(state.settings, trigger="demo")
            c = record.counts()
            say_wrapped(
                out,
                f"{f.ingestion_date}: rows={c.get('rows_in', 0)} "
                f"accepted={c.get('accepted', 0)} rejected={c.get('rejected', 0)} "
                f"duplicates={c.get('duplicates', 0)} "
                f"customers_changed={c.get('customers_changed', 0)} "
                f"({record.seconds:.1f}s)",
            )
    render_rows(
        out,
        insights.top_customers(state.settings, 5),
        list(TOP_CUSTOMERS_COLUMNS),
        OutputFormat.table,
        title="Top 5 customers by total spent (AUD)",
    )
    home = shlex.quote(str(state.settings.home))
    say_wrapped(out, f"See how the runs went: purchases --home {home} report --open")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _no_data(path: Path) -> bool:
    """What other commands leave in a home that holds no data: an empty run lock, and an
    inbox `watch` made and left empty (bar its own lock)."""
    from purchases.triggers import WATCH_LOCK

    if path.name == "run.lock":
        return path.is_file() and path.stat().st_size == 0
    return path.name == "inbox" and path.is_dir() and all(
        p.name == WATCH_LOCK for p in path.iterdir())


def _require_fresh_home() -> None:
    """demo's guard: a home that does not exist or is empty, no lake or database elsewhere."""
    from sqlalchemy.engine import make_url

    s = state.settings
    fix = "run the demo in a new folder: `purchases --home /tmp/purchases-demo demo`"
    if s.database_url:
        try:
            url = make_url(s.database_url)
            dialect = serving.dialects.find(url.get_backend_name())
            in_home = (
                dialect is not None and dialect.embedded  # a file, not a server
                and bool(url.database)
                and _inside(Path(str(url.database)), s.home)
            )
        except Exception:  # noqa: BLE001 - unparseable: certainly not a fresh SQLite file
            in_home = False
        if not in_home:
            raise InputError(
                "demo writes sample customers and will not write into the configured "
                f"database {serving.masked_url(s.database_url)} "
                f"(PURCHASES_DATABASE_URL/--database-url): unset it and {fix}"
            )
    if s.database_secret_arn:
        raise InputError(
            "demo writes sample customers and will not write into the database of "
            f"PURCHASES_DATABASE_SECRET_ARN: unset it and {fix}"
        )
    if s.lake and ("://" in s.lake or not _inside(Path(s.lake), s.home)):
        raise InputError(
            f"demo writes sample data and will not write into the configured lake {s.lake} "
            f"(PURCHASES_LAKE/--lake): unset it and {fix}"
        )
    held = sorted(p.name for p in s.home.iterdir() if not _no_data(p)) if s.home.is_dir() else []
    if held:
        raise InputError(
            f"demo writes sample data only into a new or empty home, and {s.home} already "
            f"holds {', '.join(held)}: {fix}"
        )


from purchases import cli_reprocess  # noqa: E402, F401 - registers `purchases reprocess` on app

# --- entry point -----------------------------------------------------------------------------


_RESUME = {
    "ingest": "files landed so far stay landed; the same `purchases ingest` lands the rest",
    "run": "the run stopped; `purchases run` resumes it",
    "demo": "the run stopped; `purchases run` resumes it",
    "watch": "the run stopped; `purchases run` or `purchases watch` resumes it",
    "reprocess": "the run stopped; `purchases run` resumes it",
}


def _on_sigint(signum: int, frame: Any) -> None:
    # Noted before raising: DuckDB turns the KeyboardInterrupt into its own "Query
    # interrupted" error, which would otherwise reach the user as a failed step.
    state.interrupted = True
    signal.default_int_handler(signum, frame)


def _interrupted() -> None:
    resume = _RESUME.get(state.command or "", "")
    say(err, "Interrupted (Ctrl-C)" + (f": {resume}." if resume else "."), "red")
    sys.exit(EXIT_INTERRUPTED)


def _error(message: object) -> None:
    err.print(text("Error:", "red"), text(one_line(_as_given(str(message)))), soft_wrap=True,
              highlight=False)


def _as_given(message: str) -> str:
    """A setting the message names by its variable, given this time by its flag, named by the
    flag: `--database-url 'x'` was told "PURCHASES_DATABASE_URL is not a valid URL"."""
    for variable, flag in state.flags.items():
        if flag not in message:  # "(PURCHASES_LAKE/--lake)" names both already
            message = re.sub(rf"\b{variable}\b", flag, message)
    return message


def _show_usage_error(exc: Any) -> None:
    """A click usage error as click shows it, but with the user's values shown literally."""
    if not exc.format_message().strip():
        return  # no arguments: the help, printed already, is all there is to say
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        for line in ctx.get_usage().splitlines():
            say(err, line)
        say(err, f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.")
        say(err, "")
    hint = _global_option_hint(exc, ctx) or _sql_option_hint(exc, ctx)
    # Click's "(Possible options: ...)" guesses would contradict the hint.
    message = f"No such option: {exc.option_name}{hint}" if hint else exc.format_message()
    say(err, f"Error: {one_line(message)}")


def _sql_option_hint(exc: Any, ctx: Any) -> str:
    """`purchases query "-- note\nSELECT ..."`: SQL opening with a comment looks like an option."""
    name = getattr(exc, "option_name", None) or ""
    if ctx is None or ctx.command.name != "query" or not name.startswith("--") or not any(
            c.isspace() for c in name):
        return ""
    return (" (SQL that starts with - is read as an option: give it after --, "
            "`purchases query -- \"-- ...\"`)")


def _global_option_hint(exc: Any, ctx: Any) -> str:
    """`purchases top --home X`: say that --home belongs before the command."""
    name = getattr(exc, "option_name", None)
    # Only for an unknown option (typer's click is its own, so no isinstance).
    if ctx is None or ctx.parent is None or not name or not exc.format_message().startswith(
            "No such option"):
        return ""
    root = ctx.find_root()
    if not any(name in getattr(p, "opts", ()) for p in root.command.params):
        return ""
    command = ctx.command_path.removeprefix(root.command_path).strip()
    return (f" ({name} is an option of {root.command_path} itself: give it before the "
            f"command, `{root.command_path} {name} ... {command}`)")


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: one error handler, one red line, exit 1 (traceback with --debug).

    Usage errors exit 2, Ctrl-C exits 130 with a line saying how to resume.
    """
    previous = signal.getsignal(signal.SIGINT)
    # Not when SIGINT is ignored (a background job), nor off the main thread (not allowed).
    ours = previous is signal.default_int_handler and threading.current_thread() is (
        threading.main_thread()
    )
    if ours:
        signal.signal(signal.SIGINT, _on_sigint)
    state.interrupted, state.command = False, None
    try:
        return _main(argv)
    finally:
        if ours:
            signal.signal(signal.SIGINT, previous)


def _fit_help_to_the_terminal() -> None:
    """Below 80 columns Rich's help panels cut an option's help mid-word (PURCHASES_DATAB…)
    and split choices (<table|csv|j son>); click's plain layout wraps at words: used there."""
    # The width Rich would draw at: it measures the terminal through stdin or stderr too,
    # where stdout is a pipe (`purchases --help | less`).
    mode = "rich" if Console().width >= _RICH_HELP_FROM else None
    apps = [app]
    while apps:
        each = apps.pop()
        each.rich_markup_mode = mode
        apps.extend(g.typer_instance for g in each.registered_groups if g.typer_instance)


_RICH_HELP_FROM = 80  # columns


def _main(argv: list[str] | None) -> Any:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    _fit_help_to_the_terminal()
    try:
        code = app(args=argv, standalone_mode=False)
    except PurchasesError as exc:
        if state.interrupted:
            _interrupted()
        if debug:
            err.print_exception()
        _error(exc)
        sys.exit(EXIT_ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except OSError as exc:  # the file system refused: name the path, not a Python class
        if state.interrupted:
            _interrupted()
        if debug:
            err.print_exception()
        where = f"{exc.filename}: " if exc.filename else ""
        _error(
            f"{where}{exc.strerror or exc} (check the path given by --home, --lake or the "
            "command line exists, is the right kind (file/folder) and can be written)"
        )
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        if state.interrupted:
            _interrupted()
        # Usage errors of the CLI parser (typer ships its own click).
        if callable(getattr(exc, "format_message", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            _show_usage_error(exc)
            sys.exit(exc.exit_code)
        if debug:
            err.print_exception()
        _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(EXIT_ERROR)
    # typer turns a KeyboardInterrupt inside a command into a silent exit code 130.
    if state.interrupted or code == EXIT_INTERRUPTED:
        _interrupted()
    return code


if __name__ == "__main__":
    main()
