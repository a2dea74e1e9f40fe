"""`purchases reprocess`: re-validate quarantined rows once their cause is fixed.

Registered on the main app by cli.py (one import line); the output is `cli.print_run`'s.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from purchases.cli import (
    EXIT_BUSY,
    _day,
    _lake,
    _require_writable_home,
    app,
    err,
    out,
    print_run,
    state,
)
from purchases.contract import Reason
from purchases.render import text
from purchases.reprocess import SELECTABLE, UNSELECTABLE

_VALID = ", ".join(SELECTABLE)


def _reasons(values: list[str]) -> list[str]:
    valid = {r.value for r in Reason}
    for v in values:
        if v in UNSELECTABLE:
            raise typer.BadParameter(
                f"{v} rows have no fields to re-validate (fix the file and land it again); "
                f"valid: {_VALID}", param_hint="--reason")
        if v not in valid:
            raise typer.BadParameter(f"{v!r} is not a reason code; valid: {_VALID}",
                                     param_hint="--reason")
    return values


@app.command()
def reprocess(
    reasons: Annotated[
        list[str] | None,
        typer.Option(
            "--reason",
            help="Only rows quarantined with this reason code; repeatable (default: every "
            "reason except malformed_row and record_too_large, whose rows have no fields).",
        ),
    ] = None,
    day: Annotated[
        date | None,
        typer.Option("--date", parser=_day, metavar="YYYY-MM-DD",
                     help="Only rows of this ingestion date."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a run in progress, or exit 3.")
    ] = True,
) -> None:
    """Re-validate quarantined rows under the current rules and FX table, as a new batch.

    E.g. after adding a missing rate to PURCHASES_FX_RATES:
    purchases reprocess --reason unknown_currency

    Rows that pass move to silver, gold and the summary table, once.
    Rows still failing stay quarantined, with their current reason.
    Running it again changes nothing.
    Rows quarantined as malformed_row or record_too_large are never selected
    (they have no fields): fix the file and land it again.
    """
    from purchases.orchestrator import RunBusy, reprocess_pipeline

    chosen, when = _reasons(reasons or []), day
    # Quarantined rows are only ever in a lake something was ingested into: a mistyped home
    # is said so, instead of a new empty home with a run record that selected nothing.
    _lake(create=False)
    _require_writable_home()
    try:
        with err.status("reprocessing…") as status:
            record = reprocess_pipeline(
                state.settings, chosen, when, wait=wait,
                on_step=lambda task, step: status.update(text(f"{task.name}: {step.status}")),
            )
    except RunBusy as exc:
        err.print(str(exc), style="yellow", markup=False, highlight=False)
        raise typer.Exit(EXIT_BUSY) from None
    counts = record.counts()
    selected, replaced = counts.get("selected", 0), counts.get("quarantine_files_replaced", 0)
    if selected:
        print_run(record)
    if not selected:
        note = "no quarantined row matches"
    elif replaced:
        note = f"{replaced} quarantine file(s) replaced"
    else:
        note = "nothing changed: every selected row is still rejected for the same reason"
    out.print(f"reprocess: selected={selected}; {note}", markup=False, highlight=False)
