"""A batch's gold change set on its way into the staging table: what to load and how to read it.

The dialects' bulk loads (`dialects/*`) take a `StagingLoad` and move its rows in their own way;
everything they need to know about the batch is here. pyarrow is imported only when the gold
Parquet is read, so the upsert alone (the AWS Lambda) runs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from purchases.contract import ServingTables
from purchases.errors import PermanentError

if TYPE_CHECKING:
    import pyarrow as pa

    from purchases.storage import Lake

STAGING_CHUNK = 10_000
"""Gold rows read, converted and sent per round trip: bounds memory, whatever the batch size."""

BATCH_COLUMNS = ("batch_id", "load_date")
"""Staging columns the load fills itself (the same value on every row of a batch)."""


class LoadRefused(PermanentError):
    """A bulk load passed rows with warnings (a value the column cannot hold)."""


@dataclass(frozen=True)
class StagingLoad:
    """One batch to load into staging: its gold files and the staging columns to fill."""

    lake: Lake
    files: list[str]
    batch_id: int
    load_date: datetime
    tables: ServingTables

    @property
    def columns(self) -> list[sa.Column]:
        """The staging columns written, in table order (the computed ones left out)."""
        return self.tables.written(self.tables.staging)

    @property
    def constants(self) -> dict[str, Any]:
        """Values of the BATCH_COLUMNS, by column name."""
        return {"batch_id": self.batch_id, "load_date": self.load_date}

    @property
    def gold_columns(self) -> list[str]:
        """The gold columns the other staging columns take their values from, in their order."""
        return [self.tables.source(c) for c in self.columns if c.name not in BATCH_COLUMNS]

    def chunks(self, *, with_constants: bool, time_unit: str = "us") -> Iterator[pa.Table]:
        """The gold rows, STAGING_CHUNK at a time, as Arrow tables of `gold_columns` (plus
        batch_id and load_date, with `time_unit` precision, when `with_constants`): so with
        constants their columns line up with `columns`.

        Raises:
            PermanentError: a gold file whose total_spent_aud is not a decimal.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        for rel in self.files:
            with self.lake.open(rel) as fh:
                pf = pq.ParquetFile(fh)
                money = pf.schema_arrow.field("total_spent_aud").type
                if not pa.types.is_decimal(money):
                    # A float here would already have lost cents; refuse rather than load it.
                    raise PermanentError(f"{rel}: total_spent_aud is {money}, expected a decimal")
                for batch in pf.iter_batches(batch_size=STAGING_CHUNK, columns=self.gold_columns):
                    n = batch.num_rows
                    if not n:
                        continue
                    table = pa.Table.from_batches([batch])
                    if with_constants:
                        table = table.append_column(
                            "batch_id", pa.repeat(pa.scalar(self.batch_id, pa.int64()), n)
                        ).append_column(
                            "load_date",
                            pa.repeat(pa.scalar(self.load_date, pa.timestamp(time_unit)), n),
                        )
                    yield table

    def rows(self) -> Iterator[list[dict[str, Any]]]:
        """The rows as SQLAlchemy parameter dicts keyed by staging column, a chunk at a time
        (the slow, plain path: to find a row the database refuses)."""
        constants = self.constants
        for table in self.chunks(with_constants=False):
            yield [{c.name: constants[c.name] if c.name in constants
                    else r[self.tables.source(c)] for c in self.columns}
                   for r in table.to_pylist()]


def csv_bytes(table: pa.Table, null: str) -> bytes:
    """RFC 4180 CSV, every non-NULL value quoted, NULL as `null` unquoted.

    Arrow renders decimals and dates exactly ("1234.50", "2024-01-15"): money never passes
    through a float, nor through a Python object per value.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    buf = pa.BufferOutputStream()
    pa_csv.write_csv(table, buf, pa_csv.WriteOptions(
        include_header=False, quoting_style="all_valid", null_string=null))
    return buf.getvalue().to_pybytes()


def processed(processor: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    """`values` through a SQLAlchemy bind processor, each distinct value converted once."""
    if processor is None:
        return values
    done: dict[Any, Any] = {}  # dates repeat a lot within a chunk
    return [done[v] if v in done else done.setdefault(v, processor(v)) for v in values]
