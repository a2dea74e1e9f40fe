"""The figures people read: one definition each, shared by the CLI and the HTML report.

`purchases runs`, `rejects` and `top` print what these functions return, and `purchases
report` draws the same rows, so a number on the page can never disagree with the terminal.
Everything here only reads: the run history, the lake (through the read-only lake views of
`engines.duckdb_lake`) and the serving database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from purchases import commit_log, history, serving
from purchases.config import Settings
from purchases.contract import QUARANTINE_COLUMNS, Reason
from purchases.history import RunRecord
from purchases.storage import Lake

RUN_COLUMNS: tuple[str, ...] = (
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
)
"""Columns of `purchases runs` (and of the report's run table), in order."""

REJECT_COLUMNS: tuple[str, ...] = tuple(QUARANTINE_COLUMNS)
"""Columns of `purchases rejects`: a quarantined row's raw values and where it came from."""


def _lake_query(lake: Lake, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    # Imported here: the DuckDB lake views load DuckDB, which `purchases runs` never needs.
    from purchases.engines.duckdb_lake import lake_query

    return lake_query(lake, sql, list(params))


# --- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """Rows picked for display, and how many there are in all (to say what was left out)."""

    rows: list[Any]
    total: int

    @property
    def left_out(self) -> int:
        return self.total - len(self.rows)


def latest_runs(lake: Lake, limit: int = 0) -> Shown:
    """The latest `limit` run records, oldest first (0: every run), and the number of runs."""
    total = len(history.run_ids(lake))
    return Shown(history.load_all(lake, limit=limit or None), total)


def run_row(record: RunRecord) -> dict[str, Any]:
    """One line of `purchases runs`: a run's id, start, trigger, status and totals."""
    c = record.counts()
    return {
        "run_id": record.run_id,
        "started": record.started_at,
        "trigger": record.trigger,
        "status": record.status,
        "files": len(record.files),
        "accepted": c.get("accepted", 0),
        "rejected": c.get("rejected", 0),
        "duplicates": c.get("duplicates", 0),
        "customers_changed": c.get("customers_changed", 0),
        "seconds": record.seconds,
        "failed_step": record.failed_step,
    }


# --- rejects ----------------------------------------------------------------------------------


def rejected_rows(lake: Lake, day: date | None = None, limit: int = 0) -> Shown:
    """Quarantined rows (of one ingestion date, or all), in file and line order.

    Args:
        lake: the lake to read.
        day: only rows of this ingestion date.
        limit: at most this many rows (0: all).

    Returns:
        The rows (columns REJECT_COLUMNS) and how many rows match in all.
    """
    where, params = ("WHERE ingestion_date = ?", [day]) if day else ("", [])
    cap = f" LIMIT {int(limit)}" if limit else ""
    rows = _lake_query(
        lake,
        # Bandit B608: contract column names and an int; the date is bound
        f"SELECT {', '.join(REJECT_COLUMNS)} FROM quarantine {where} "  # nosec B608
        f"ORDER BY ingestion_date, source_file, line_number NULLS LAST, purchase_id{cap}",
        params,
    )
    if not limit or len(rows) < limit:
        return Shown(rows, len(rows))
    counted = _lake_query(lake, f"SELECT count(*) AS n FROM quarantine {where}", params)  # nosec B608  # fixed text
    return Shown(rows, int(counted[0]["n"]))


def rejects_by_reason(lake: Lake) -> list[dict[str, Any]]:
    """Quarantined rows per ingestion date and reason code (what `purchases rejects` lists,
    counted): ingestion_date, reason, rows."""
    return _lake_query(
        lake,
        "SELECT ingestion_date, reason, count(*) AS rows FROM quarantine "
        "GROUP BY ingestion_date, reason ORDER BY ingestion_date, reason",
    )


def fx_gaps(lake: Lake) -> list[dict[str, Any]]:
    """Currencies quarantined as unknown_currency (no FX rate for the purchase date): the
    currency as standardised, its rows, the purchase dates lacking a rate and the ingestion
    dates that brought them."""
    return _lake_query(
        lake,
        "SELECT upper(trim(currency)) AS currency, count(*) AS rows, "
        "min(purchase_date) AS first_purchase_date, max(purchase_date) AS last_purchase_date, "
        "list(DISTINCT purchase_date ORDER BY purchase_date) AS purchase_dates, "
        "list(DISTINCT ingestion_date ORDER BY ingestion_date) AS ingestion_dates "
        "FROM quarantine WHERE reason = ? GROUP BY 1 ORDER BY rows DESC, currency",
        [Reason.UNKNOWN_CURRENCY.value],
    )


# --- accepted purchases -------------------------------------------------------------------------


def accepted_by_day(lake: Lake) -> list[dict[str, Any]]:
    """Accepted purchases per ingestion date: ingestion_date, rows, amount_aud (a Decimal)."""
    return _lake_query(
        lake,
        "SELECT ingestion_date, count(*) AS rows, sum(amount_aud) AS amount_aud FROM silver "
        "GROUP BY ingestion_date ORDER BY ingestion_date",
    )


# --- the serving database -----------------------------------------------------------------------


def top_customers(settings: Settings, n: int = 5) -> list[dict[str, Any]]:
    """The business query (DESIGN §5): the n customers who spent most, in AUD."""
    with serving.connect(settings) as db:
        return db.top(n)


# --- lineage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lineage:
    """What each layer holds, from the bronze files to the serving table, and whether the
    serving database has applied every batch the lake committed."""

    bronze_files: int  # landed files
    pending_files: int  # landed, not processed yet
    rejected_files: int  # rejected whole (missing column, not UTF-8, empty)
    rows_in: int  # rows of the processed bronze files
    silver_rows: int
    quarantine_rows: int
    duplicates: int  # dropped as copies of an accepted row
    gold_rows: int  # customer rows of every published change set
    customers: int  # customers in the lake's current state
    staged_rows: int  # rows waiting in the staging table
    upserted_rows: int  # gold rows the ledger says were upserted (its `customers`)
    summary_rows: int  # rows of customer_purchase_summary
    total_served: Decimal  # sum of total_spent_aud over the summary table
    committed_batches: list[int] = field(default_factory=list)
    applied_batches: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls) -> Lineage:
        """The lineage of a lake nothing was ingested into."""
        return cls(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Decimal(0))

    @property
    def unapplied_batches(self) -> list[int]:
        """Committed batches the serving ledger has not applied (empty: all served)."""
        applied = set(self.applied_batches)
        return [b for b in self.committed_batches if b not in applied]

    @property
    def rows_balance(self) -> bool:
        """rows in = accepted + rejected + duplicates, over the whole lake (DESIGN §3)."""
        return self.rows_in == self.silver_rows + self.quarantine_rows + self.duplicates


def lineage(settings: Settings, lake: Lake, *, served: bool = True) -> Lineage:
    """Counts along bronze -> silver / quarantine -> gold -> staging -> summary; with
    `served` False (an embedded database not created yet, which a reader must not create)
    the serving figures are zero."""
    from purchases.steps import pending_files  # the one definition of "pending"

    commits = commit_log.load_commits(lake)
    outcomes = [o for c in commits for o in c.files]
    bronze_outcomes = [o for o in outcomes if not o.is_reprocess]
    layers = _lake_query(
        lake,
        "SELECT (SELECT count(*) FROM silver) AS silver, "
        "(SELECT count(*) FROM quarantine) AS quarantine, "
        "(SELECT count(*) FROM gold) AS gold, (SELECT count(*) FROM customers) AS customers",
    )[0]
    ledger: list[dict[str, Any]] = []
    staged, summary_rows, total = 0, 0, Decimal(0)
    if served:
        with serving.connect(settings) as db:
            ledger = db.ledger()
            staged = db.staged_rows()
            summary_rows, total = served_totals(db)
    return Lineage(
        bronze_files=len(lake.list_bronze()),
        pending_files=len(pending_files(lake, commits)),
        rejected_files=sum(1 for o in bronze_outcomes if o.file_rejection),
        rows_in=sum(o.rows_in for o in bronze_outcomes),
        silver_rows=int(layers["silver"]),
        quarantine_rows=int(layers["quarantine"]),
        duplicates=sum(o.duplicates for o in outcomes),
        gold_rows=int(layers["gold"]),
        customers=int(layers["customers"]),
        staged_rows=staged,
        upserted_rows=sum(int(r["customers"]) for r in ledger),
        summary_rows=summary_rows,
        total_served=total,
        committed_batches=[c.batch_id for c in commits],
        applied_batches=sorted(int(r["batch_id"]) for r in ledger),
    )


def served_totals(db: serving.ServingDatabase) -> tuple[int, Decimal]:
    """Customers in the summary table and the AUD they spent in all (exact, as a Decimal)."""
    import sqlalchemy as sa

    summary = db.tables.summary
    # The exact column (SQLite's integer cents) carries the Decimal result type.
    money = db.tables.exact(summary, "total_spent_aud")
    query = sa.select(sa.func.count(), sa.func.sum(money, type_=money.type)).select_from(summary)
    with db.engine.connect() as con:
        count, total = con.execute(query).one()
    return int(count or 0), Decimal(total or 0).quantize(Decimal("0.01"))


__all__ = [
    "REJECT_COLUMNS", "RUN_COLUMNS", "Lineage", "Shown", "accepted_by_day", "fx_gaps",
    "latest_runs", "lineage", "rejected_rows", "rejects_by_reason", "run_row", "served_totals",
    "top_customers",
]
