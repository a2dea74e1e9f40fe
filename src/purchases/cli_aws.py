"""`purchases aws`: the AWS side from the command line: `render` and `package` (the deployment
artifacts), `catalog sync` (the Glue Data Catalog).

Registered on the main app by cli.py (one add_typer line); botocore is imported only by the
commands that talk to AWS.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from purchases.cli_params import given_path
from purchases.render import say

aws_app = typer.Typer(
    help="AWS deployment artifacts (render, package) and the Glue Data Catalog.",
    no_args_is_help=True,
)
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


@aws_app.command("render")
def render_definition(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", parser=given_path, metavar="DIR",
                     help="Folder to write statemachine.asl.json to "
                                   "(default: print the definition)."),
    ] = None,
) -> None:
    """The Step Functions definition (ASL JSON) rendered from the pipeline declaration.

    Its ${...} placeholders are the template's DefinitionSubstitutions.
    The same declaration always renders the same bytes.
    """
    from purchases.aws import asl
    from purchases.aws.package import PackageError, writable_folder, write_whole

    text = asl.render(asl.to_asl())
    if out_dir is None:
        sys.stdout.write(text)
        return
    folder = writable_folder(out_dir)
    target = folder / asl.DEFINITION_FILE
    try:
        write_whole(target, text.encode())
    except OSError as exc:
        raise PackageError(f"could not write {target}: {exc.strerror or exc}") from None
    say(out, f"wrote {target}")


@aws_app.command("package")
def package(
    out_dir: Annotated[
        Path,
        typer.Option("--out", parser=given_path, metavar="DIR",
                     help="Folder for the artifacts (created if needed)."),
    ] = Path("dist/aws"),
) -> None:
    """Build what the template deploys: wheel, Glue script, Lambda zip, definition, manifest.

    Needs the project's source checkout and the package registry.
    pip downloads the Lambda zip's dependencies for python3.12 on x86_64.
    The same source and dependencies give the same bytes.
    Upload the folder to s3://<ArtifactsBucket>/<ArtifactsPrefix>/
    (README: Deploy to AWS).
    """
    from purchases.aws import package as packaging

    built = packaging.build(out_dir, progress=lambda line: say(err, line, "dim"))
    for name, digest in built.files.items():
        size = (built.out / name).stat().st_size
        say(out, f"{built.out / name}  {size:,} bytes  sha256 {digest[:16]}")
    say(out, f"{built.out / packaging.MANIFEST}")
    say(out, f"lambda.zip: {built.lambda_zipped / 2**20:.1f} MB zipped, "
             f"{built.lambda_unzipped / 2**20:.1f} MB unzipped (Lambda allows 50 / 250 MB); "
             f"holds {', '.join(built.lambda_packages)}")
    say(out, f"next: aws s3 cp {built.out} s3://<ArtifactsBucket>/<ArtifactsPrefix>/ "
             f"--recursive, then deploy with WheelFile={built.wheel}")


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
    Drops partitions of superseded (reprocessed) files,
    and any partition no commit publishes.
    A second run changes nothing.
    """
    from purchases.aws import glue_catalog
    from purchases.config import load_settings
    from purchases.storage import Lake

    settings = _settings()
    if database is not None:
        # Validated like the environment variable.
        settings = load_settings({"glue_database": "--database"},
                                 **{**settings.model_dump(), "glue_database": database})
    glue_catalog.require_catalog(settings)  # before the lake: nothing is made for a refusal
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
