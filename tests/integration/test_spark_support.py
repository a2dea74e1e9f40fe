"""Helpers shared by the Spark tests (this module holds no tests).

The Spark tests share one local SparkSession per test process (starting a JVM takes seconds):
`spark_or_skip()` returns it, skipping with the reason where Java or pyspark is missing, and
failing instead when PURCHASES_REQUIRE_SERVICES=1 (CI). Each Spark test module binds it to a
module fixture; the engine's own `spark_session()` is process-wide, so all of them get the
same session.

(A tests/integration/conftest.py would be the natural home for the fixture, but a second
conftest.py in this package-less test tree shadows the root one for the tests that do
`from conftest import ...`.)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq

from conftest import require, write_file  # noqa: F401 - re-exported for the Spark tests
from purchases.storage import Lake


def java_ok() -> bool:
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java")
    if not java or not os.path.exists(java):
        return False
    return subprocess.run([java, "-version"], capture_output=True).returncode == 0


def spark_installed_or_skip() -> None:
    """Skip (fail in CI) unless pyspark and a Java it can run are installed. For tests whose
    Spark runs in a process of their own: no session is started in this one."""
    require(importlib.util.find_spec("pyspark") is not None,
            "pyspark is not installed (pip install '.[spark]')")
    require(java_ok(), "Java is not available (PySpark 3.5 needs Java 8, 11 or 17)")


def spark_or_skip() -> Any:
    """The process-wide local SparkSession the Spark engine uses (started on first use)."""
    spark_installed_or_skip()
    from purchases.engines.spark_engine import spark_session

    return spark_session()


def parquet_rows(lake: Lake, prefix: str, *, with_folder: bool = False) -> list[dict[str, Any]]:
    """Every row of every published Parquet file under `prefix`, each file read on its own.

    with_folder: add "_folder", the file's folder relative to prefix (e.g. ingestion_date=...).
    """
    rows: list[dict[str, Any]] = []
    for rel in lake.list_files(prefix):
        name = rel.rsplit("/", 1)[-1]
        if not rel.endswith(".parquet") or name.startswith((".", "_")):
            continue
        table = pq.ParquetFile(lake.full(rel)).read()
        folder = rel[len(prefix) + 1:].rpartition("/")[0]
        for r in table.to_pylist():
            if with_folder:
                r["_folder"] = folder
            rows.append(r)
    return rows


def sort_rows(rows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples of (column, value) pairs, in a total order (None-safe)."""
    def key(row: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
        return tuple((v is None, str(type(v)), str(v)) for _, v in row)

    return sorted((tuple(sorted(r.items())) for r in rows), key=key)


def schema_of(lake: Lake, prefix: str) -> set[str]:
    """The distinct Arrow schemas (as text) of the Parquet files under prefix."""
    out = set()
    for rel in lake.list_files(prefix):
        if rel.endswith(".parquet") and not rel.rsplit("/", 1)[-1].startswith((".", "_")):
            schema = pq.read_schema(lake.full(rel))
            out.add(", ".join(f"{f.name}:{f.type}" for f in schema))
    return out


def folders(lake: Lake, prefix: str) -> set[str]:
    return {rel[len(prefix) + 1:].rpartition("/")[0] for rel in lake.list_files(prefix)
            if rel.endswith(".parquet")}


