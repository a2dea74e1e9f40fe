"""DuckDB engine: in-process, streaming CSV -> Parquet, memory-bounded (spills to disk)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


_GLOB_ESCAPES = str.maketrans({"[": "[[]", "*": "[*]", "?": "[?]"})


def glob_literal(url: str) -> str:
    """A file's URL as a pattern DuckDB's readers expand to that one file and no other.

    read_csv and read_parquet expand globs in every path they are given: `sales[1].csv` would
    read `sales1.csv` instead, and `s*.csv` every file it matches. A one-character class is
    DuckDB's only escape (a backslash is not one).
    """
    return url.translate(_GLOB_ESCAPES)


def readable_by_name(url: str) -> bool:
    """Whether read_csv can be given this file's URL: with a * ? or [ anywhere in it, DuckDB
    globs the path and takes a backslash for a separator, so a name holding one is never
    found (bronze.inspect gives a run a copy of such a file to read)."""
    return "\\" not in url or not set(url) & set("*?[")


def _path_lit(url: str) -> str:
    return _lit(glob_literal(url))


# DuckDB gets at least this share of PURCHASES_MEMORY_LIMIT, whatever the process holds
# already: less would only make it spill everything.
_MIN_ENGINE_SHARE = 0.5
# What the process holds beside DuckDB's buffer pool while DuckDB works (the CSV reader's
# and Parquet writer's own buffers, allocator slack): measured on the 5M-row bench.
_OUTSIDE_POOL = 160 * 2**20


def _resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there to tell)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def engine_memory_limit(total: int) -> int:
    """DuckDB's own memory_limit (bytes) that keeps the whole process within `limit`.

    PURCHASES_MEMORY_LIMIT bounds the process, not just DuckDB's buffer pool: what Python
    and the libraries hold already, and what DuckDB allocates outside its pool, are taken
    off, and DuckDB spills the rest to disk."""
    available = total - _resident_bytes() - _OUTSIDE_POOL
    return max(int(total * _MIN_ENGINE_SHARE), available)


# zstd at level 1 and V2 data pages (delta encodings): about a third less CPU than zstd's
# default level with V1 pages, for files no larger. Every reader the lake has (DuckDB,
# Spark 3.5, pyarrow, Athena) reads them.
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARQUET_VERSION V2"


# Partition values written as a plain folder name (dates, numbers); others go through
# DuckDB's own partitioned write, which escapes them.
_SAFE_FOLDER = re.compile(r"^[0-9A-Za-z_.:-]+$")


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
        spill_setting: str = "TMPDIR",
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
        self.spill_setting = spill_setting  # what the user changes to move the spill files
        self._owned_temp: str | None = None
        try:
            self.con = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            raise _translate(exc, lake, self.temp_directory, spill_setting) from exc
        if lake is not None and not lake.is_local:
            # Object stores go through the lake's fsspec file system: no httpfs download.
            self.con.register_filesystem(lake.fs)

    # --- reading -------------------------------------------------------------------------

    def scan_bronze(self, lake: Lake, files: list[BronzeFile], name: str, sql: str) -> None:
        """Parse the files once, storing the rows of `sql` (over `records`) as `name`."""
        self._run(f"CREATE OR REPLACE TEMP VIEW records AS {self._records_sql(lake, files)}")
        # row_id: the stored table's rowid (free, unique). Stored in the order the files
        # are read, so the first copy of a duplicate in arrival order has the lowest.
        self._run("SET preserve_insertion_order = true")
        try:
            self._run(
                f"CREATE OR REPLACE TEMP TABLE {name}__stored AS "
                f"SELECT * EXCLUDE (row_id) FROM ({sql}) q"  # nosec B608  # internal names
            )
        finally:
            self._run("SET preserve_insertion_order = false")
        self._run(
            f"CREATE OR REPLACE TEMP VIEW {name} AS "
            f"SELECT rowid AS row_id, * FROM {name}__stored"  # nosec B608  # internal names
        )
        self._malformed_rows(files)

    def register_bronze(self, lake: Lake, files: list[BronzeFile]) -> None:
        self._run(
            "CREATE OR REPLACE TEMP TABLE bronze_files (file_no INTEGER, source_file VARCHAR)")
        if files:
            self._run_many("INSERT INTO bronze_files VALUES (?, ?)",
                                 [(i, f.path) for i, f in enumerate(files)])
        self.scan_bronze(lake, files, "bronze_records", "SELECT * FROM records")
        picked = ", ".join(f"r.{c}" for c in INPUT_COLUMNS)
        self._run(
            "CREATE OR REPLACE TEMP VIEW raw_rows AS SELECT r.row_id, f.source_file, "
            f"r.ingestion_date, {picked} FROM bronze_records r "  # nosec B608  # internal names
            "JOIN bronze_files f ON f.file_no = r.file_no"
        )

    def _records_sql(self, lake: Lake, files: list[BronzeFile]) -> str:
        cols = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in INPUT_COLUMNS)
        if not files:
            return ("SELECT CAST(NULL AS BIGINT) AS row_id, CAST(NULL AS INTEGER) AS file_no, "
                    f"CAST(NULL AS DATE) AS ingestion_date, {cols} WHERE false")
        return " UNION ALL ".join(self._csv_sql(lake, f, i) for i, f in enumerate(files))

    @staticmethod
    def _csv_sql(lake: Lake, f: BronzeFile, i: int) -> str:
        # Every column as text, named by position: one parse, no type sniffing.
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
        # Bandit B608: paths quoted by _lit, the rest internal names/ints
        return (
            f"SELECT CAST(NULL AS BIGINT) AS row_id, CAST({i} AS INTEGER) AS file_no, "
            f"DATE '{f.ingestion_date}' AS ingestion_date, {picked} "
            f"FROM read_csv({_path_lit(lake.url(f.read_path))}, {options})"  # nosec B608
        )

    def _malformed_rows(self, files: list[BronzeFile]) -> None:
        """The records the scan rejected (its rejects tables) and those bronze cut out."""
        self._run(
            "CREATE OR REPLACE TEMP TABLE malformed_rows (source_file VARCHAR, "
            "ingestion_date DATE, line_number BIGINT, raw_line VARCHAR, reason VARCHAR)"
        )
        for i, f in enumerate(files):
            # One error row per failing column: a record counts once, by its first line.
            self._run(
                # Bandit B608: paths quoted by _lit, the rest internal names/ints
                f"INSERT INTO malformed_rows SELECT {_lit(f.path)}, DATE '{f.ingestion_date}', "
                "line, regexp_replace(first(csv_line ORDER BY column_idx), "
                "'^[\\r\\n]+|[\\r\\n]+$', '', 'g')"
                f", '{Reason.MALFORMED_ROW}' FROM rej_{i} GROUP BY line"  # nosec B608
            )
            self._run(f"DROP TABLE rej_{i}; DROP TABLE rejscan_{i}")
            if f.oversized:  # records bronze.inspect cut out of the file read above
                self._run_many(
                    "INSERT INTO malformed_rows VALUES (?, ?, ?, ?, ?)",
                    [(f.path, f.ingestion_date, r.line_number, r.prefix,
                      Reason.RECORD_TOO_LARGE.value) for r in f.oversized],
                )

    def register_rows(
        self, name: str, columns: dict[str, str], rows: list[tuple[Any, ...]]
    ) -> None:
        spec = ", ".join(f"{c} {t}" for c, t in columns.items())
        self._run(f"CREATE OR REPLACE TEMP TABLE {name} ({spec})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            # Values are bound; decimals arrive as strings and are cast by the column type.
            self._run_many(
                # Bandit B608: internal table name; values are bound
                f"INSERT INTO {name} VALUES ({marks})",  # nosec B608
                [tuple(str(v) if v is not None else None for v in r) for r in rows],
            )

    def register_parquet(self, name: str, urls: list[str], columns: dict[str, str]) -> None:
        if not urls:
            cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
            self._run(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} WHERE false")
            return
        listing = "[" + ", ".join(_path_lit(u) for u in urls) + "]"
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
        opts = PARQUET_OPTIONS
        base = url.rstrip("/")
        if partition_by:
            values = self.fetch(
                f"SELECT DISTINCT CAST({partition_by} AS VARCHAR) FROM ({sql}) q"  # nosec B608
            )
            if len(values) == 1 and values[0][0] is not None and _SAFE_FOLDER.match(values[0][0]):
                # One partition (a run's usual case): a plain write into its folder costs
                # far less than DuckDB's partitioned write, which spreads rows by value.
                folder = f"{base}/{partition_by}={values[0][0]}"
                self._makedirs(folder)
                self._run(f"COPY ({sql}) TO {_lit(folder + '/part-0.parquet')} ({opts})")
                return
            opts += (
                f", PARTITION_BY ({partition_by}), FILENAME_PATTERN 'part-{{i}}', "
                "OVERWRITE_OR_IGNORE, WRITE_PARTITION_COLUMNS true"
            )
            self._run(f"COPY ({sql}) TO {_lit(url)} ({opts})")
        else:
            self._run(f"COPY ({sql}) TO {_lit(base + '/part-0.parquet')} ({opts})")

    def _makedirs(self, url: str) -> None:
        if "://" in url:
            return  # an object store: no folders to make
        try:
            os.makedirs(url, exist_ok=True)
        except OSError as exc:
            translated = None
            if self.lake is not None and self.lake.is_local:
                rel = os.path.relpath(url, self.lake.root)
                translated = lake_write_error(exc, self.lake.uri, "write", rel)
            raise (translated or TransientError(f"cannot create {url}: {exc}")) from exc

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with self._translated():
            return self.con.execute(sql).fetchall()

    def _run(self, sql: str) -> None:
        with self._translated():
            self.con.execute(sql)

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._translated():
            self.con.executemany(sql, rows)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Driver errors as the product's (_translate). DuckDB's Python client reports a
        Ctrl-C during a query as RuntimeError('Query interrupted'): that is the user's
        interrupt again, not a failed step."""
        try:
            yield
        except duckdb.Error as exc:
            raise _translate(exc, self.lake, self.temp_directory, self.spill_setting) from exc
        except RuntimeError as exc:
            if str(exc) == "Query interrupted":
                raise KeyboardInterrupt from exc
            raise

    def close(self) -> None:
        self.con.close()
        if self._owned_temp is not None:
            shutil.rmtree(self._owned_temp, ignore_errors=True)
            self._owned_temp = None


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
    exc: duckdb.Error, lake: Lake | None, temp_directory: str | None, spill_setting: str
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
    what = f"DuckDB's temporary files in {where} ({spill_setting})" if spill else where
    return type(translated)(str(translated).replace(f"lake {where}", what, 1))


def _translate(
    exc: duckdb.Error,
    lake: Lake | None = None,
    temp_directory: str | None = None,
    spill_setting: str = "TMPDIR",
) -> Exception:
    """Driver errors become the product's: I/O hiccups are transient, a write that cannot
    succeed (no space, file too large, read-only, no permission) and the rest permanent."""
    message = str(exc).splitlines()[0]
    if len(message) > _MAX_MESSAGE:  # a CSV error can quote a huge line
        message = message[:_MAX_MESSAGE] + "..."
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        translated = _write_error(exc, lake, temp_directory, spill_setting)
        if translated is not None:
            return translated
        return TransientError(f"DuckDB I/O error: {message}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return PermanentError(f"DuckDB ran out of memory ({message}); raise PURCHASES_MEMORY_LIMIT")
    return PermanentError(f"DuckDB error: {message}")


SPILL_DIR = "tmp"
"""Folder of $PURCHASES_HOME holding DuckDB's spill files (one folder per engine)."""


def _spill_folder(home: Path) -> str | None:
    """A new folder for one engine's spill files under home/tmp, or None when the home is
    not writable (then DuckDB spills under TMPDIR). Folders of engines whose process is
    gone (killed mid-run) are removed first: DuckDB deletes its files only when closed."""
    root = home / SPILL_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob("duckdb-*-*"):
            pid = old.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        return tempfile.mkdtemp(prefix=f"duckdb-{os.getpid()}-", dir=root)
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


def create(settings: Settings, lake: Lake | None = None, **options: Any) -> DuckDBEngine:
    """The engine for a run: PURCHASES_MEMORY_LIMIT bounds the process (see
    engine_memory_limit), and DuckDB spills to a folder of PURCHASES_HOME."""
    limit = engine_memory_limit(settings.memory_limit)
    if "temp_directory" in options:
        return DuckDBEngine(lake, memory_limit=f"{limit}B", **options)
    spill = _spill_folder(Path(settings.home))
    try:
        engine = DuckDBEngine(lake, memory_limit=f"{limit}B", temp_directory=spill,
                              spill_setting="PURCHASES_HOME" if spill else "TMPDIR", **options)
    except BaseException:
        if spill:
            shutil.rmtree(spill, ignore_errors=True)
        raise
    engine._owned_temp = spill
    return engine
