"""The Spark engine's pure parts, without a JVM: the shared SQL as Spark receives it, the
sizing of shuffles, path handling and header positions.

The SQL checked is exactly what the steps send an engine: a DuckDB pipeline runs with a
recording engine, and every statement it was given is transpiled as the Spark engine does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlglot

from conftest import HEADER
from purchases import bronze
from purchases.engines import spark_engine
from purchases.engines.duckdb_engine import DuckDBEngine
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake


class RecordingEngine(DuckDBEngine):
    """The DuckDB engine, noting every SQL statement the steps hand it."""

    seen: list[str] = []

    def scan_bronze(self, lake: Any, files: list, name: str, sql: str) -> None:
        self.seen.append(sql)
        super().scan_bronze(lake, files, name, sql)

    def create_table(self, name: str, sql: str) -> None:
        self.seen.append(sql)
        super().create_table(name, sql)

    def create_view(self, name: str, sql: str) -> None:
        self.seen.append(sql)
        super().create_view(name, sql)

    def write_parquet(self, sql: str, url: str, *, partition_by: str | None = None) -> None:
        self.seen.append(sql)
        super().write_parquet(sql, url, partition_by=partition_by)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        self.seen.append(sql)
        return super().fetch(sql)


@pytest.fixture(scope="module")
def pipeline_sql(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every statement of two runs (the second with history: state merge, earlier keys)."""
    from purchases.config import load_settings

    root = tmp_path_factory.mktemp("sql")
    settings = load_settings(home=root / "home", lake=str(root / "lake"),
                             database_url=f"sqlite:///{root / 'db.sqlite'}")
    lake = Lake(settings.lake_uri)
    RecordingEngine.seen = []
    import purchases.engines.duckdb_engine as duck

    original = duck.create
    duck.create = lambda s, lk=None, **o: RecordingEngine(lk, memory_limit=f"{s.memory_limit}B")
    try:
        for day, rows in (("2024-01-15", "1,A,B,a@b.co,1,2024-01-10,1.00,USD\n"
                                         "1,A,B,a@b.co,1,2024-01-10,1.0,USD\n2,x\n"),
                          ("2024-01-16", "1,A,C,c@b.co,1,2024-01-10,2.00,USD\n"
                                         "2,D,E,,3,2024-01-11,3.00,AUD\n")):
            src = root / f"{day}.csv"
            src.write_text(HEADER + rows)
            from datetime import date

            bronze.land(lake, [src], date.fromisoformat(day))
            assert run_pipeline(settings).status == "succeeded"
    finally:
        duck.create = original
    assert RecordingEngine.seen
    return list(RecordingEngine.seen)


def test_every_statement_transpiles_to_spark(pipeline_sql: list[str]) -> None:
    for sql in pipeline_sql:
        spark_sql = spark_engine.to_spark_sql(sql)
        # Spark's dialect reads it back as one statement.
        assert len(sqlglot.parse(spark_sql, read="spark")) == 1
        # No DuckDB-only spelling survives.
        for duckdb_only in (r"\bREGEXP_MATCHES\s*\(", r"::", r"\bEXCLUDE\b", r", 'g'\)",
                            r"\bread_csv\b", r"\bread_parquet\b"):
            assert not re.search(duckdb_only, spark_sql, re.IGNORECASE), (duckdb_only, spark_sql)


def test_regex_backslashes_survive_spark_string_literals(pipeline_sql: list[str]) -> None:
    """Spark SQL literals unescape backslashes: a regex's \\s must arrive doubled."""
    spark_sql = " ".join(spark_engine.to_spark_sql(s) for s in pipeline_sql)
    assert r"\\s" in spark_sql and r"\\p{Z}" in spark_sql
    assert not re.search(r"[^\\]\\s", spark_sql.replace(r"\\s", ""))


def test_decimals_keep_their_precision(pipeline_sql: list[str]) -> None:
    spark_sql = " ".join(spark_engine.to_spark_sql(s) for s in pipeline_sql)
    assert "DECIMAL(38, 4)" in spark_sql and "DECIMAL(38, 8)" in spark_sql
    assert "DECIMAL(18, 2)" in spark_sql
    assert "DOUBLE" not in spark_sql.upper() and "FLOAT" not in spark_sql.upper()


def test_contract_types_map_to_spark_types() -> None:
    assert spark_engine.spark_type("VARCHAR") == "STRING"
    assert spark_engine.spark_type("BIGINT") == "BIGINT"
    assert spark_engine.spark_type("DATE") == "DATE"
    assert spark_engine.spark_type("DECIMAL(18,4)") == "DECIMAL(18, 4)"


def test_untranslatable_sql_is_a_permanent_error() -> None:
    from purchases.errors import PermanentError

    with pytest.raises(PermanentError):
        spark_engine.to_spark_sql("SELECT 1; SELECT 2")


@pytest.mark.parametrize(("nbytes", "cores", "expected"), [
    (0, 8, 1),
    (10_000, 8, 1),  # small inputs: one partition, never the default 200
    (5 << 20, 2, 2),
    (96 << 20, 2, 4),
    (96 << 20, 8, 8),
    (300 << 20, 4, 12),
    (1 << 40, 8, 2000),
])
def test_shuffle_partitions_follow_input_size(nbytes: int, cores: int, expected: int) -> None:
    assert spark_engine.partitions_for(nbytes, cores) == expected


def test_hadoop_paths(tmp_path) -> None:
    assert spark_engine.hadoop_path("/a/b/x.csv") == "file:///a/b/x.csv"
    assert spark_engine.hadoop_path("s3://bucket/k/x.csv") == "s3://bucket/k/x.csv"
    # Readers expand globs; a literal name with glob characters is escaped.
    assert spark_engine.hadoop_path("/a/x[1].csv", for_reading=True) == r"file:///a/x\[1\].csv"
    assert spark_engine.hadoop_path("/a/x[1].csv") == "file:///a/x[1].csv"


def test_spark_literals_escape_quotes_and_backslashes() -> None:
    assert spark_engine._lit("O'Brien\\x") == "'O\\'Brien\\\\x'"


@pytest.mark.parametrize(("text", "expected"), [
    (HEADER, 0),
    ("\n\n" + HEADER, 0),  # empty lines: Spark's reader skips them too
    ("   \n" + HEADER, 1),  # a whitespace-only line is a record to Spark
    ("\ufeff\n ,, \n\n" + HEADER, 1),
    (",,,\n\t\n" + HEADER, 2),
])
def test_header_position_among_spark_records(tmp_path, text: str, expected: int) -> None:
    from datetime import date

    src = tmp_path / "in" / "x.csv"
    src.parent.mkdir()
    src.write_text(text + "1,A,B,a@b.co,1,2024-01-10,1.00,AUD\n", encoding="utf-8")
    lake = Lake(str(tmp_path / "lake"))
    bronze.land(lake, [src], date(2024, 1, 15))
    [obj] = lake.list_bronze()
    f = bronze.inspect(lake, obj)
    assert f.rejection is None
    assert spark_engine.header_record_index(lake, f) == expected


def test_engine_is_lazy(tmp_path) -> None:
    """Creating the engine (every step does) starts no JVM; only running SQL does."""
    from purchases.config import load_settings

    engine = spark_engine.create(load_settings(home=tmp_path, engine="spark"), None)
    assert engine._session is None
    engine.close()
