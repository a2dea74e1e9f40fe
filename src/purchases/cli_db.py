"""`purchases db`: the serving database's schema (Alembic migrations) from the command line.

The pipeline migrates on first use anyway; these commands let an operator do it ahead of a
deployment, see where a database stands, or hand the DDL to a DBA.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from purchases.render import OutputFormat, fits, render_rows, say_wrapped

db_app = typer.Typer(help="Serving database schema: migrate, inspect.", no_args_is_help=True)

out = Console()


def _settings():
    # Imported late: cli imports this module to register it, and owns the parsed settings.
    from purchases.cli import state

    return state.settings


def _revision(value: str, *, also: str) -> str:
    """A revision flag's value: `also` (head, base) or a revision this version ships."""
    from purchases import migrations

    if value == also or value in migrations.shipped_revisions():
        return value
    raise typer.BadParameter(f"{value!r} is not a revision this version of purchases ships: "
                             f"give {also} or one of {', '.join(migrations.shipped_revisions())}")


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Option(
        parser=lambda v: _revision(v, also="head"), metavar="REVISION",
        help="Target revision: head, or one this version ships.")] = "head",
    sql: Annotated[bool, typer.Option("--sql", help="Print the DDL that would bring the "
                                      "configured database (at its revision, or --from) to "
                                      "the target, in its dialect, instead of running it.")
                   ] = False,
    start: Annotated[str | None, typer.Option(
        "--from", parser=lambda v: _revision(v, also="base"), metavar="REVISION",
        help="With --sql: the revision the database is at (base: an empty one), given "
             "instead of reading it from the database.")] = None,
) -> None:
    """Apply the schema migrations to the serving database (safe to repeat)."""
    from purchases import migrations, serving
    from purchases.errors import ConfigError, PurchasesError

    order = migrations.shipped_revisions()
    target = order[-1] if revision == "head" else revision
    if start is not None and not sql:
        raise typer.BadParameter("goes with --sql (a database's own revision is read from it)",
                                 param_hint="'--from'")
    file = serving.database_file(_settings())
    new_file = file is not None and not file.exists()
    if sql:
        if start is None and not new_file:  # the database's own revision
            try:
                start = serving.current_schema_revision(_settings())
            except PurchasesError as exc:
                raise ConfigError(f"{exc}; give --from REVISION (base: an empty database) to "
                                  "print the DDL without connecting") from exc
        elif start == "base":
            start = None
        if start is not None and order.index(start) >= order.index(target):
            out.file.write(f"-- the database is at revision {start}: nothing to apply for "
                           f"{target}\n")
            return
        out.file.write(serving.upgrade_sql(_settings(), revision, start))
        return
    where, before, now = serving.upgrade_schema(_settings(), revision)
    if before == now:
        past = f", past {target} already (upgrade never goes back)" if now != target else ""
        say_wrapped(out, f"{where}: schema at revision {now}{past}; nothing to apply")
    else:
        was = "a new database file" if new_file else (
            f"revision {before}" if before else "an empty database")
        say_wrapped(out, f"{where}: schema upgraded from {was} to revision {now}")


@db_app.command("current")
def current(
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f",
                                              help="table, csv or json.")] = OutputFormat.table,
) -> None:
    """The database's schema revision against this version's head, and the batches applied."""
    from purchases import serving
    from purchases.cli import database_not_created
    from purchases.errors import ConfigError

    if database_not_created():
        raise ConfigError(f"database {serving.database_file(_settings())} does not exist yet: "
                          "the first `purchases run` (or `purchases db upgrade`) creates it")
    status = serving.schema_status(_settings())
    rows = [{"": k, "value": v} for k, v in status.items()]
    if fmt is OutputFormat.table and fits(out, rows, ["", "value"]):  # read down, not across
        render_rows(out, rows, ["", "value"], fmt, title="Serving database")
    elif fmt is OutputFormat.table:  # narrow: the record layout is already one field a line
        render_rows(out, [status], list(status), fmt, title="Serving database")
    else:
        render_rows(out, [status], list(status), fmt)
