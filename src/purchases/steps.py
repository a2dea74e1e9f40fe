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

from purchases import bronze, commit_log, gold, reprocess, serving, silver
from purchases.aws import glue_catalog
from purchases.commit_log import (
    CUSTOMERS_DIR,
    PURCHASE_KEYS_DIR,
    REPROCESS_PREFIX,
    RUNS_STAGING_DIR,
    Commit,
    CommitConflict,
    FileOutcome,
)
from purchases.config import Settings
from purchases.contract import (
    AUD_TYPE,
    CUSTOMER_STATE_COLUMNS,
    FX_COLUMNS,
    MAX_AUD,
    PURCHASE_KEY_COLUMNS,
    QUARANTINE_COLUMNS,
    SILVER_COLUMNS,
    Reason,
)
from purchases.engines import Engine, open_engine
from purchases.errors import InputError, PermanentError
from purchases.faults import fault_point
from purchases.fx import load_fx_rates
from purchases.storage import BronzeObject, Lake


@dataclass(frozen=True)
class Selection:
    """Which quarantined rows `purchases reprocess` re-validates: those with one of `reasons`
    (default: every reason whose rows hold parsed fields), landed on `day` (default: any).

    Raises:
        InputError: a reason is not a reason code, or names rows without fields.
    """

    reasons: tuple[str, ...] = tuple(reprocess.SELECTABLE)
    day: date | None = None

    def __post_init__(self) -> None:
        valid = ", ".join(reprocess.SELECTABLE)
        for r in self.reasons:
            if r in reprocess.UNSELECTABLE:
                raise InputError(
                    f"reason {r} cannot be reprocessed: those rows have no fields to "
                    "re-validate (fix the file and land it again)"
                )
            if r not in set(Reason):
                raise InputError(f"reason {r!r} is not a reason code; valid: {valid}")
        object.__setattr__(self, "reasons", tuple(dict.fromkeys(self.reasons)) or
                           tuple(reprocess.SELECTABLE))


@dataclass
class RunContext:
    """What every step of one run receives."""

    settings: Settings
    lake: Lake
    run_id: str
    only_files: list[str] | None = None  # lake-relative bronze paths; None: every pending file
    engine_factory: Callable[[Settings, Lake], Engine] = open_engine
    selection: Selection | None = None  # a reprocess run: the quarantined rows it re-validates

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
    commits = commit_log.load_commits(lake)
    if _committed_already(ctx, commits):
        return StepResult("bronze_to_silver", seconds=time.perf_counter() - started)
    pending = pending_files(lake, commits, ctx.only_files)
    batch_id = commit_log.next_batch_id(commits)
    # An earlier attempt of this run (a retry, or a plan that lost its commit race) may
    # have left part of its output: start clean. Only this run's own folders are touched.
    commit_log.discard_run(lake, ctx.run_id)
    key_range: list[int] | None = None
    checked: list[Commit] = []
    # A file with an over-long record is read from a copy without it, kept in staging.
    inspected = [
        (obj, bronze.inspect(lake, obj, max_record_bytes=ctx.settings.max_record_bytes,
                             scratch=f"{ctx.staging}/bronze"))
        for obj in pending
    ]
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


def _committed_already(ctx: RunContext, commits: list[Commit]) -> bool:
    """Whether this run id committed its batch already (a run commits at most one): then
    the first step only finishes that publication and plans nothing, since discarding
    "its" outputs would delete what the commit record names."""
    mine = next((c for c in reversed(commits) if c.run_id == ctx.run_id), None)
    if mine is None:
        return False
    commit_log.complete_publication(ctx.lake, mine)
    return True


def pending_files(
    lake: Lake, commits: list[Commit], only: list[str] | None = None
) -> list[BronzeObject]:
    """Bronze files not processed yet (by path + content hash), in arrival order.

    With `only`, just those lake-relative paths are looked at (no listing of all bronze).

    Raises:
        PermanentError: a path in `only` is not a bronze data file in the lake.
    """
    done = commit_log.processed_file_ids(commits)
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
    seen_versions = {(f.path, f.version) for f in commit_log.bronze_outcomes(commits)}
    # A path no batch processed is pending whatever its bytes: it is hashed once, by
    # bronze.inspect, not here too.
    done_paths = {file_id.rpartition("#")[0] for file_id in done}
    pending = []
    for obj in objects:
        if (obj.path, obj.version) in seen_versions:
            continue
        if obj.path in done_paths and (
                f"{obj.path}#{bronze.sha256_of_lake(lake, obj.path)}" in done):
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
    *,
    rows: str | None = None,
    quarantine_sql: str | None = None,
) -> tuple[list[int] | None, list[Commit]]:
    """Classify the batch's rows, write staged silver/quarantine and the batch's purchase
    keys. Returns the [min, max] purchase_id of the keys (None when nothing was accepted)
    and the earlier batches the duplicate check read.

    The rows are the bronze files' records, read once into the stored relation `checked`
    (engine.scan_bronze), or (reprocess) the relation `rows` in raw_rows' shape registered by
    the caller with `files` empty; `quarantine_sql` replaces the staged quarantine's query.
    Every output below reads `checked`, never the input again. Counts go to
    `outcomes[source_file]`."""
    lake, settings = ctx.lake, ctx.settings
    rates = load_fx_rates(settings.fx_rates)
    engine.register_rows(
        "fx_rates", FX_COLUMNS, [(r.currency, r.rate_to_aud, r.valid_from) for r in rates]
    )
    engine.create_table("fx_ranges", silver.fx_ranges_sql("fx_rates"))
    checked = silver.checked_sql("records", "fx_ranges", max_amount=settings.max_amount)
    if rows is None:
        engine.register_rows("batch_files", silver.BATCH_FILE_COLUMNS,
                             [(i, f.path, f.ingestion_date) for i, f in enumerate(files)])
        engine.scan_bronze(lake, files, "checked", checked)
    else:
        engine.create_table("batch_files", silver.batch_files_sql(rows))
        engine.create_view("records", silver.records_sql(rows, "batch_files"))
        engine.register_rows("malformed_rows", silver.MALFORMED_COLUMNS, [])
        engine.create_table("checked", checked)
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
        silver.duplicate_decisions_sql("checked", "batch_files", "purchase_keys",
                                       "silver_history"),
    )
    engine.create_view("classified", silver.classified_sql("checked", "decisions"))
    engine.write_parquet(
        silver.silver_sql("classified", "batch_files"),
        ctx.output("silver"),
        partition_by="ingestion_date",
    )
    fault_point("after_silver_write")
    engine.write_parquet(
        quarantine_sql or silver.quarantine_sql("classified", "malformed_rows", "batch_files"),
        ctx.output("quarantine"),
        partition_by="ingestion_date",
    )
    fault_point("after_quarantine_write")
    # One pass for the conservation ledger and the batch's key range.
    lo: int | None = None
    hi: int | None = None
    for source_file, outcome, reason, n, invalid_emails, low, high in engine.fetch(
        silver.file_counts_sql("classified", "malformed_rows", "batch_files")
    ):
        o = outcomes[source_file]
        o.rows_in += n
        if outcome == silver.ACCEPTED:
            o.accepted += n
            o.invalid_emails += int(invalid_emails or 0)
            lo = int(low) if lo is None else min(lo, int(low))
            hi = int(high) if hi is None else max(hi, int(high))
        elif outcome == silver.DUPLICATE:
            o.duplicates += n
        else:
            o.rejected[reason] = o.rejected.get(reason, 0) + n
    # Keys are reached only through the commit record, so they are written in place (see
    # commit_log), in this run's folder: no later move, and nothing refers to them if this
    # run never commits.
    if lo is not None:
        keys_dir = commit_log.run_dir(PURCHASE_KEYS_DIR, ctx.run_id)
        lake.makedirs(keys_dir)
        engine.write_parquet(silver.purchase_keys_sql("classified"), lake.url(keys_dir))
    fault_point("after_keys_write")
    return (None if lo is None or hi is None else [lo, hi]), earlier


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
                "SELECT DISTINCT r.batch_id FROM key_ranges r JOIN checked v "
                "ON v.purchase_id BETWEEN r.lo AND r.hi WHERE v.reason IS NULL"
            )
        }
    return [c for c in commits if c.batch_id in hit or c.batch_id in always]


# --- quarantine -> silver (reprocess) ---------------------------------------------------------

REPROCESS_STEP = "quarantine_to_silver"


def quarantine_to_silver(ctx: RunContext) -> StepResult:
    """Re-validate the selected quarantined rows as a new batch (`purchases reprocess`).

    bronze_to_silver's counterpart: the rows go through the same rules, FX table and
    duplicate check (`_validate`), accepted ones are staged for silver, and every quarantine
    file with a row that changed (accepted, duplicate, or another reason) gets a staged
    replacement that the plan lists as superseded; silver_to_gold then commits it all as one
    batch. A selection in which nothing changes plans an empty batch: nothing is published.
    """
    started = time.perf_counter()
    lake = ctx.lake
    selection = ctx.selection or Selection()
    commits = commit_log.load_commits(lake)
    if _committed_already(ctx, commits):
        return StepResult(REPROCESS_STEP, seconds=time.perf_counter() - started)
    batch_id = commit_log.next_batch_id(commits)
    commit_log.discard_run(lake, ctx.run_id)
    files = [p for p in commit_log.published_files(commits, "quarantine")
             if _in_partition(p, selection.day)]
    outcomes: dict[str, FileOutcome] = {}
    superseded: list[str] = []
    key_range: list[int] | None = None
    checked: list[Commit] = []
    if files:
        engine = ctx.engine_factory(ctx.settings, ctx.lake)
        try:
            views = [f"quarantine_{i}" for i in range(len(files))]
            for view, rel in zip(views, files, strict=True):
                engine.register_parquet(view, [lake.url(rel)], QUARANTINE_COLUMNS)
            engine.create_view("quarantine_rows", reprocess.quarantine_rows_sql(views))
            engine.register_rows("selected_reasons", {"reason": "VARCHAR"},
                                 [(r,) for r in selection.reasons])
            engine.create_table("reprocess_input", reprocess.reprocess_input_sql(
                "quarantine_rows", reprocess.selected_sql("selected_reasons", selection.day)))
            for source_file, day, _ in engine.fetch(
                    reprocess.selected_counts_sql("reprocess_input")):
                outcomes[source_file] = FileOutcome(
                    f"{REPROCESS_PREFIX}{source_file}", "", str(day),
                    version=f"batch-{batch_id:012d}")
            if outcomes:
                engine.create_view("requeued", reprocess.requeued_sql("reprocess_input"))
                key_range, checked = _validate(
                    ctx, engine, [], commits, outcomes, batch_id, rows="requeued",
                    quarantine_sql=reprocess.requarantine_sql("classified", "reprocess_input"),
                )
                changed = engine.fetch(
                    reprocess.changed_files_sql("classified", "reprocess_input"))
                superseded = sorted(files[int(i)] for (i,) in changed)
        finally:
            engine.close()
    plan = {
        "batch_id": batch_id,
        "base_batch_id": batch_id - 1,
        # Nothing changed: an empty plan, so silver_to_gold publishes nothing (idempotence).
        "files": [o.__dict__ for o in outcomes.values()] if superseded else [],
        "ingestion_date": max((o.ingestion_date for o in outcomes.values()),
                              default=str(date.today())),
        "key_range": key_range,
        "superseded": superseded,
    }
    lake.write_json(ctx.plan_path, plan)
    fault_point("after_bronze_to_silver")  # the same point: the first step's plan is written
    found = list(outcomes.values())
    return StepResult(
        REPROCESS_STEP,
        counts={
            "files": len(found),
            "selected": sum(o.rows_in for o in found),
            "rows_in": sum(o.rows_in for o in found),
            "accepted": sum(o.accepted for o in found),
            "rejected": sum(o.rejected_total for o in found),
            "duplicates": sum(o.duplicates for o in found),
            "quarantine_files_replaced": len(superseded),
            "earlier_batches_read": len(checked),
        },
        files=found,
        seconds=time.perf_counter() - started,
    )


def _in_partition(rel: str, day: date | None) -> bool:
    """Whether a quarantine file may hold rows of `day` (its partition folder says)."""
    if day is None or "/ingestion_date=" not in rel:
        return True
    return f"/ingestion_date={day.isoformat()}/" in rel


# --- silver -> gold --------------------------------------------------------------------------


def silver_to_gold(ctx: RunContext) -> StepResult:
    """Merge the batch into the customer state, stage gold, and publish the batch atomically."""
    started = time.perf_counter()
    lake = ctx.lake
    commits = commit_log.load_commits(lake)
    mine = next((c for c in reversed(commits) if c.run_id == ctx.run_id), None)
    if mine is not None:
        # A retry after this run's commit point: the batch is published already (perhaps not
        # all moved yet); finish it rather than plan it again.
        commit_log.complete_publication(lake, mine)
        return StepResult(
            "silver_to_gold",
            counts={"customers_changed": mine.customers_changed, "batch_id": mine.batch_id},
            seconds=time.perf_counter() - started,
        )
    plan = lake.read_json_if_exists(ctx.plan_path)
    if plan is None:
        raise PermanentError(f"run {ctx.run_id}: bronze_to_silver has not run (no plan)")
    files = [FileOutcome(**f) for f in plan["files"]]
    if not files:
        lake.remove(ctx.staging)  # nothing to publish
        return StepResult("silver_to_gold", counts={"customers_changed": 0, "batch_id": None},
                          seconds=time.perf_counter() - started)
    if commit_log.next_batch_id(commits) != plan["batch_id"]:
        # Another writer committed since this run planned: its duplicate check and customer
        # state are out of date. Discard and let the caller plan again on the new log.
        commit_log.discard_run(lake, ctx.run_id)
        raise CommitConflict(ctx.run_id, plan["batch_id"])
    batch_id = plan["batch_id"]
    state_dir = commit_log.run_dir(CUSTOMERS_DIR, ctx.run_id)
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
                [lake.url(p) for p in commit_log.customer_state_files(commits)],
                CUSTOMER_STATE_COLUMNS,
            )
            engine.create_table(
                "changed",
                gold.changed_customers_sql("batch_silver", "customer_state", batch_id=batch_id),
            )
            _refuse_totals_over_limit(engine, ctx.settings)
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
    day = commit_log.as_date(plan["ingestion_date"])
    keys = _parquet_files(lake, commit_log.run_dir(PURCHASE_KEYS_DIR, ctx.run_id))
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
        superseded=list(plan.get("superseded") or []),
    )
    try:
        commit_log.publish(lake, commit)
    except CommitConflict:
        commit_log.discard_run(lake, ctx.run_id)  # lost the race: nothing of it is referred to
        raise
    fault_point("after_commit")
    commit_log.drop_old_state(lake, [*commits, commit])
    glue_catalog.register_batch(ctx.settings, lake, commit)  # no-op without a Glue database
    return StepResult(
        "silver_to_gold",
        counts={"customers_changed": customers_changed, "batch_id": batch_id},
        seconds=time.perf_counter() - started,
    )


def _refuse_totals_over_limit(engine: Engine, settings: Settings) -> None:
    """A customer whose total would pass what the serving table holds fails the step, by name.

    Each row is within PURCHASES_MAX_AMOUNT, so silver accepted them; only their sum is too
    large, which takes about 10^10 purchases at the default maximum but few under a raised one.

    Raises:
        PermanentError: naming the first such customer and the setting that lets them in.
    """
    over = engine.fetch(gold.over_limit_sql("changed"))
    if over:
        raise PermanentError(
            f"customer {over[0][0]}: total_spent_aud would pass {MAX_AUD} AUD, the most the "
            f"serving table holds ({AUD_TYPE}); purchases that large pass only a raised "
            f"PURCHASES_MAX_AMOUNT (now {settings.max_amount}): lower it to reject them as "
            f"{Reason.AMOUNT_TOO_LARGE}")


def _parquet_files(lake: Lake, rel_dir: str) -> list[str]:
    return [p for p in lake.list_files(rel_dir)
            if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))]


def _final_names(lake: Lake, staging: str, batch_id: int, day: date) -> list[tuple[str, str]]:
    """Where each staged file is published: batch-numbered, so no two batches collide.

    Each batch gets its own folder in a partition (`.../batch=<id>/`): the Glue catalog
    registers that folder only once the batch is wholly moved (aws.glue_catalog), so Athena
    never sees half a batch, and a superseded file's partition can be dropped alone."""
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
            parts = (target, head, f"batch={batch_id:012d}", dst_name)
            moves.append((src, "/".join(x for x in parts if x)))
    return moves


# --- gold -> serving -------------------------------------------------------------------------


def gold_to_staging(ctx: RunContext) -> StepResult:
    """Load every committed batch not yet applied to the serving database into staging."""
    started = time.perf_counter()
    with serving.connect(ctx.settings) as db:
        applied = db.applied_batches()
        loaded = 0
        for commit in commit_log.load_commits(ctx.lake):
            if commit.batch_id in applied or not commit_log.gold_files(commit):
                continue
            # On S3 a move is copy-then-delete: the batch's committing run (perhaps on another
            # machine) may still be moving its gold files. Finish that first, so the batch is
            # read whole from where its record says it is.
            commit_log.move_outputs(ctx.lake, commit, _fault=None)
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
        for commit in commit_log.load_commits(ctx.lake):
            if commit.batch_id in applied or not commit_log.gold_files(commit):
                continue
            upserted += db.apply_batch(commit)
    return StepResult("upsert", counts={"customers_upserted": upserted},
                      seconds=time.perf_counter() - started)


STEP_FUNCTIONS: dict[str, Callable[[RunContext], StepResult]] = {
    "bronze_to_silver": bronze_to_silver,
    "silver_to_gold": silver_to_gold,
    "gold_to_staging": gold_to_staging,
    "upsert": upsert,
    REPROCESS_STEP: quarantine_to_silver,
}
"""Every step by its declared name (pipeline.PIPELINE, and the reprocess variant's first)."""
