"""The `purchases` command line: parses arguments, calls the pipeline, renders results.

Exit codes: 0 success; 1 error (a failed run, unusable input or setting); 2 usage error;
3 another run holds the writer lock and --no-wait was given.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from purchases import bronze, history, serving
from purchases.cli_db import db_app
from purchases.config import Settings, load_settings
from purchases.contract import QUARANTINE_COLUMNS, TOP_CUSTOMERS_COLUMNS
from purchases.errors import InputError, PurchasesError
from purchases.render import OutputFormat, render_rows
from purchases.storage import Lake

EXIT_ERROR, EXIT_USAGE, EXIT_BUSY = 1, 2, 3

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

out = Console()
err = Console(stderr=True)


class State:
    settings: Settings
    debug: bool = False


state = State()

FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="table (people), csv or json (scripts).")
]


@app.callback()
def _global(
    home: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the lake, database and lock "
            "[env PURCHASES_HOME; default ./.purchases]."
        ),
    ] = None,
    lake: Annotated[str | None, typer.Option(help="Lake URI [env PURCHASES_LAKE].")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the serving database [env PURCHASES_DATABASE_URL]."),
    ] = None,
    fx_rates: Annotated[
        Path | None,
        typer.Option(
            help="FX rates CSV [env PURCHASES_FX_RATES; default: the shipped illustrative table]."
        ),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="duckdb or spark [env PURCHASES_ENGINE].")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks on errors.")] = False,
) -> None:
    state.debug = debug
    state.settings = load_settings(
        home=home, lake=lake, database_url=database_url, fx_rates=fx_rates, engine=engine
    )


def _lake() -> Lake:
    return Lake(state.settings.lake_uri)


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} {value!r} is not a date YYYY-MM-DD") from None


# --- ingest / run ----------------------------------------------------------------------------


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="CSV/.csv.gz files or folders of them.")],
    day: Annotated[
        str | None, typer.Option("--date", help="Ingestion date YYYY-MM-DD [default: today, UTC].")
    ] = None,
) -> None:
    """Land files in bronze/year=YYYY/month=MM/day=DD/ (atomically; same bytes again: no-op)."""
    when = _parse_day(day, "--date") or datetime.now(UTC).date()
    files = bronze.source_files(paths)
    if not files:
        raise InputError(f"no .csv or .csv.gz files in {', '.join(map(str, paths))}")
    landed = bronze.land(_lake(), files, when)
    for item in landed:
        note = "already landed (same bytes)" if item.skipped else "landed"
        out.print(f"{note}: {item.path}")
    out.print(f"{sum(not i.skipped for i in landed)} file(s) landed for {when}")


@app.command()
def run(
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a run in progress, or exit 3.")
    ] = True,
) -> None:
    """Process every pending bronze file through all steps and print what happened."""
    from purchases.orchestrator import RunBusy, run_pipeline

    try:
        with err.status("running…") as status:
            record = run_pipeline(
                state.settings,
                wait=wait,
                on_step=lambda task, step: status.update(f"{task.name}: {step.status}"),
            )
    except RunBusy as exc:
        err.print(f"[yellow]{exc}[/]")
        raise typer.Exit(EXIT_BUSY) from None
    print_run(record)


@app.command()
def watch(
    inbox: Annotated[
        Path | None, typer.Argument(help="Folder to watch [default: $PURCHASES_HOME/inbox].")
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds a file's size and mtime must stay unchanged before it is "
            "taken (write to x.part and rename to skip the wait).",
        ),
    ] = 2.0,
    debounce: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Quiet seconds after the last landed file before a run starts: files "
            "arriving together are run together.",
        ),
    ] = 2.0,
) -> None:
    """Watch a folder: land each complete new CSV in bronze under its arrival date, then run.

    Landed files move to <inbox>/.landed/<date>/. Ctrl-C or SIGTERM stops after the current
    run.
    """
    from purchases.triggers import WatchOptions, log_to_stderr, watch_folder

    log_to_stderr()
    watch_folder(
        state.settings,
        inbox or state.settings.home / "inbox",
        WatchOptions(settle=settle, debounce=debounce),
    )


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
        out.print("no pending files" if record.status == "succeeded" else "no files processed")
    counts = record.counts()
    by_reason = ", ".join(f"{k}={v}" for k, v in record.rejected_by_reason().items())
    out.print(
        f"rows: in={counts.get('rows_in', 0)} accepted={counts.get('accepted', 0)} "
        f"rejected={counts.get('rejected', 0)}"
        + (f" ({by_reason})" if by_reason else "")
        + f" duplicates={counts.get('duplicates', 0)}",
        highlight=False,
    )
    out.print(
        f"customers changed: {counts.get('customers_changed', 0)}; "
        f"customers upserted: {counts.get('customers_upserted', 0)}; "
        f"{record.status} in {record.seconds:.1f}s"
    )


# --- reading results ---------------------------------------------------------------------------


@app.command()
def top(
    n: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many customers.")] = 5,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Top customers by total spent in AUD (the business query)."""
    with serving.connect(state.settings) as db:
        rows = db.top(n)
    render_rows(out, rows, list(TOP_CUSTOMERS_COLUMNS), fmt, title=f"Top {n} customers")


@app.command()
def rejects(
    day: Annotated[str | None, typer.Option("--date", help="Only this ingestion date.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 1000,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Quarantined rows with their reason codes."""
    from purchases.engines.duckdb_engine import lake_query

    when = _parse_day(day, "--date")
    where, params = ("WHERE ingestion_date = ?", [when]) if when else ("", [])
    cols = list(QUARANTINE_COLUMNS)
    rows = lake_query(
        _lake(),
        f"SELECT {', '.join(cols)} FROM quarantine {where} "
        f"ORDER BY ingestion_date, source_file, line_number NULLS LAST, purchase_id LIMIT {limit}",
        params,
    )
    render_rows(out, rows, cols, fmt, title="Rejected rows")


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    fmt: FormatOption = OutputFormat.table,
    limit: Annotated[int, typer.Option(min=1, help="The latest N runs.")] = 50,
) -> None:
    """Run history: id, start, status, files, counts, duration."""
    if ctx.invoked_subcommand:
        return
    rows = []
    for r in history.load_all(_lake(), limit=limit):
        c = r.counts()
        rows.append(
            {
                "run_id": r.run_id,
                "started": r.started_at,
                "trigger": r.trigger,
                "status": r.status,
                "files": len(r.files),
                "accepted": c.get("accepted", 0),
                "rejected": c.get("rejected", 0),
                "duplicates": c.get("duplicates", 0),
                "customers_changed": c.get("customers_changed", 0),
                "seconds": r.seconds,
                "failed_step": r.failed_step,
            }
        )
    cols = [
        "run_id",
        "started",
        "trigger",
        "status",
        "files",
        "accepted",
        "rejected",
        "duplicates",
        "customers_changed",
        "seconds",
        "failed_step",
    ]
    render_rows(out, rows, cols, fmt, title="Runs")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id from `purchases runs`.")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """One run: per-step status, attempts, durations, files, counts and error."""
    record = history.load(_lake(), run_id)
    if record is None:
        raise InputError(f"no run {run_id!r} (see `purchases runs`)")
    if fmt is OutputFormat.json:
        out.file.write(json.dumps(asdict(record), default=str) + "\n")
        return
    from rich.markup import escape

    out.print(
        f"run {record.run_id}  trigger={record.trigger}  status={record.status}  "
        f"started={record.started_at}  finished={record.finished_at}  "
        f"seconds={record.seconds}",
        markup=False,
        highlight=False,
    )
    if record.input:
        out.print(
            "input: " + "  ".join(f"{k}={v}" for k, v in record.input.items()),
            markup=False,
            highlight=False,
        )
    for what, items in record.recovered.items():
        out.print(
            f"recovered first: {what.replace('_', ' ')}: {', '.join(map(str, items))}",
            markup=False,
            highlight=False,
        )
    if record.failed_step:
        out.print(
            f"[red]failed step: {escape(record.failed_step)}  "
            f"{escape(str(record.error_class))}: {escape(str(record.error))}[/]"
        )
    elif record.error:
        out.print(f"[yellow]{escape(record.error)}[/]")
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
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="SQL over the views bronze, silver, quarantine, "
            "gold and customers (current state)."
        ),
    ],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """SQL over the lake (an embedded stand-in for Athena), run by DuckDB."""
    from purchases.engines.duckdb_engine import lake_query

    rows = lake_query(_lake(), sql)
    render_rows(out, rows, list(rows[0]) if rows else [], fmt)


# --- sample data -----------------------------------------------------------------------------


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write CSV files to.")],
    rows: Annotated[int, typer.Option(min=0, help="Rows per day.")] = 15_000,
    days: Annotated[int, typer.Option(min=1, help="Number of ingestion days.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    bad_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of bad rows per day.")
    ] = 0.02,
    start: Annotated[str, typer.Option(help="First ingestion date.")] = "2024-01-15",
) -> None:
    """Write realistic sample purchase files, with a controllable share of bad rows."""
    from purchases.generate import generate as write_files

    files = write_files(
        out_dir,
        rows=rows,
        days=days,
        seed=seed,
        bad_ratio=bad_ratio,
        start=_parse_day(start, "--start"),
    )
    for f in files:
        out.print(f"{f.path}  ({f.rows} rows, ingest on {f.ingestion_date})")


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=1, help="Rows per day.")] = 15_000,
    days: Annotated[int, typer.Option(min=1, help="Number of days.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    bad_ratio: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.02,
) -> None:
    """Generate sample data, ingest and run it day by day, then show the top 5 customers."""
    from purchases.generate import generate as write_files
    from purchases.orchestrator import run_pipeline

    with tempfile.TemporaryDirectory(prefix="purchases-demo-") as tmp:
        files = write_files(Path(tmp), rows=rows, days=days, seed=seed, bad_ratio=bad_ratio)
        lake = _lake()
        for f in files:
            bronze.land(lake, [f.path], f.ingestion_date)
            with err.status(f"day {f.ingestion_date}: running…"):
                record = run_pipeline(state.settings, trigger="demo")
            c = record.counts()
            out.print(
                f"{f.ingestion_date}: rows={c.get('rows_in', 0)} "
                f"accepted={c.get('accepted', 0)} rejected={c.get('rejected', 0)} "
                f"duplicates={c.get('duplicates', 0)} "
                f"customers changed={c.get('customers_changed', 0)} "
                f"({record.seconds:.1f}s)"
            )
    with serving.connect(state.settings) as db:
        render_rows(
            out,
            db.top(5),
            list(TOP_CUSTOMERS_COLUMNS),
            OutputFormat.table,
            title="Top 5 customers by total spent (AUD)",
        )


# --- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: one error handler, one red line, exit 1 (traceback with --debug)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return app(args=argv, standalone_mode=False)
    except PurchasesError as exc:
        if debug:
            err.print_exception()
        err.print(f"[red]Error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]Aborted.[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        # Usage errors of the CLI parser (typer ships its own click): shown as click shows them.
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            err.print_exception()
        err.print(
            f"[red]Error:[/] unexpected {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback)",
            soft_wrap=True,
        )
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
