"""`purchases aws`: the AWS side from the command line (`catalog sync`; deployment to come).

Registered on the main app by cli.py (one add_typer line); boto3 is imported only by the
commands that talk to AWS.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from purchases.render import say

aws_app = typer.Typer(help="AWS runtime: Glue Data Catalog.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="Glue Data Catalog: the lake's silver, quarantine and gold tables for Athena.",
    no_args_is_help=True,
)
aws_app.add_typer(catalog_app, name="catalog")

out = Console()
err = Console(stderr=True)


def _settings():
    # Imported late: cli imports this module to register it, and owns the parsed settings.
    from purchases.cli import state

    return state.settings


@catalog_app.command("sync")
def sync(
    database: Annotated[
        str | None,
        typer.Option(help="Glue database (default: env PURCHASES_GLUE_DATABASE)."),
    ] = None,
) -> None:
    """(Re)register the lake in the Glue Data Catalog, for Athena. Safe to repeat.

    Creates the database and the silver, quarantine and gold tables if missing.
    Registers the partition of every published batch (one per batch and day).
    Drops partitions of superseded (reprocessed) files, and any no commit publishes.
    A second run changes nothing.
    """
    from purchases.aws import glue_catalog
    from purchases.config import load_settings
    from purchases.storage import Lake

    settings = _settings()
    if database is not None:
        # Validated like the environment variable.
        settings = load_settings(**{**settings.model_dump(), "glue_database": database})
    results = glue_catalog.sync(settings, Lake(settings.lake_uri))
    for r in results:
        say(
            out,
            f"{settings.glue_database}.{r.table}: {r.partitions} "
            f"partition{'' if r.partitions == 1 else 's'} registered "
            f"({r.added} added, {r.removed} removed)",
        )
        for folder in r.skipped:
            say(
                err,
                f"  not registered: {folder} (not a batch folder, or holds a superseded "
                "file beside current ones)",
                "yellow",
            )
