"""Engines behind one small interface: they read and write; the SQL they run is shared."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from purchases.bronze import BronzeFile
    from purchases.config import Settings
    from purchases.storage import Lake


class Engine(Protocol):
    """What a processing engine must do. SQL handed to it is in DuckDB's dialect."""

    name: str

    def scan_bronze(self, lake: Lake, files: list[BronzeFile], name: str, sql: str) -> None:
        """The single pass over a batch's CSV files: store the rows of `sql` as `name`.

        `sql` reads the relation `records`: row_id, file_no (the file's position in
        `files`), ingestion_date and the input columns as text, picked by each file's header
        positions, one row per record that parsed; it must carry row_id through. The stored
        relation's row_id is unique in the batch, and lower for an earlier record of the same
        file (the engine may number the rows as it stores them). Each file is parsed once,
        here: every later query reads the stored rows.

        Records are parsed from `BronzeFile.read_path` (the bronze file, or a copy without its
        over-long records), never from `path`, which names the rows' source_file.

        Also exposes `malformed_rows`: source_file, ingestion_date, line_number (NULL where
        the parser cannot tell), raw_line and reason: `malformed_row` for each record the CSV
        parser rejected, `record_too_large` for each of the files' `oversized` records (line
        number and text prefix as bronze found them).
        """

    def register_bronze(self, lake: Lake, files: list[BronzeFile]) -> None:
        """The files' records as parsed, for inspection: `raw_rows` (row_id, source_file,
        ingestion_date and the input columns as text) and `malformed_rows` (as scan_bronze)."""

    def register_rows(
        self, name: str, columns: dict[str, str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Expose a small in-memory table (FX rates) under `name`."""

    def register_parquet(self, name: str, urls: list[str], columns: dict[str, str]) -> None:
        """Expose Parquet files under `name`; an empty list gives an empty table of `columns`."""

    def create_table(self, name: str, sql: str) -> None:
        """Materialise a query once, for several consumers."""

    def create_view(self, name: str, sql: str) -> None:
        """Name a query without running it."""

    def write_parquet(self, sql: str, url: str, *, partition_by: str | None = None) -> None:
        """Write a query's rows as Parquet files under the folder `url`.

        With partition_by, files go under `url/<col>=<value>/` and still hold the column
        itself, so a file read on its own is complete (readers never rely on folder names).
        """

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a query with a small result and return its rows."""

    def close(self) -> None: ...


def open_engine(settings: Settings, lake: Lake | None = None, **options: Any) -> Engine:
    """The engine named in settings; heavy drivers are imported only here, lazily."""
    module = import_module(f"purchases.engines.{settings.engine}_engine")
    return module.create(settings, lake, **options)


__all__ = ["Engine", "open_engine"]
