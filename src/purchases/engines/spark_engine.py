"""Spark engine (PySpark 3.5, the Spark of AWS Glue 5.0): the shared SQL, transpiled.

The row rules and transforms are not re-written here: the DuckDB-dialect SQL of `silver` and
`gold` is transpiled with sqlglot and run with ``spark.sql`` over temporary views. This module
only decides how Spark reads and writes, and sets the session up so the SQL means the same:

* exact DECIMAL arithmetic (``spark.sql.decimalOperations.allowPrecisionLoss=false``: scale 12
  for ``DECIMAL(38,4) * DECIMAL(38,8)`` as in DuckDB; ROUND on decimals is half-up in both);
* ANSI mode on, so an overflowing CAST fails like DuckDB's instead of yielding NULL (TRY_CAST
  still gives NULL on bad input: every parse in the shared SQL goes through TRY_CAST);
* session time zone UTC (no timestamps reach the outputs; dates never shift).

`create_table` computes a query once: with a local master into a scratch Parquet copy on
local disk (written and read back at about the cost of computing it; no JVM heap held), on a
cluster with ``persist(MEMORY_AND_DISK)``. Scratch data goes when the engine is closed.
`scan_bronze` parses the batch's CSV files once into such a stored copy (the corrupt-record
column must be read from stored rows: Spark refuses queries on it straight from the CSV
scan), exposes `records` and `malformed_rows` over it, and stores the shared `checked` SQL
from there: the CSV is never parsed again.
Shuffle partitions follow the input size (1 for small inputs, not Spark's default 200).

Every engine instance works in its own ``SparkSession.newSession()`` (own temporary views and
SQL settings) over one lazily started, process-wide SparkContext: ``local[*]`` with a small
driver and no UI, unless the process already runs inside Spark (spark-submit, AWS Glue), in
which case the existing context is used as configured there. Nothing is downloaded: no
``spark.jars.packages``; S3 paths are read through the platform's own connector (EMRFS on Glue).

CSV reading, and how it matches DuckDB's (``strict_mode``) record by record:

* RFC 4180 (``multiLine``, ``quote='"'``, ``escape='"'``), every field a string, a UTF-8 BOM
  dropped, empty lines skipped, ``.csv.gz`` decompressed by extension.
* Records longer than PURCHASES_MAX_RECORD_BYTES never reach Spark: `bronze.inspect` cuts
  them out into a sanitised copy (`BronzeFile.read_path`, read instead of the bronze file)
  and they join `malformed_rows` as record_too_large, exactly as in the DuckDB engine.
* A file mixing line breaks (LF, CRLF, bare CR) is read from bronze's copy with LF only
  (`read_path` again): Spark, like DuckDB, would take one line break per file.
* A record whose field count differs from the header's is malformed. Spark's PERMISSIVE mode
  pads short records and truncates long ones but also fills the corrupt-record column with the
  record's text in both cases (checked by tests: too few, too many, whitespace-only line, a
  quote left open up to the end of the file), so those records go to `malformed_rows`.
* The header (and blank records before it, `BronzeFile.skip_lines`) is dropped by record
  position: a multi-line CSV file is never split, so ``monotonically_increasing_id()`` right
  after the scan numbers a file's records 0, 1, 2... in file order.
* An empty field, quoted or not, is NULL (as DuckDB reads it).

Known, documented differences (Spark's parser cannot report them, or DuckDB's forgives):

* A record with more fields than the header where every extra field is empty (``...,AUD,``,
  ``...,AUD,,""``) is malformed for Spark. DuckDB's reader drops empty trailing fields, even
  under ``strict_mode``, and reads the record as complete; its values are the same.
* ``line_number`` of a malformed record is NULL: Spark does not expose line positions.
* Inside a quoted field Spark turns CRLF into LF; DuckDB keeps CRLF. Standardised values
  (trimmed and collapsed) are identical; only raw values of a *rejected* row can differ.
* Quoting errors that Spark's parser silently repairs are not malformed for Spark: text after
  a closing quote (``"ab"cd``), a quote left open inside a record's *last* field at the end of
  the file, or an open quote that a later quote in the file happens to close. DuckDB rejects
  those records as `malformed_row`.
* A record over PURCHASES_MAX_RECORD_BYTES made only of short lines inside a quoted field,
  in a file where an earlier quote inside an unquoted field (``5" screen``) upset the quote
  parity of bronze's quick scan, is not cut out: DuckDB rejects it (``max_line_size``) as
  `malformed_row`, Spark accepts it.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import gzip
import io
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlglot
from fsspec.core import url_to_fs

from purchases.contract import INPUT_COLUMNS, Reason
from purchases.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from purchases.bronze import BronzeFile
    from purchases.config import Settings
    from purchases.storage import Lake

CORRUPT = "_corrupt_record"
RECORD = "_record_index"
ROW_ID_FILE_SHIFT = 40  # row_id = file's position in the batch << 40 | record's in the file

# Runtime SQL settings of every engine session (see the module docstring).
SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.parquet.compression.codec": "zstd",
    # Parse every column of a CSV record, so a field-count mismatch is always seen.
    "spark.sql.csv.parser.columnPruning.enabled": "false",
    "spark.sql.parquet.mergeSchema": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
}

# Input bytes per shuffle partition and per output file (CSV counts 1:1, Parquet x4).
BYTES_PER_PARTITION = 32 << 20
BYTES_PER_OUTPUT_FILE = 256 << 20
PARALLEL_FROM_BYTES = 4 << 20  # below this, one partition: scheduling costs more than it saves

_lock = threading.Lock()
_base: SparkSession | None = None


# --- the process-wide session ------------------------------------------------------------------


def spark_session() -> SparkSession:
    """The process's SparkSession, started on first use (local, small, quiet, no downloads)."""
    global _base
    with _lock:
        if _base is not None and _base.sparkContext._jsc is not None:
            return _base
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        if SparkContext._active_spark_context is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
            # Inside spark-submit or AWS Glue: use the context as the platform configured it.
            _base = SparkSession.builder.getOrCreate()
        else:
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local[*]: loopback only
            _base = _local_builder(SparkSession.builder).getOrCreate()
        return _base


_LOG4J2 = """\
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = {level}
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = {level}
"""


def _local_builder(builder: Any) -> Any:
    scratch = tempfile.mkdtemp(prefix="purchases-spark-")
    atexit.register(shutil.rmtree, scratch, True)
    level = os.environ.get("PURCHASES_SPARK_LOG_LEVEL", "error").lower()
    log_conf = os.path.join(scratch, "log4j2.properties")
    with open(log_conf, "w", encoding="utf-8") as fh:
        fh.write(_LOG4J2.format(level=level))
    conf = {
        "spark.master": os.environ.get("PURCHASES_SPARK_MASTER", "local[*]"),
        "spark.app.name": "purchases",
        "spark.driver.memory": os.environ.get("PURCHASES_SPARK_DRIVER_MEMORY", "1g"),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": os.path.join(scratch, "warehouse"),
        "spark.driver.extraJavaOptions": (
            f"-Dlog4j2.configurationFile=file:{log_conf} -Dderby.system.home={scratch} "
            + os.environ.get("PURCHASES_SPARK_JAVA_OPTIONS", "")
        ).strip(),
        # No _SUCCESS markers in the staging folders (only *.parquet is ever published).
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.enable.summary-metadata": "false",
        **SESSION_CONF,
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder


# --- SQL ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def to_spark_sql(sql: str) -> str:
    """The shared DuckDB-dialect SQL in Spark's dialect."""
    try:
        statements = sqlglot.transpile(sql, read="duckdb", write="spark")
    except sqlglot.errors.SqlglotError as exc:
        raise PermanentError(f"cannot transpile SQL for Spark: {exc}") from exc
    if len(statements) != 1:
        raise PermanentError(f"expected one SQL statement, got {len(statements)}")
    return statements[0]


@functools.lru_cache(maxsize=64)
def spark_type(duckdb_type: str) -> str:
    """A contract column type (DuckDB names) as a Spark SQL type."""
    return sqlglot.exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


def _ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"`{c}` {spark_type(t)}" for c, t in columns.items())


def _lit(value: str) -> str:
    """A Spark SQL string literal (backslash is an escape character in Spark literals)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- paths -------------------------------------------------------------------------------------

_GLOB_CHARS = set("{}[]*?\\")


def hadoop_path(url: str, *, for_reading: bool = False) -> str:
    """A lake URL as a Hadoop path: local paths become file:// URIs; glob characters escaped."""
    if "://" not in url:
        url = "file://" + os.path.abspath(url)
    if for_reading and _GLOB_CHARS & set(url):
        # DataFrameReader expands globs in paths; a literal name must not be read as one.
        url = "".join("\\" + ch if ch in _GLOB_CHARS else ch for ch in url)
    return url


def _size(url: str) -> int:
    try:
        fs, path = url_to_fs(url)
        return int(fs.size(path) or 0)
    except (OSError, ValueError):
        return 0


def partitions_for(nbytes: int, parallelism: int) -> int:
    """A shuffle partition count that suits the input size (never the fixed default 200)."""
    if nbytes < PARALLEL_FROM_BYTES:
        return 1
    # A whole number of waves over the cores, so no core idles through a last short wave.
    waves = math.ceil(math.ceil(nbytes / BYTES_PER_PARTITION) / parallelism)
    return max(1, min(2000, waves * parallelism))


# --- the engine --------------------------------------------------------------------------------


class SparkEngine:
    """Runs the shared SQL on Spark; reads CSV/Parquet and writes Parquet like DuckDBEngine."""

    name = "spark"

    def __init__(self, lake: Lake | None = None, *, session: SparkSession | None = None,
                 shuffle_partitions: int | None = None, materialise: str | None = None) -> None:
        self.lake = lake
        self._given_session = session
        # How create_table materialises: "parquet" (a scratch Parquet copy on local disk:
        # the cheapest on one machine, and no JVM heap) or "cache" (persist, memory and disk).
        # Default: parquet with a local master, cache on a cluster (no shared local disk).
        self._materialise_mode = (
            materialise or os.environ.get("PURCHASES_SPARK_MATERIALISE") or None)
        if self._materialise_mode not in (None, "parquet", "cache"):
            raise PermanentError(
                f"materialise must be parquet or cache, not {self._materialise_mode!r}")
        self._scratch: str | None = None
        self._session: SparkSession | None = None
        self._fixed_partitions = shuffle_partitions
        self._input_bytes = 0
        self._sized_by_bronze = False
        self._cached: list[DataFrame] = []

    # The JVM starts on first use, not when the engine is created.
    @property
    def spark(self) -> SparkSession:
        if self._session is None:
            with _guard():
                base = self._given_session or spark_session()
                self._session = base.newSession()
                for key, value in SESSION_CONF.items():
                    self._session.conf.set(key, value)
                self._set_partitions()
        return self._session

    def _add_input(self, nbytes: int) -> None:
        self._input_bytes += nbytes
        self._set_partitions()

    def _set_partitions(self) -> None:
        if self._session is None:
            return
        n = self._fixed_partitions or partitions_for(
            self._input_bytes, self._session.sparkContext.defaultParallelism
        )
        self._session.conf.set("spark.sql.shuffle.partitions", str(n))
        # Adaptive execution runs a plan stage by stage (more, smaller jobs): it pays off on
        # large inputs (coalescing, skew), and only costs time when everything fits one task.
        self._session.conf.set("spark.sql.adaptive.enabled", "true" if n > 1 else "false")

    @property
    def shuffle_partitions(self) -> int:
        return int(self.spark.conf.get("spark.sql.shuffle.partitions"))

    def _output_files(self) -> int:
        return max(1, math.ceil(self._input_bytes / BYTES_PER_OUTPUT_FILE))

    # --- reading -------------------------------------------------------------------------

    def scan_bronze(self, lake: Lake, files: list[BronzeFile], name: str, sql: str) -> None:
        from pyspark.sql import functions as F

        bronze = self._bronze(lake, files)
        with _guard():
            bronze.where(F.col(CORRUPT).isNull()).select(
                "row_id", "file_no", "ingestion_date", *INPUT_COLUMNS
            ).createOrReplaceTempView("records")
        self.create_table(name, sql)

    def register_bronze(self, lake: Lake, files: list[BronzeFile]) -> None:
        from pyspark.sql import functions as F

        bronze = self._bronze(lake, files)
        with _guard():
            bronze.where(F.col(CORRUPT).isNull()).select(
                "row_id", "source_file", "ingestion_date", *INPUT_COLUMNS
            ).createOrReplaceTempView("raw_rows")

    def _bronze(self, lake: Lake, files: list[BronzeFile]) -> DataFrame:
        """Parse the files once into stored rows (the CSV's parse is the costly part, and
        Spark reads a multi-line CSV file in one task); `malformed_rows` is exposed from them."""
        from pyspark.sql import functions as F

        spark = self.spark
        self._sized_by_bronze = True
        self._input_bytes = 0
        self._add_input(sum(_size(lake.url(f.read_path)) for f in files))
        columns = [*INPUT_COLUMNS]
        with _guard():
            parts = [self._read_csv(lake, f, i) for i, f in enumerate(files)]
            if parts:
                bronze = functools.reduce(lambda a, b: a.unionByName(b), parts)
                if self.shuffle_partitions > 1:
                    # A multi-line CSV file is read by one task; spread its rows for the rules.
                    bronze = bronze.repartition(self.shuffle_partitions)
            else:
                bronze = spark.createDataFrame(
                    [], f"row_id BIGINT, file_no INT, source_file STRING, "
                        f"ingestion_date DATE, {', '.join(f'{c} STRING' for c in columns)}, "
                        f"{CORRUPT} STRING")
            bronze = self._materialise(bronze)
            malformed = bronze.where(F.col(CORRUPT).isNotNull()).select(
                "source_file",
                "ingestion_date",
                F.lit(None).cast("bigint").alias("line_number"),
                # As DuckDB reports it: the record's text without surrounding line breaks.
                F.regexp_replace(CORRUPT, r"^[\r\n]+|[\r\n]+$", "").alias("raw_line"),
                F.lit(Reason.MALFORMED_ROW.value).alias("reason"),
            )
            # Records bronze.inspect cut out of a file for being too long (never parsed here).
            oversized = [(f.path, f.ingestion_date, r.line_number, r.prefix,
                          Reason.RECORD_TOO_LARGE.value) for f in files for r in f.oversized]
            if oversized:
                malformed = malformed.unionByName(spark.createDataFrame(
                    oversized, "source_file STRING, ingestion_date DATE, line_number BIGINT, "
                               "raw_line STRING, reason STRING"))
            malformed.createOrReplaceTempView("malformed_rows")
        return bronze

    def _read_csv(self, lake: Lake, f: BronzeFile, index: int) -> DataFrame:
        from pyspark.sql import functions as F

        schema = ", ".join(f"c{k} STRING" for k in range(f.column_count)) + f", {CORRUPT} STRING"
        scan = (
            self.spark.read.schema(schema)
            .options(
                header=False,  # dropped by position below, after any blank records
                multiLine=True,
                quote='"',
                escape='"',
                encoding="UTF-8",
                mode="PERMISSIVE",
                columnNameOfCorruptRecord=CORRUPT,
                ignoreLeadingWhiteSpace=False,
                ignoreTrailingWhiteSpace=False,
                unescapedQuoteHandling="STOP_AT_DELIMITER",
            )
            .csv(hadoop_path(lake.url(f.read_path), for_reading=True))
        )
        if scan.rdd.getNumPartitions() != 1:  # record positions below rely on it
            raise PermanentError(f"{f.path}: Spark split a multi-line CSV file; cannot number it")
        df = scan.withColumn(RECORD, F.monotonically_increasing_id())
        header_at = header_record_index(lake, f)

        def field(name: str) -> Any:
            c = F.col(f"c{f.positions[name]}")
            return F.when(c == "", None).otherwise(c).alias(name)

        return df.where(F.col(RECORD) > header_at).select(
            # Unique in the batch and in arrival order: file by file, record by record.
            (F.lit(index << ROW_ID_FILE_SHIFT) + F.col(RECORD)).alias("row_id"),
            F.lit(index).cast("int").alias("file_no"),
            F.lit(f.path).alias("source_file"),
            F.lit(f.ingestion_date).cast("date").alias("ingestion_date"),
            *(field(c) for c in INPUT_COLUMNS),
            F.col(CORRUPT),
        )

    def register_rows(
        self, name: str, columns: dict[str, str], rows: list[tuple[Any, ...]]
    ) -> None:
        # Values travel as strings and are cast by the column type, as in the DuckDB engine.
        with _guard():
            text = self.spark.createDataFrame(
                [tuple(None if v is None else str(v) for v in r) for r in rows],
                ", ".join(f"`{c}` STRING" for c in columns),
            )
            text.selectExpr(
                *(f"CAST(`{c}` AS {spark_type(t)}) AS `{c}`" for c, t in columns.items())
            ).createOrReplaceTempView(name)

    def register_parquet(self, name: str, urls: list[str], columns: dict[str, str]) -> None:
        with _guard():
            if not urls:
                self.spark.createDataFrame([], _ddl(columns)).createOrReplaceTempView(name)
                return
            if not self._sized_by_bronze:
                # With bronze registered, the batch's CSV sets the size; Parquet read beside it
                # (history looked up for a few ids) must not grow the partition count.
                self._add_input(4 * sum(_size(u) for u in urls))
            df = self.spark.read.schema(_ddl(columns)).parquet(
                *(hadoop_path(u, for_reading=True) for u in urls)
            )
            df.select(*(f"`{c}`" for c in columns)).createOrReplaceTempView(name)

    # --- running -------------------------------------------------------------------------

    def _df(self, sql: str) -> DataFrame:
        return self.spark.sql(to_spark_sql(sql))

    @property
    def materialise_mode(self) -> str:
        if self._materialise_mode is None:
            master = self.spark.sparkContext.master
            self._materialise_mode = "parquet" if master.startswith("local") else "cache"
        return self._materialise_mode

    def _materialise(self, df: DataFrame) -> DataFrame:
        """Compute a query once, here, and return a DataFrame over its stored rows."""
        if self.materialise_mode == "cache":
            from pyspark import StorageLevel

            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            df.count()  # spills to local disk rather than failing
            self._cached.append(df)
            return df
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="purchases-spark-scratch-")
        path = hadoop_path(os.path.join(self._scratch, f"t{len(os.listdir(self._scratch))}"))
        names = df.columns
        # Positional names: any query's columns (even "count(1)") are valid Parquet names.
        stored = df.toDF(*(f"c{i}" for i in range(len(names))))
        stored.write.mode("overwrite").option("compression", "snappy").parquet(path)
        return self.spark.read.schema(stored.schema).parquet(path).toDF(*names)

    def create_table(self, name: str, sql: str) -> None:
        with _guard():
            self._materialise(self._df(sql)).createOrReplaceTempView(name)

    def create_view(self, name: str, sql: str) -> None:
        with _guard():
            self._df(sql).createOrReplaceTempView(name)

    def write_parquet(self, sql: str, url: str, *, partition_by: str | None = None) -> None:
        from pyspark.sql import functions as F

        with _guard():
            df = self._df(sql)
            if not partition_by:
                self._write(df, url)
                return
            # Spark's partitionBy drops the column from the files; DESIGN wants every file
            # complete. So each value (a handful: ingestion dates) is written to its folder,
            # from the query's rows computed once (the distinct values are a tiny result).
            rows = self._materialise(df)
            values = [r[0] for r in rows.select(partition_by).distinct().collect()]
            for value in values:
                column = F.col(partition_by)
                part = rows.where(column.isNull() if value is None else column == F.lit(value))
                self._write(part, f"{url.rstrip('/')}/{partition_by}={_folder_value(value)}")
            if rows in self._cached:  # cache mode: free the memory now, not at close
                self._cached.remove(rows)
                rows.unpersist()

    def _write(self, df: DataFrame, url: str) -> None:
        (df.coalesce(self._output_files()).write.mode("overwrite")
         .option("compression", "zstd").parquet(hadoop_path(url)))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with _guard():
            return [tuple(r) for r in self._df(sql).collect()]

    def close(self) -> None:
        for df in self._cached:
            with contextlib.suppress(Exception):
                df.unpersist()
        self._cached.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        self._session = None


def _folder_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def header_record_index(lake: Lake, f: BronzeFile) -> int:
    """Position of the header among the records Spark's CSV reader yields for the file.

    Spark skips empty lines but yields whitespace-only or comma-only ones, which
    `bronze.inspect` counted as blank lines before the header (`skip_lines`).
    """
    if f.skip_lines == 0:
        return 0
    with lake.open(f.read_path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if f.compressed else raw
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        yielded = 0
        for i, record in enumerate(csv.reader(text)):
            if i == f.skip_lines:
                return yielded
            if record:  # csv yields [] for an empty line, which Spark skips
                yielded += 1
    return yielded


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Spark/JVM errors become the product's: I/O hiccups are transient, the rest permanent."""
    try:
        yield
    except Exception as exc:
        module = type(exc).__module__ or ""
        if module.startswith(("pyspark", "py4j")):
            raise translate(exc) from exc
        raise


def translate(exc: Exception) -> Exception:
    """A Spark, Py4J or JVM exception as the product's error, with a one-line message."""
    text = str(exc)
    java = getattr(exc, "java_exception", None)  # Py4JJavaError: the JVM's own message
    headline = str(java) if java is not None else text
    first = next((line.strip() for line in headline.splitlines() if line.strip()),
                 type(exc).__name__)
    if "OutOfMemoryError" in text:
        return PermanentError(
            f"Spark ran out of memory ({first}); raise PURCHASES_SPARK_DRIVER_MEMORY")
    if type(exc).__name__ == "Py4JNetworkError" or (
        "java.io.IOException" in text and "FileNotFoundException" not in text
    ) or "SocketTimeoutException" in text:
        return TransientError(f"Spark I/O error: {first}")
    return PermanentError(f"Spark error: {first}")


def create(settings: Settings, lake: Lake | None = None, **options: Any) -> SparkEngine:
    return SparkEngine(lake, **options)
