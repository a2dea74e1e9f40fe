"""`purchases report`: one self-contained HTML page on how the runs went.

Per run (files, rows in / accepted / rejected by reason / duplicates, whole-file rejections,
customers changed, step durations and attempts, status and error), rejects and accepted
volume over time, FX coverage gaps, lineage with counts from bronze to the serving table,
and the top customers. Every figure comes from `purchases.insights`, the functions behind
`purchases runs`, `rejects` and `top`, so the page and the terminal always agree.

The page loads nothing when it is viewed: styles are inline, charts are inline SVG drawn in
`charts`, there is no script, and its Content-Security-Policy forbids any request.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from purchases import insights
from purchases.config import Settings
from purchases.errors import InputError
from purchases.lineage import database_namespace, lake_namespace
from purchases.storage import Lake, file_in_the_way

TOP_N = 5


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read once."""

    generated_at: str
    lake: str  # the lake URI
    database: str  # the serving database's URL without credentials
    runs: insights.Shown  # RunRecords, oldest first
    rejects: list[dict[str, Any]]  # insights.rejects_by_reason
    accepted: list[dict[str, Any]]  # insights.accepted_by_day
    fx_gaps: list[dict[str, Any]]  # insights.fx_gaps
    lineage: insights.Lineage
    top: list[dict[str, Any]]  # insights.top_customers


def gather(settings: Settings, *, runs: int = 50, served: bool = True) -> ReportData:
    """Read the figures of the page: the run history, the lake and the serving database.

    Args:
        settings: where the lake and the serving database are.
        runs: the latest N runs in detail (0: every run).
        served: False when the serving database is an embedded file not created yet (a home
            ingested into but never run): its figures are then empty, and it stays uncreated.
    """
    if settings.lake is None and not Path(settings.lake_uri).exists():
        return _nothing_ingested(settings, served=served)
    lake = Lake(settings.lake_uri, create=False)  # a mistyped --lake is said so, not made
    return ReportData(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        lake=lake_namespace(settings.lake_uri),
        database=database_namespace(settings.db_url),
        runs=insights.latest_runs(lake, runs),
        rejects=insights.rejects_by_reason(lake),
        accepted=insights.accepted_by_day(lake),
        fx_gaps=insights.fx_gaps(lake),
        lineage=insights.lineage(settings, lake, served=served),
        top=insights.top_customers(settings, TOP_N) if served else [],
    )


def _nothing_ingested(settings: Settings, *, served: bool) -> ReportData:
    """The figures of a home whose lake has not been created yet (nothing ingested): none,
    read without creating the lake; the serving database may still hold a table."""
    return ReportData(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        lake=lake_namespace(settings.lake_uri),
        database=database_namespace(settings.db_url),
        runs=insights.Shown([], 0),
        rejects=[],
        accepted=[],
        fx_gaps=[],
        lineage=insights.Lineage.empty(),
        top=insights.top_customers(settings, TOP_N) if served else [],
    )


def build_report(settings: Settings, *, runs: int = 50, served: bool = True) -> str:
    """The report page as HTML text (`gather` says what `served` means)."""
    from purchases.report.page import render

    return render(gather(settings, runs=runs, served=served))


def write_report(settings: Settings, path: Path, *, runs: int = 50, served: bool = True) -> Path:
    """Write the report to `path` (its folder created if needed) in one step: a browser that
    has it open never reads half a page. Returns the absolute path written."""
    html = build_report(settings, runs=runs, served=served)
    shown = Path(path).expanduser().absolute()  # as given: /dev/stdout, not /proc/N/fd/...
    target = shown.resolve()
    if target.exists() and not target.is_file():
        # The page replaces the file in one step (a rename), which would put it in place of
        # a FIFO or a device (/dev/full) instead of writing into it.
        raise InputError(f"cannot write the report to {shown}: it is not a regular file "
                         "(give --out a file in a folder you can write)")
    if blocked := file_in_the_way(target.parent):
        raise InputError(f"cannot write the report to {shown}: {blocked} is a file, not a "
                         "folder (give --out a file in a folder you can write)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _unwritable(shown, exc, f"cannot create a file in {target.parent}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for reading
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(shown, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _unwritable(target: Path, exc: OSError, what: str = "") -> InputError:
    """Named after the page, not the temporary file it is written as first."""
    reason = f"{what}: {exc.strerror or exc}" if what else str(exc.strerror or exc)
    return InputError(f"cannot write the report to {target}: {reason} (give --out a file in "
                      "a folder you can write)")


__all__ = ["ReportData", "build_report", "gather", "write_report"]
