"""DuckDB engine: in-process, streaming CSV -> Parquet, memory-bounded (spills to disk)."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

import duckdb

from purchases.contract import INPUT_COLUMNS
from purchases.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from purchases.bronze import BronzeFile
    from purchases.config import Settings
    from purchases.storage import Lake


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DuckDBEngine:
    """Runs the shared SQL as-is: it is written in DuckDB's dialect."""

    name = "duckdb"

    def __init__(
        self,
        lake: Lake | None = None,
        *,
        memory_limit: str = "1GB",
        threads: int | None = None,
        temp_directory: str | None = None,
    ) -> None:
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            # Never fetch an extension at run time: parquet/json ship inside the wheel.
            "autoinstall_known_extensions": False,
            "preserve_insertion_order": False,
            "temp_directory": temp_directory or tempfile.gettempdir(),
        }
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(":memory:", config=config)
        if lake is not None and not lake.is_local:
            # Object stores go through the lake's fsspec file system: no httpfs download.
            self.con.register_filesystem(lake.fs)

    # --- reading -------------------------------------------------------------------------

    def register_bronze(self, lake: Lake, files: list[BronzeFile]) -> None:
        cols = ", ".join(f"{c} VARCHAR" for c in INPUT_COLUMNS)
        self._run(
            f"CREATE OR REPLACE TEMP TABLE raw_records (source_file VARCHAR, "
            f"ingestion_date DATE, {cols})"
        )
        # rowid of a temp table is a free, unique row number: the batch's row_id.
        self._run(
            "CREATE OR REPLACE TEMP VIEW raw_rows AS SELECT rowid AS row_id, * FROM raw_records"
        )
        self._run(
            "CREATE OR REPLACE TEMP TABLE malformed_rows (source_file VARCHAR, "
            "ingestion_date DATE, line_number BIGINT, raw_line VARCHAR)"
        )
        for i, f in enumerate(files):
            self._load_csv(lake, f, i)

    def _load_csv(self, lake: Lake, f: BronzeFile, i: int) -> None:
        columns = "{" + ", ".join(f"'c{k}': 'VARCHAR'" for k in range(f.column_count)) + "}"
        picked = ", ".join(f"c{f.positions[c]} AS {c}" for c in INPUT_COLUMNS)
        options = (
            "auto_detect=false, header=true, delim=',', quote='\"', escape='\"', "
            f"skip={f.skip_lines}, columns={columns}, strict_mode=true, "
            f"store_rejects=true, rejects_table='rej_{i}', rejects_scan='rejscan_{i}', "
            f"compression='{'gzip' if f.compressed else 'none'}'"
        )
        self._run(
            f"INSERT INTO raw_records SELECT {_lit(f.path)}, DATE '{f.ingestion_date}', {picked} "
            f"FROM read_csv({_lit(lake.url(f.path))}, {options})"
        )
        # One error row per failing column: a record counts once, by its first line.
        self._run(
            f"INSERT INTO malformed_rows SELECT {_lit(f.path)}, DATE '{f.ingestion_date}', line, "
            "regexp_replace(first(csv_line ORDER BY column_idx), '^[\\r\\n]+|[\\r\\n]+$', '', 'g') "
            f"FROM rej_{i} GROUP BY line"
        )
        self._run(f"DROP TABLE rej_{i}; DROP TABLE rejscan_{i}")

    def register_rows(
        self, name: str, columns: dict[str, str], rows: list[tuple[Any, ...]]
    ) -> None:
        spec = ", ".join(f"{c} {t}" for c, t in columns.items())
        self._run(f"CREATE OR REPLACE TEMP TABLE {name} ({spec})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            # Values are bound; decimals arrive as strings and are cast by the column type.
            self.con.executemany(
                f"INSERT INTO {name} VALUES ({marks})",
                [tuple(str(v) if v is not None else None for v in r) for r in rows],
            )

    def register_parquet(self, name: str, urls: list[str], columns: dict[str, str]) -> None:
        if not urls:
            cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
            self._run(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} WHERE false")
            return
        listing = "[" + ", ".join(_lit(u) for u in urls) + "]"
        cols = ", ".join(columns)
        self._run(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} "
            f"FROM read_parquet({listing}, hive_partitioning=false)"
        )

    # --- running -------------------------------------------------------------------------

    def create_table(self, name: str, sql: str) -> None:
        self._run(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def create_view(self, name: str, sql: str) -> None:
        self._run(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def write_parquet(self, sql: str, url: str, *, partition_by: str | None = None) -> None:
        opts = "FORMAT parquet, COMPRESSION zstd"
        if partition_by:
            opts += (
                f", PARTITION_BY ({partition_by}), FILENAME_PATTERN 'part-{{i}}', "
                "OVERWRITE_OR_IGNORE, WRITE_PARTITION_COLUMNS true"
            )
            self._run(f"COPY ({sql}) TO {_lit(url)} ({opts})")
        else:
            self._run(f"COPY ({sql}) TO {_lit(url.rstrip('/') + '/part-0.parquet')} ({opts})")

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self.con.execute(sql).fetchall()
        except duckdb.Error as exc:
            raise _translate(exc) from exc

    def _run(self, sql: str) -> None:
        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        self.con.close()


def _translate(exc: duckdb.Error) -> Exception:
    """Driver errors become the product's: I/O hiccups are transient, the rest permanent."""
    message = str(exc).splitlines()[0]
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        return TransientError(f"DuckDB I/O error: {message}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return PermanentError(f"DuckDB ran out of memory ({message}); raise PURCHASES_MEMORY_LIMIT")
    return PermanentError(f"DuckDB error: {message}")


def create(settings: Settings, lake: Lake | None = None, **options: Any) -> DuckDBEngine:
    return DuckDBEngine(lake, memory_limit=settings.memory_limit, **options)


def lake_query(lake: Lake, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run SQL over the lake's layers as views (the embedded stand-in for Athena).

    Views: bronze (raw CSV text), silver, quarantine, gold (every published change set, with
    year/month/day) and customers (current per-customer state).
    """
    from purchases import catalog
    from purchases.contract import (
        CUSTOMER_STATE_COLUMNS,
        GOLD_COLUMNS,
        QUARANTINE_COLUMNS,
        SILVER_COLUMNS,
    )

    engine = DuckDBEngine(lake, memory_limit="1GB")
    try:

        def files(prefix: str) -> list[str]:
            return [
                lake.url(p)
                for p in lake.list_files(prefix)
                if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".")
            ]

        engine.register_parquet("silver", files("silver"), SILVER_COLUMNS)
        engine.register_parquet("quarantine", files("quarantine"), QUARANTINE_COLUMNS)
        engine.register_parquet(
            "customers",
            [lake.url(p) for p in catalog.customer_state_files(catalog.load_commits(lake))],
            CUSTOMER_STATE_COLUMNS,
        )
        gold = files("gold")
        if gold:
            listing = "[" + ", ".join(_lit(u) for u in gold) + "]"
            engine.create_view(
                "gold", f"SELECT * FROM read_parquet({listing}, hive_partitioning=true)"
            )
        else:
            engine.register_parquet("gold", [], GOLD_COLUMNS)
        bronze = [lake.url(o.path) for o in lake.list_bronze()]
        if bronze:
            listing = "[" + ", ".join(_lit(u) for u in bronze) + "]"
            engine.create_view(
                "bronze",
                f"SELECT * FROM read_csv({listing}, all_varchar=true, "
                "union_by_name=true, ignore_errors=true, "
                "filename=true, null_padding=true)",
            )
        else:
            engine.create_view("bronze", "SELECT CAST(NULL AS VARCHAR) AS filename WHERE false")
        try:
            cursor = engine.con.execute(sql, params or [])
        except duckdb.Error as exc:
            raise _translate(exc) from exc
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        engine.close()
