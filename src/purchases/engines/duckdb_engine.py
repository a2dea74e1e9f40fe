"""DuckDB engine: in-process, streaming CSV -> Parquet, memory-bounded (spills to disk)."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any

import duckdb

from purchases.contract import INPUT_COLUMNS, Reason
from purchases.errors import PermanentError, TransientError
from purchases.storage import lake_write_error

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
            "autoload_known_extensions": False,
            "preserve_insertion_order": False,
            "temp_directory": temp_directory or tempfile.gettempdir(),
        }
        if threads:
            config["threads"] = threads
        self.lake = lake
        self.temp_directory = config["temp_directory"]
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
            "ingestion_date DATE, line_number BIGINT, raw_line VARCHAR, reason VARCHAR)"
        )
        for i, f in enumerate(files):
            self._load_csv(lake, f, i)
            if f.oversized:  # records bronze.inspect cut out of the file read above
                self.con.executemany(
                    "INSERT INTO malformed_rows VALUES (?, ?, ?, ?, ?)",
                    [(f.path, f.ingestion_date, r.line_number, r.prefix,
                      Reason.RECORD_TOO_LARGE.value) for r in f.oversized],
                )

    def _load_csv(self, lake: Lake, f: BronzeFile, i: int) -> None:
        columns = "{" + ", ".join(f"'c{k}': 'VARCHAR'" for k in range(f.column_count)) + "}"
        picked = ", ".join(f"c{f.positions[c]} AS {c}" for c in INPUT_COLUMNS)
        options = (
            "auto_detect=false, header=true, delim=',', quote='\"', escape='\"', "
            f"skip={f.skip_lines}, columns={columns}, strict_mode=true, "
            # Longer records were cut out by bronze.inspect (the same count: line break
            # excluded); DuckDB's default, 2 MB, would reject records the setting allows.
            f"max_line_size={f.max_record_bytes}, "
            f"store_rejects=true, rejects_table='rej_{i}', rejects_scan='rejscan_{i}', "
            f"compression='{'gzip' if f.compressed else 'none'}'"
        )
        self._run(
            # Bandit B608: paths quoted by _lit, the rest internal names/ints
            f"INSERT INTO raw_records SELECT {_lit(f.path)}, DATE '{f.ingestion_date}', {picked} "
            f"FROM read_csv({_lit(lake.url(f.read_path))}, {options})"  # nosec B608
        )
        # One error row per failing column: a record counts once, by its first line.
        self._run(
            # Bandit B608: paths quoted by _lit, the rest internal names/ints
            f"INSERT INTO malformed_rows SELECT {_lit(f.path)}, DATE '{f.ingestion_date}', line, "
            "regexp_replace(first(csv_line ORDER BY column_idx), '^[\\r\\n]+|[\\r\\n]+$', '', 'g')"
            f", '{Reason.MALFORMED_ROW}' FROM rej_{i} GROUP BY line"  # nosec B608
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
                # Bandit B608: internal table name; values are bound
                f"INSERT INTO {name} VALUES ({marks})",  # nosec B608
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
            # Bandit B608: paths quoted by _lit, the rest internal names/ints
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} "
            f"FROM read_parquet({listing}, hive_partitioning=false)"  # nosec B608
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
            raise _translate(exc, self.lake, self.temp_directory) from exc

    def _run(self, sql: str) -> None:
        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            raise _translate(exc, self.lake, self.temp_directory) from exc

    def close(self) -> None:
        self.con.close()


# DuckDB names the file in its I/O errors: `... file "PATH": <strerror>`, and for an
# asynchronous write it adds a JSON object with "errno" (`Async write failed ...: {...}`).
_FILE_ERROR = re.compile(r'file "(?P<path>(?:[^"\\]|\\.)*)": (?P<reason>[^"{}]+?)\s*$')
_JSON_ERROR = re.compile(r"\{.*\}")
# Errors DuckDB reports only by their text: errno by strerror (the C library's wording).
_BY_STRERROR = {
    os.strerror(code): code
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM)
}
_MAX_MESSAGE = 300


def _os_error(message: str) -> OSError | None:
    """The OSError behind a DuckDB I/O error message (errno and file), or None."""
    code: int | None = None
    text = message
    found = _JSON_ERROR.search(message)
    if found:
        try:
            detail = json.loads(found.group(0))
        except ValueError:
            detail = None
        if isinstance(detail, dict):
            text = str(detail.get("exception_message", message))
            if str(detail.get("errno", "")).isdigit():
                code = int(detail["errno"])
    named = _FILE_ERROR.search(text)
    if named is None:
        return None
    path = named.group("path").replace('\\"', '"')
    reason = named.group("reason").strip()
    if code is None:
        code = _BY_STRERROR.get(reason)
    if code is None:
        return None
    return OSError(code, os.strerror(code), path)


def _write_error(
    exc: duckdb.Error, lake: Lake | None, temp_directory: str | None
) -> Exception | None:
    """A permanent write failure (disk full, file too large, read-only, forbidden) as the
    lake's one-line error, or None when the message shows none: retrying cannot help those,
    so they must not be retried as I/O hiccups."""
    found = _os_error(str(exc).splitlines()[0])
    if found is None:
        return None
    path = str(found.filename)
    if lake is not None and lake.is_local:
        root = os.path.abspath(lake.root)
        full = os.path.abspath(path)
        if os.path.commonpath([root, full]) == root:
            return lake_write_error(found, lake.uri, "write", os.path.relpath(full, root))
    # A file outside the lake: DuckDB's spill files (temp_directory, from TMPDIR) mostly.
    spill = bool(temp_directory) and os.path.abspath(path).startswith(
        os.path.abspath(temp_directory or ""))
    where = temp_directory if spill else os.path.dirname(path) or "."
    translated = lake_write_error(found, where, "write", path)
    if translated is None:
        return None
    what = f"DuckDB's temporary files in {where} (TMPDIR)" if spill else where
    return type(translated)(str(translated).replace(f"lake {where}", what, 1))


def _translate(
    exc: duckdb.Error, lake: Lake | None = None, temp_directory: str | None = None
) -> Exception:
    """Driver errors become the product's: I/O hiccups are transient, a write that cannot
    succeed (no space, file too large, read-only, no permission) and the rest permanent."""
    message = str(exc).splitlines()[0]
    if len(message) > _MAX_MESSAGE:  # a CSV error can quote a huge line
        message = message[:_MAX_MESSAGE] + "..."
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        translated = _write_error(exc, lake, temp_directory)
        if translated is not None:
            return translated
        return TransientError(f"DuckDB I/O error: {message}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return PermanentError(f"DuckDB ran out of memory ({message}); raise PURCHASES_MEMORY_LIMIT")
    return PermanentError(f"DuckDB error: {message}")


def create(settings: Settings, lake: Lake | None = None, **options: Any) -> DuckDBEngine:
    return DuckDBEngine(lake, memory_limit=settings.memory_limit, **options)
