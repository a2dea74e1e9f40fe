"""`purchases db`: the serving database's schema (Alembic migrations) from the command line.

The pipeline migrates on first use anyway; these commands let an operator do it ahead of a
deployment, see where a database stands, or hand the DDL to a DBA.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from purchases.render import OutputFormat, fits, render_rows, say

db_app = typer.Typer(help="Serving database schema: migrate, inspect.", no_args_is_help=True)

out = Console()


def _settings():
    # Imported late: cli imports this module to register it, and owns the parsed settings.
    from purchases.cli import state

    return state.settings


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    sql: Annotated[bool, typer.Option("--sql", help="Print the DDL for the configured "
                                      "database's dialect instead of running it.")] = False,
) -> None:
    """Apply the schema migrations to the serving database (safe to repeat)."""
    from purchases import serving

    if sql:
        out.file.write(serving.upgrade_sql(_settings(), revision))
        return
    where, now = serving.upgrade_schema(_settings(), revision)
    say(out, f"{where}: schema at revision {now}")


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
