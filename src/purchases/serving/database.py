"""The serving tables of one database: staging load, replace-upsert and batch ledger, written
once for every dialect (each dialect's own ways come from `purchases.serving.dialects`).

A batch is applied in one transaction together with its ledger row, so applying it twice is a
no-op, and a row only takes values from a batch newer than the one it already reflects. The
schema is created and evolved by the Alembic revisions in `purchases.migrations`, applied on
first use. Driver errors become TransientError or PermanentError (`serving.errors`); transient
ones are retried here briefly. A batch the database refuses for good is retried in small
rolled-back transactions to name the first refused customer and field, and reported with the
batches waiting behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from purchases import migrations
from purchases.contract import SERVING_COLUMNS, TOP_CUSTOMERS_COLUMNS, ServingTables
from purchases.errors import PermanentError, TransientError
from purchases.faults import fault_point
from purchases.serving import dialects
from purchases.serving.connection import configured_url, create_db_engine, masked_url
from purchases.serving.dialects import DialectCapabilities
from purchases.serving.errors import translate
from purchases.serving.staging import BATCH_COLUMNS, LoadRefused, StagingLoad

if TYPE_CHECKING:
    from purchases.commit_log import Commit
    from purchases.config import Settings
    from purchases.storage import Lake

log = logging.getLogger(__name__)

REFUSAL_CHUNK = 1000
"""Rows tried per rolled-back transaction while looking for the row a database refuses."""

RETRY_ATTEMPTS = 4
RETRY_WAIT_SECONDS = 0.25
"""Retries inside serving are short: they ride out a dropped connection or a deadlock; the
orchestrator's step retries (longer waits) cover an outage."""

VERSION_COLUMN = "batch_id"
"""The column an upsert compares: a row only takes values from a newer batch."""

T = TypeVar("T")


def upsert_statement(
    dialect: sa.Dialect, now: datetime, *, by_customer: bool = False,
    capabilities: DialectCapabilities | None = None,
) -> sa.Executable:
    """INSERT ... SELECT the staged rows of :batch_id into the summary, replacing a row only
    with values from a newer batch than the one it reflects; `by_customer` limits it to
    customer_id :first..:last (to find a row the database refuses). The statement's shape is
    the same everywhere; the dialect (`capabilities`, else the one registered for `dialect`)
    supplies its upsert form.

    Raises:
        PermanentError: no serving dialect is registered for `dialect`.
    """
    capabilities = capabilities or dialects.for_dialect(dialect)
    tables = capabilities.tables
    target, staging = tables.summary, tables.staging
    cols = [c.name for c in tables.written(target) if c.name != "updated_at"]
    source = sa.select(
        *(staging.c[c] for c in cols), sa.literal(now, sa.DateTime()).label("updated_at")
    ).where(staging.c.batch_id == sa.bindparam("batch_id"))
    if by_customer:
        source = source.where(
            staging.c.customer_id.between(sa.bindparam("first"), sa.bindparam("last")))
    order = capabilities.upsert_order(staging)
    if order:
        source = source.order_by(*order)
    return capabilities.upsert(target, source, [*cols, "updated_at"], version=VERSION_COLUMN,
                               dialect=dialect)


class ServingDatabase:
    """The serving tables of one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.capabilities: DialectCapabilities = dialects.for_url(engine.url)
        self.tables: ServingTables = self.capabilities.tables

    @cached_property
    def db_errors(self) -> tuple[type[BaseException], ...]:
        """Every exception type the database layer raises (SQLAlchemy's and the driver's own,
        which a raw cursor, as for COPY, raises unwrapped)."""
        return (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error)

    # --- schema

    def ensure_schema(self) -> None:
        """Migrate the database to the newest revision if it is not there yet."""
        head = migrations.head_revision()
        with self.engine.connect() as con:
            current = migrations.current_revision(con)
        if current == head:
            return
        self.check_known(current)
        migrations.upgrade(self.engine)

    def check_known(self, revision: str | None) -> None:
        """Raises PermanentError: the database is at a revision this version does not ship
        (a newer release migrated it)."""
        if revision is not None and not migrations.is_known(revision):
            raise PermanentError(
                f"database {masked_url(self.engine.url)} has schema revision {revision}, newer "
                f"than this version of purchases knows (head {migrations.head_revision()}): "
                "upgrade purchases"
            )

    def schema_revision(self) -> str | None:
        """The migration revision the database is at (None: never migrated)."""
        with self.engine.connect() as con:
            return migrations.current_revision(con)

    # --- reads

    def applied_batches(self) -> set[int]:
        """Batch ids in the ledger."""
        with self.engine.connect() as con:
            return set(con.scalars(sa.select(self.tables.ledger.c.batch_id)))

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger row, oldest batch first."""
        with self.engine.connect() as con:
            ledger = self.tables.ledger
            rows = con.execute(sa.select(ledger).order_by(ledger.c.batch_id))
            return [dict(r._mapping) for r in rows]

    def staged_rows(self) -> int:
        """Rows waiting in staging (0 after every applied batch)."""
        with self.engine.connect() as con:
            query = sa.select(sa.func.count()).select_from(self.tables.staging)
            return int(con.scalar(query) or 0)

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The business query of DESIGN §5 (ties broken by customer_id for a stable order)."""
        summary = self.tables.summary
        # Sorted by the indexed column the business query names; where an exact twin holds the
        # amount (integer cents) it breaks the ties the display column could round together.
        order = dict.fromkeys([
            summary.c.total_spent_aud, self.tables.exact(summary, "total_spent_aud")])
        query = (
            sa.select(*self._exact_columns(TOP_CUSTOMERS_COLUMNS))
            .order_by(*(c.desc() for c in order), summary.c.customer_id)
            .limit(n)
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def summary(self) -> list[dict[str, Any]]:
        """Every summary row, by customer_id (for checks and exports)."""
        query = sa.select(*self._exact_columns(SERVING_COLUMNS)).order_by(
            self.tables.summary.c.customer_id
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def _exact_columns(self, names: tuple[str, ...]) -> list[Any]:
        """Summary columns by name, money read from its exact column (a Decimal everywhere)."""
        summary = self.tables.summary
        return [self.tables.exact(summary, name).label(name) for name in names]

    # --- writes

    def load_staging(self, lake: Lake, commit: Commit) -> int:
        """Replace the staging rows of a batch with its gold change set; returns rows loaded.

        Streams the gold Parquet in chunks of STAGING_CHUNK rows, in one transaction, on the
        dialect's bulk path (PostgreSQL COPY, MySQL LOAD DATA LOCAL, SQLite multi-row INSERT).
        """
        from purchases.commit_log import gold_files, load_commits

        files = gold_files(commit)
        try:
            return self._retrying(lambda: self.capabilities.load_staging(
                self.engine, self._staging_load(lake, files, commit.batch_id)))
        except PermanentError as exc:
            if not self._refused_by_database(exc):
                raise
            applied = self.applied_batches()
            waiting = sum(1 for c in load_commits(lake) if c.batch_id > commit.batch_id
                          and c.batch_id not in applied and gold_files(c))
            culprit = self._refused_staging_row(self._staging_load(lake, files, commit.batch_id))
            raise self._refusal(exc, commit.batch_id, "loading staging", waiting, culprit) from exc

    def apply_batch(self, commit: Commit) -> int:
        """Upsert a staged batch into the summary, once; returns customers written.

        One transaction: claim the batch in the ledger, upsert, clear its staging rows. A
        connection lost on the way rolls all of it back and the retry redoes it; a batch
        already in the ledger (applied before, or committed just before the connection
        dropped) is a no-op.
        """
        try:
            return self._retrying(lambda: self._apply_batch(commit))
        except PermanentError as exc:
            if not self._refused_by_database(exc):
                raise
            culprit = self._refused_summary_row(commit.batch_id)
            waiting = self._staged_batches_after(commit.batch_id)
            raise self._refusal(exc, commit.batch_id, "upserting", waiting, culprit) from exc

    def _staging_load(self, lake: Lake, files: list[str], batch_id: int) -> StagingLoad:
        return StagingLoad(lake, files, batch_id, _utcnow(), self.tables)

    def _retrying(self, work: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=RETRY_WAIT_SECONDS, max=5),
            before_sleep=lambda state: log.warning(
                "retrying after transient error: %s", state.outcome.exception()
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return work()
                except self.db_errors as exc:
                    raise translate(exc, self.engine.url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply_batch(self, commit: Commit) -> int:
        batch_id = commit.batch_id
        now = _utcnow()
        staging_table, ledger_table = self.tables.staging, self.tables.ledger
        capabilities = self.capabilities
        try:
            with self.engine.begin() as con:
                if self._in_ledger(con, batch_id):
                    # A replayed load of an applied batch: its rows must not linger.
                    capabilities.clear_staging(con, staging_table, batch_id)
                    return 0
                staged = int(con.scalar(
                    sa.select(sa.func.count()).where(staging_table.c.batch_id == batch_id)
                ) or 0)
                if staged != commit.customers_changed:
                    raise PermanentError(
                        f"batch {batch_id}: staging holds {staged} rows but the batch changed "
                        f"{commit.customers_changed} customers; reload it (purchases run)"
                    )
                # The ledger row goes first: a concurrent applier of the same batch then waits
                # on its key and fails instead of upserting a second time.
                con.execute(ledger_table.insert().values(
                    batch_id=batch_id,
                    run_id=commit.run_id,
                    ingestion_date=date.fromisoformat(commit.ingestion_date[:10]),
                    customers=staged,
                    applied_at=now,
                ))
                upsert = upsert_statement(self.engine.dialect, now, capabilities=capabilities)
                with capabilities.bulk_upsert(con, self.tables, staged):
                    con.execute(upsert, {"batch_id": batch_id})
                fault_point("inside_upsert")
                capabilities.clear_staging(con, staging_table, batch_id)
        except IntegrityError:
            if batch_id in self.applied_batches():
                return 0
            raise
        fault_point("after_upsert")
        return staged

    def _in_ledger(self, con: sa.Connection, batch_id: int) -> bool:
        ledger = self.tables.ledger
        query = sa.select(ledger.c.batch_id).where(ledger.c.batch_id == batch_id)
        return con.scalar(query) is not None

    # --- a batch the database refuses

    def _refused_by_database(self, exc: PermanentError) -> bool:
        """Whether the database itself refused (a driver error, or a bulk load's warnings)."""
        return isinstance(exc.__cause__, self.db_errors) or isinstance(exc, LoadRefused)

    def _refusal(
        self, exc: PermanentError, batch_id: int, doing: str, waiting: int,
        culprit: tuple[int, str, BaseException] | None,
    ) -> PermanentError:
        """The one-line report of a batch that cannot be applied: which row and field the
        database refuses and why, what waits behind it, and the way out (README)."""
        where = f"database refused batch {batch_id} while {doing}"
        reason = str(exc)
        fix = "the cause in the database"
        if culprit is not None:
            customer_id, field, cause = culprit
            where += f", customer_id {customer_id}, field {field}"
            reason = str(translate(cause, self.engine.url))
            fix = f"the database's {field} column (type, constraint or trigger) to accept the value"
        waits = "batch waits" if waiting == 1 else "batches wait"
        return PermanentError(
            f"{where}: {reason}; {waiting} later committed {waits} behind it. Fix {fix}, then "
            "`purchases run` applies the batches in order (README: when the database refuses "
            "a batch)"
        )

    def _staged_batches_after(self, batch_id: int) -> int:
        staging = self.tables.staging
        query = sa.select(sa.func.count(sa.distinct(staging.c.batch_id))).where(
            staging.c.batch_id > batch_id)
        try:
            with self.engine.connect() as con:
                return int(con.scalar(query) or 0)
        except self.db_errors:
            return 0

    def _rejects(self, work: Callable[[sa.Connection], Any]) -> BaseException | None:
        """Run `work` in a transaction that is always rolled back; the database error it
        raised, if any."""
        with self.engine.connect() as con:
            tx = con.begin()
            try:
                work(con)
            except self.db_errors as exc:
                return exc
            finally:
                tx.rollback()
        return None

    def _first_refused(
        self, items: list[Any], work: Callable[[sa.Connection, list[Any]], Any]
    ) -> tuple[Any, BaseException] | None:
        """The first of `items` the database refuses when `work` writes it (halving a failing
        chunk until one item is left), with the error; None if it refuses none alone."""
        for start in range(0, len(items), REFUSAL_CHUNK):
            chunk = items[start:start + REFUSAL_CHUNK]
            if self._rejects(lambda con, chunk=chunk: work(con, chunk)) is None:
                continue
            while len(chunk) > 1:
                left = chunk[: len(chunk) // 2]
                failed = self._rejects(lambda con, left=left: work(con, left)) is not None
                chunk = left if failed else chunk[len(left):]
            error = self._rejects(lambda con, chunk=chunk: work(con, chunk))
            return (chunk[0], error) if error is not None else None
        return None

    def _refused_field(
        self, columns: list[sa.Column], fails: Callable[[str, Any], bool]
    ) -> str | None:
        """The first column whose value, replaced by a harmless one, makes the row pass (None:
        the refusal is not about one value, e.g. a dropped table)."""
        for column in columns:
            if not fails(column.name, _harmless(column)):
                return ServingTables.source(column)
        return None

    def _values_columns(self, table: sa.Table) -> list[sa.Column]:
        """The written columns that hold a customer's values (not the key, not the batch's)."""
        return [c for c in self.tables.written(table)
                if c.name not in ("customer_id", *BATCH_COLUMNS)]

    def _refused_staging_row(self, load: StagingLoad) -> tuple[int, str, BaseException] | None:
        """Re-insert the batch's gold rows in small rolled-back transactions (plain INSERT: the
        bulk paths name no row) to find the first one staging refuses, and its field."""
        staging = self.tables.staging

        def insert(con: sa.Connection, rows: list[dict[str, Any]]) -> None:
            con.execute(staging.insert(), rows)

        try:
            for rows in load.rows():  # STAGING_CHUNK at a time
                found = self._first_refused(rows, insert)
                if found is None:
                    continue
                row, error = found
                field = self._refused_field(
                    self._values_columns(staging),
                    lambda name, value, row=row: self._rejects(
                        lambda con: insert(con, [{**row, name: value}])) is not None,
                )
                return (row["customer_id"], field, error) if field else None
        except (*self.db_errors, PermanentError):  # the diagnosis is best effort
            return None
        return None

    def _refused_summary_row(self, batch_id: int) -> tuple[int, str, BaseException] | None:
        """Re-run the upsert for the batch's staged customers in small rolled-back transactions
        to find the first one the summary refuses, and its field."""
        staging = self.tables.staging
        upsert = upsert_statement(self.engine.dialect, _utcnow(), by_customer=True,
                                  capabilities=self.capabilities)
        ids_query = sa.select(staging.c.customer_id).where(
            staging.c.batch_id == batch_id).order_by(staging.c.customer_id)

        def apply(con: sa.Connection, ids: list[int]) -> None:
            con.execute(upsert, {"batch_id": batch_id, "first": ids[0], "last": ids[-1]})

        try:
            with self.engine.connect() as con:
                ids = list(con.scalars(ids_query))
            found = self._first_refused(ids, apply)
            if found is None:
                return None
            customer_id, error = found
            row = (staging.c.batch_id == batch_id) & (staging.c.customer_id == customer_id)

            def fails(name: str, value: Any) -> bool:
                def work(con: sa.Connection) -> None:
                    con.execute(staging.update().where(row).values({name: value}))
                    apply(con, [customer_id])
                return self._rejects(work) is not None

            field = self._refused_field(self._values_columns(staging), fails)
        except (*self.db_errors, PermanentError):  # the diagnosis is best effort
            return None
        return (customer_id, field, error) if field else None


def _harmless(column: sa.Column) -> Any:
    """A value any sane constraint accepts, to tell which field a refused row fails on."""
    if column.nullable:
        return None
    python_type = column.type.python_type
    if python_type is Decimal:
        return Decimal("0.00")
    if python_type in (date, datetime):
        return python_type(2000, 1, 1)
    return python_type()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- entry points --------------------------------------------------------------------------------


@contextmanager
def _opened(settings: Settings) -> Iterator[ServingDatabase]:
    """The configured database, driver errors translated, its engine disposed after."""
    engine = create_db_engine(settings)
    db = ServingDatabase(engine)
    try:
        yield db
    except db.db_errors as exc:
        raise translate(exc, engine.url) from exc
    finally:
        engine.dispose()


@contextmanager
def connect(settings: Settings) -> Iterator[ServingDatabase]:
    """Open the serving database, migrate its schema if needed, and translate driver errors."""
    with _opened(settings) as db:
        db.ensure_schema()
        yield db


def upgrade_schema(
    settings: Settings, revision: str = "head"
) -> tuple[str, str | None, str | None]:
    """Apply migrations up to `revision` (never back); returns (masked URL, revision
    before, revision now).

    Raises:
        PermanentError: the database is at a revision this version does not ship.
    """
    with _opened(settings) as db:
        before = db.schema_revision()
        db.check_known(before)
        return masked_url(db.engine.url), before, migrations.upgrade(db.engine, revision)


def current_schema_revision(settings: Settings) -> str | None:
    """The revision the configured database is at (None: never migrated); changes nothing.

    Raises:
        PermanentError: it is at a revision this version does not ship.
    """
    with _opened(settings) as db:
        current = db.schema_revision()
        db.check_known(current)
        return current


def schema_status(settings: Settings) -> dict[str, Any]:
    """Where the database's schema is against the shipped head, without changing anything."""
    with _opened(settings) as db:
        current = db.schema_revision()
        head = migrations.head_revision()
        status = {
            "database": masked_url(db.engine.url),
            "dialect": db.capabilities.describe(db.engine.dialect),
            "revision": current or "none",
            "head": head,
            "up_to_date": current == head,
        }
        if current is not None:
            ledger = db.ledger()
            status["batches_applied"] = len(ledger)
            status["latest_batch"] = ledger[-1]["batch_id"] if ledger else None
        return status


def upgrade_sql(settings: Settings, revision: str = "head", start: str | None = None) -> str:
    """The migration DDL from revision `start` (None: an empty database) for the configured
    database's dialect, without connecting."""
    # Not prepared for connecting: that makes an embedded database's folder.
    return migrations.upgrade_sql(configured_url(settings), revision, start)
