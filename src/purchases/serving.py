"""Gold -> serving database: staging load, replace-upsert and batch ledger (DESIGN §5).

One SQLAlchemy code path for every backend; only the upsert statement is dialect-specific.
A batch is applied in one transaction together with its ledger row, so applying it twice is
a no-op, and a row only takes values from a batch newer than the one it already reflects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from purchases.contract import (
    SERVING_COLUMNS,
    TOP_CUSTOMERS_COLUMNS,
    ledger_table,
    metadata,
    staging_table,
    summary_table,
)
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.faults import fault_point

if TYPE_CHECKING:
    from purchases.catalog import Commit
    from purchases.config import Settings
    from purchases.storage import Lake

STAGING_CHUNK = 5_000


def masked_url(url: str | sa.URL) -> str:
    """The URL as it may be shown: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown not at all rather than leaked
        return "<database URL>"


def database_url(settings: Settings) -> sa.URL:
    """The configured URL, with the password from PURCHASES_DATABASE_PASSWORD_FILE if given."""
    try:
        url = make_url(settings.db_url)
    except Exception:
        raise ConfigError("PURCHASES_DATABASE_URL is not a valid SQLAlchemy URL") from None
    if url.password is None and settings.database_password_file:
        try:
            secret = Path(settings.database_password_file).read_text().strip()
        except OSError:
            raise ConfigError(
                f"PURCHASES_DATABASE_PASSWORD_FILE {settings.database_password_file}: unreadable"
            ) from None
        url = url.set(password=secret)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def create_db_engine(settings: Settings) -> sa.Engine:
    url = database_url(settings)
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"no driver for {masked_url(url)}: install it (pip install 'purchases[{exc.name}]')"
        ) from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_con: Any, _: Any) -> None:
            # Readers (purchases top) must not fail while a run writes; wait instead.
            dbapi_con.execute("PRAGMA busy_timeout = 30000")
            dbapi_con.execute("PRAGMA journal_mode = WAL")

    return engine


def translate(exc: SQLAlchemyError, url: str | sa.URL) -> Exception:
    """Driver errors become the product's, with the password masked."""
    where = masked_url(url)
    detail = str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return TransientError(f"database {where}: {detail}")
    return PermanentError(f"database {where}: {detail}")


class ServingDatabase:
    """The serving tables of one database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        metadata.create_all(self.engine, checkfirst=True)

    def applied_batches(self) -> set[int]:
        with self.engine.connect() as con:
            return set(con.scalars(sa.select(ledger_table.c.batch_id)))

    def load_staging(self, lake: Lake, commit: Commit) -> int:
        """Replace the staging rows of a batch with its gold change set; returns rows loaded."""
        from purchases.catalog import gold_files

        now = datetime.now(UTC).replace(tzinfo=None)
        loaded = 0
        with self.engine.begin() as con:
            con.execute(staging_table.delete().where(staging_table.c.batch_id == commit.batch_id))
            for rel in gold_files(commit):
                with lake.open(rel) as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(batch_size=STAGING_CHUNK):
                        rows = batch.to_pylist()
                        for r in rows:
                            r["load_date"] = now
                        if rows:
                            con.execute(staging_table.insert(), rows)
                            loaded += len(rows)
        return loaded

    def apply_batch(self, commit: Commit) -> int:
        """Upsert a staged batch into the summary, once; returns customers written."""
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.engine.begin() as con:
            already = con.scalar(
                sa.select(ledger_table.c.batch_id).where(
                    ledger_table.c.batch_id == commit.batch_id
                )
            )
            if already is not None:
                return 0
            staged = con.scalar(
                sa.select(sa.func.count()).where(staging_table.c.batch_id == commit.batch_id)
            )
            con.execute(self._upsert_statement(commit.batch_id, now))
            fault_point("inside_upsert")
            con.execute(
                ledger_table.insert().values(
                    batch_id=commit.batch_id,
                    run_id=commit.run_id,
                    ingestion_date=datetime.fromisoformat(commit.ingestion_date).date(),
                    customers=int(staged or 0),
                    applied_at=now,
                )
            )
            con.execute(staging_table.delete().where(staging_table.c.batch_id == commit.batch_id))
        fault_point("after_upsert")
        return int(staged or 0)

    def _upsert_statement(self, batch_id: int, now: datetime) -> Any:
        cols = [*SERVING_COLUMNS, "batch_id"]
        source = sa.select(
            *(staging_table.c[c] for c in cols), sa.literal(now, sa.DateTime()).label("updated_at")
        ).where(staging_table.c.batch_id == batch_id)
        target_cols = [*cols, "updated_at"]
        updated = [c for c in target_cols if c != "customer_id"]
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(summary_table).from_select(target_cols, source)
            return stmt.on_conflict_do_update(
                index_elements=[summary_table.c.customer_id],
                set_={c: stmt.excluded[c] for c in updated},
                # Replace semantics, but never with values older than the row already has.
                where=stmt.excluded.batch_id > summary_table.c.batch_id,
            )
        raise PermanentError(f"serving database dialect {self.dialect!r} is not supported yet")

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The business query of DESIGN §5 (ties broken by customer_id for a stable order)."""
        query = (
            sa.select(*(summary_table.c[c] for c in TOP_CUSTOMERS_COLUMNS))
            .order_by(summary_table.c.total_spent_aud.desc(), summary_table.c.customer_id)
            .limit(n)
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]

    def summary(self) -> list[dict[str, Any]]:
        """Every summary row, by customer_id (for checks and exports)."""
        query = sa.select(*(summary_table.c[c] for c in SERVING_COLUMNS)).order_by(
            summary_table.c.customer_id
        )
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(query)]


@contextmanager
def connect(settings: Settings) -> Iterator[ServingDatabase]:
    """Open the serving database, create its tables if needed, and translate driver errors."""
    engine = create_db_engine(settings)
    try:
        db = ServingDatabase(engine)
        db.ensure_schema()
        yield db
    except SQLAlchemyError as exc:
        raise translate(exc, engine.url) from exc
    finally:
        engine.dispose()
