"""The pipeline's steps: each does its I/O at the edges and runs the shared transforms.

Each step can run alone (locally, or as a Glue job / Lambda on AWS): what one step hands
the next is written under the run's staging folder in the lake, never kept in memory.

Every step is idempotent: run again (a retry, or the next run after a crash) it starts from
what the lake says, clears what an earlier attempt left half-done, and reaches the same end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from purchases import bronze, catalog, gold, serving, silver
from purchases.catalog import (
    CUSTOMERS_DIR,
    PURCHASE_KEYS_DIR,
    RUNS_STAGING_DIR,
    Commit,
    FileOutcome,
)
from purchases.config import Settings
from purchases.contract import (
    CUSTOMER_STATE_COLUMNS,
    FX_COLUMNS,
    PURCHASE_KEY_COLUMNS,
    SILVER_COLUMNS,
)
from purchases.engines import Engine, open_engine
from purchases.errors import PermanentError
from purchases.faults import fault_point
from purchases.fx import load_fx_rates
from purchases.storage import BronzeObject, Lake


@dataclass
class RunContext:
    """What every step of one run receives."""

    settings: Settings
    lake: Lake
    run_id: str
    only_files: list[str] | None = None  # lake-relative bronze paths; None: every pending file
    engine_factory: Callable[[Settings, Lake], Engine] = open_engine

    @property
    def staging(self) -> str:
        return f"{RUNS_STAGING_DIR}/{self.run_id}"

    @property
    def plan_path(self) -> str:
        return f"{self.staging}/plan.json"

    def output(self, kind: str) -> str:
        """URL of the staging folder an engine writes one output to (created if needed)."""
        rel = f"{self.staging}/{kind}"
        self.lake.makedirs(rel)
        return self.lake.url(rel)


@dataclass
class StepResult:
    """What a step reports: for the run history, the CLI and the AWS entry points."""

    step: str
    counts: dict[str, Any] = field(default_factory=dict)
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0


# --- bronze -> silver ----------------------------------------------------------------------


def bronze_to_silver(ctx: RunContext) -> StepResult:
    """Validate every pending bronze file into staged silver, quarantine and purchase keys."""
    started = time.perf_counter()
    lake = ctx.lake
    commits = catalog.load_commits(lake)
    pending = pending_files(lake, commits, ctx.only_files)
    batch_id = catalog.next_batch_id(commits)
    # An earlier attempt of this run (a retry) may have left part of its output: start clean.
    lake.remove(ctx.staging)
    lake.remove(catalog.batch_dir(PURCHASE_KEYS_DIR, batch_id))
    key_range: list[int] | None = None
    checked: list[Commit] = []
    inspected = [(obj, bronze.inspect(lake, obj)) for obj in pending]
    readable = [f for _, f in inspected if f.rejection is None]
    outcomes = {
        f.path: FileOutcome(
            f.path,
            f.sha256,
            str(f.ingestion_date),
            version=obj.version,
            file_rejection=f.rejection.value if f.rejection else None,
            detail=f.detail,
        )
        for obj, f in inspected
    }
    if readable:
        engine = ctx.engine_factory(ctx.settings, ctx.lake)
        try:
            key_range, checked = _validate(ctx, engine, readable, commits, outcomes, batch_id)
        finally:
            engine.close()
    plan = {
        "batch_id": batch_id,
        "base_batch_id": batch_id - 1,
        "files": [o.__dict__ for o in outcomes.values()],
        "ingestion_date": str(max((f.ingestion_date for f in pending), default=date.today())),
        "key_range": key_range,
    }
    lake.write_json(ctx.plan_path, plan)
    fault_point("after_bronze_to_silver")
    files = list(outcomes.values())
    return StepResult(
        "bronze_to_silver",
        counts={
            "files": len(files),
            "rows_in": sum(o.rows_in for o in files),
            "accepted": sum(o.accepted for o in files),
            "rejected": sum(o.rejected_total for o in files),
            "duplicates": sum(o.duplicates for o in files),
            "files_rejected": sum(1 for o in files if o.file_rejection),
            # How much history the duplicate check read: stays small as history grows.
            "earlier_batches_read": len(checked),
        },
        files=files,
        seconds=time.perf_counter() - started,
    )


def pending_files(
    lake: Lake, commits: list[Commit], only: list[str] | None = None
) -> list[BronzeObject]:
    """Bronze files not processed yet (by path + content hash), in arrival order.

    With `only`, just those lake-relative paths are looked at (no listing of all bronze).

    Raises:
        PermanentError: a path in `only` is not a bronze data file in the lake.
    """
    done = catalog.processed_file_ids(commits)
    if only is None:
        objects = lake.list_bronze()
    else:
        found = {p: lake.bronze_object(p) for p in dict.fromkeys(only)}
        missing = sorted(p for p, o in found.items() if o is None)
        if missing:
            raise PermanentError(f"bronze file not found in the lake: {missing[0]}")
        objects = sorted((o for o in found.values() if o is not None),
                         key=lambda o: (o.ingestion_date, o.path))
    # Identity is path + content hash. Re-hashing all history every run would make a run's
    # cost grow with it, so a file whose size and modification stamp are as processed is
    # skipped unread; only a path whose stamp moved is hashed to see if its bytes changed.
    seen_versions = {(f.path, f.version) for c in commits for f in c.files}
    pending = []
    for obj in objects:
        if (obj.path, obj.version) in seen_versions:
            continue
        if f"{obj.path}#{bronze.sha256_of_lake(lake, obj.path)}" in done:
            continue
        pending.append(obj)
    return pending


def _validate(
    ctx: RunContext,
    engine: Engine,
    files: list[bronze.BronzeFile],
    commits: list[Commit],
    outcomes: dict[str, FileOutcome],
    batch_id: int,
) -> tuple[list[int] | None, list[Commit]]:
    """Classify the batch's rows, write staged silver/quarantine and the batch's purchase
    keys. Returns the [min, max] purchase_id of the keys (None when nothing was accepted)
    and the earlier batches the duplicate check read."""
    lake, settings = ctx.lake, ctx.settings
    engine.register_bronze(lake, files)
    rates = load_fx_rates(settings.fx_rates)
    engine.register_rows(
        "fx_rates", FX_COLUMNS, [(r.currency, r.rate_to_aud, r.valid_from) for r in rates]
    )
    engine.create_view("standardised", silver.standardised_sql("raw_rows"))
    engine.create_table("fx_ranges", silver.fx_ranges_sql("fx_rates"))
    engine.create_table(
        "validated",
        silver.validated_sql("standardised", "fx_ranges", max_amount=settings.max_amount),
    )
    earlier = _batches_to_check(engine, commits)
    engine.register_parquet(
        "purchase_keys",
        [lake.url(p) for c in earlier for p in c.published_under(PURCHASE_KEYS_DIR)],
        PURCHASE_KEY_COLUMNS,
    )
    engine.register_parquet(
        "silver_history",
        [lake.url(p) for c in earlier for p in c.published_under("silver")],
        SILVER_COLUMNS,
    )
    engine.create_table(
        "decisions",
        silver.duplicate_decisions_sql("validated", "purchase_keys", "silver_history"),
    )
    engine.create_view("classified", silver.classified_sql("validated", "decisions"))
    engine.write_parquet(
        silver.silver_sql("classified"),
        ctx.output("silver"),
        partition_by="ingestion_date",
    )
    fault_point("after_silver_write")
    engine.write_parquet(
        silver.quarantine_sql("classified", "malformed_rows"),
        ctx.output("quarantine"),
        partition_by="ingestion_date",
    )
    fault_point("after_quarantine_write")
    # Keys are reached only through the commit record, so they are written in place (see
    # catalog): no later move, and nothing refers to them if this run never commits.
    keys_dir = catalog.batch_dir(PURCHASE_KEYS_DIR, batch_id)
    lo, hi = engine.fetch(
        f"SELECT MIN(purchase_id), MAX(purchase_id) FROM classified "
        f"WHERE outcome = '{silver.ACCEPTED}'"
    )[0]
    if lo is not None:
        lake.makedirs(keys_dir)
        engine.write_parquet(
            silver.purchase_keys_sql("classified") + " ORDER BY purchase_id", lake.url(keys_dir)
        )
    fault_point("after_keys_write")
    for source_file, outcome, reason, n, invalid_emails in engine.fetch(
        silver.file_counts_sql("classified", "malformed_rows")
    ):
        o = outcomes[source_file]
        o.rows_in += n
        if outcome == silver.ACCEPTED:
            o.accepted += n
            o.invalid_emails += int(invalid_emails or 0)
        elif outcome == silver.DUPLICATE:
            o.duplicates += n
        else:
            o.rejected[reason] = o.rejected.get(reason, 0) + n
    return (None if lo is None else [int(lo), int(hi)]), earlier


def _batches_to_check(engine: Engine, commits: list[Commit]) -> list[Commit]:
    """Earlier batches that may hold one of this batch's purchase ids.

    A batch's keys file records its [min, max] purchase_id; only batches whose range meets
    one of the ids that passed validation are read for the duplicate check. Purchase ids
    grow over time, so that is the last few batches plus the rare re-sent old purchase,
    instead of every purchase ever accepted.
    """
    ranged: list[tuple[int, int, int]] = []
    always: set[int] = set()
    for c in commits:
        for p in c.published_under(PURCHASE_KEYS_DIR):
            lo, hi = c.key_ranges.get(p, (None, None))
            if lo is None or hi is None:
                always.add(c.batch_id)  # recorded before ranges were: always read
            else:
                ranged.append((c.batch_id, int(lo), int(hi)))
    hit: set[int] = set()
    if ranged:
        engine.register_rows(
            "key_ranges", {"batch_id": "BIGINT", "lo": "BIGINT", "hi": "BIGINT"}, ranged
        )
        hit = {
            int(b)
            for (b,) in engine.fetch(
                "SELECT DISTINCT r.batch_id FROM key_ranges r JOIN validated v "
                "ON v.purchase_id BETWEEN r.lo AND r.hi WHERE v.reason IS NULL"
            )
        }
    return [c for c in commits if c.batch_id in hit or c.batch_id in always]


# --- silver -> gold --------------------------------------------------------------------------


def silver_to_gold(ctx: RunContext) -> StepResult:
    """Merge the batch into the customer state, stage gold, and publish the batch atomically."""
    started = time.perf_counter()
    lake = ctx.lake
    commits = catalog.load_commits(lake)
    mine = next((c for c in reversed(commits) if c.run_id == ctx.run_id), None)
    if mine is not None:
        # A retry after this run's commit point: the batch is published already (perhaps not
        # all moved yet); finish it rather than plan it again.
        catalog.complete_publication(lake, mine)
        return StepResult(
            "silver_to_gold",
            counts={"customers_changed": mine.customers_changed, "batch_id": mine.batch_id},
            seconds=time.perf_counter() - started,
        )
    if not lake.exists(ctx.plan_path):
        raise PermanentError(f"run {ctx.run_id}: bronze_to_silver has not run (no plan)")
    plan = lake.read_json(ctx.plan_path)
    if catalog.next_batch_id(commits) != plan["batch_id"]:
        raise PermanentError(
            f"run {ctx.run_id}: batch {plan['batch_id']} was planned on a lake another run has "
            "changed since; run again to process the files afresh"
        )
    files = [FileOutcome(**f) for f in plan["files"]]
    if not files:
        lake.remove(ctx.staging)  # nothing to publish
        return StepResult("silver_to_gold", counts={"customers_changed": 0, "batch_id": None},
                          seconds=time.perf_counter() - started)
    batch_id = plan["batch_id"]
    state_dir = catalog.batch_dir(CUSTOMERS_DIR, batch_id)
    # Whatever an earlier attempt of this step wrote is redone from the plan.
    lake.remove(f"{ctx.staging}/gold")
    lake.remove(state_dir)
    staged_silver = [p for p in lake.list_files(f"{ctx.staging}/silver") if p.endswith(".parquet")]
    customers_changed = 0
    if staged_silver:
        engine = ctx.engine_factory(ctx.settings, ctx.lake)
        try:
            engine.register_parquet("batch_silver", [lake.url(p) for p in staged_silver],
                                    SILVER_COLUMNS)
            engine.register_parquet(
                "customer_state",
                [lake.url(p) for p in catalog.customer_state_files(commits)],
                CUSTOMER_STATE_COLUMNS,
            )
            engine.create_table(
                "changed",
                gold.changed_customers_sql("batch_silver", "customer_state", batch_id=batch_id),
            )
            engine.write_parquet(gold.gold_sql("changed"), ctx.output("gold"))
            fault_point("after_gold_write")
            # The state is reached only through the commit record: written in place.
            lake.makedirs(state_dir)
            engine.write_parquet(
                gold.next_state_sql("customer_state", "changed") + " ORDER BY customer_id",
                lake.url(state_dir),
            )
            fault_point("after_state_write")
            customers_changed = int(engine.fetch("SELECT COUNT(*) FROM changed")[0][0])
        finally:
            engine.close()
    day = catalog.as_date(plan["ingestion_date"])
    keys = _parquet_files(lake, catalog.batch_dir(PURCHASE_KEYS_DIR, batch_id))
    key_range = plan.get("key_range")
    commit = Commit(
        batch_id=batch_id,
        run_id=ctx.run_id,
        ingestion_date=str(day),
        files=files,
        moves=_final_names(lake, ctx.staging, batch_id, day),
        customers_changed=customers_changed,
        outputs=[*_parquet_files(lake, state_dir), *keys],
        key_ranges={p: key_range for p in keys} if key_range else {},
    )
    catalog.publish(lake, commit)
    fault_point("after_commit")
    catalog.drop_old_state(lake, [*commits, commit])
    return StepResult(
        "silver_to_gold",
        counts={"customers_changed": customers_changed, "batch_id": batch_id},
        seconds=time.perf_counter() - started,
    )


def _parquet_files(lake: Lake, rel_dir: str) -> list[str]:
    return [p for p in lake.list_files(rel_dir)
            if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))]


def _final_names(lake: Lake, staging: str, batch_id: int, day: date) -> list[tuple[str, str]]:
    """Where each staged file is published: batch-numbered, so no two batches collide."""
    targets = {
        "silver": "silver",
        "quarantine": "quarantine",
        "gold": Lake.gold_dir(day),
    }
    moves = []
    for kind, target in targets.items():
        for src in _parquet_files(lake, f"{staging}/{kind}"):
            inner = src[len(f"{staging}/{kind}/") :]
            head, _, name = inner.rpartition("/")
            dst_name = f"batch-{batch_id:012d}-{name}"
            moves.append((src, "/".join(x for x in (target, head, dst_name) if x)))
    return moves


# --- gold -> serving -------------------------------------------------------------------------


def gold_to_staging(ctx: RunContext) -> StepResult:
    """Load every committed batch not yet applied to the serving database into staging."""
    started = time.perf_counter()
    with serving.connect(ctx.settings) as db:
        applied = db.applied_batches()
        loaded = 0
        for commit in catalog.load_commits(ctx.lake):
            if commit.batch_id in applied or not catalog.gold_files(commit):
                continue
            loaded += db.load_staging(ctx.lake, commit)
            fault_point("after_staging_load")
    return StepResult("gold_to_staging", counts={"staged_rows": loaded},
                      seconds=time.perf_counter() - started)


def upsert(ctx: RunContext) -> StepResult:
    """Apply staged batches, oldest first, each in one transaction with the ledger."""
    started = time.perf_counter()
    with serving.connect(ctx.settings) as db:
        applied = db.applied_batches()
        upserted = 0
        for commit in catalog.load_commits(ctx.lake):
            if commit.batch_id in applied or not catalog.gold_files(commit):
                continue
            upserted += db.apply_batch(commit)
    return StepResult("upsert", counts={"customers_upserted": upserted},
                      seconds=time.perf_counter() - started)


STEP_FUNCTIONS: dict[str, Callable[[RunContext], StepResult]] = {
    "bronze_to_silver": bronze_to_silver,
    "silver_to_gold": silver_to_gold,
    "gold_to_staging": gold_to_staging,
    "upsert": upsert,
}
