"""The Spark engine against the Engine protocol and against DuckDB, the reference adapter:
CSV parsing record by record, Parquet writing, exact decimals, session settings, errors,
and publication of re-processed files."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from test_spark_support import parquet_rows, spark_or_skip, write_file

from purchases import bronze, commit_log
from purchases.bronze import BronzeFile
from purchases.engines.duckdb_engine import DuckDBEngine
from purchases.engines.spark_engine import SparkEngine
from purchases.errors import PermanentError
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake

pytestmark = pytest.mark.spark

H = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency"
GOOD = "1,A,B,a@b.co,{i},2024-01-10,1.00,AUD"


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_or_skip()


def land(tmp_path: Path, files: dict[str, str | bytes]) -> tuple[Lake, list[BronzeFile]]:
    lake = Lake(str(tmp_path / "lake"))
    for name, content in files.items():
        bronze.land(lake, [write_file(tmp_path / "in" / name, content)], date(2024, 1, 15))
    inspected = [bronze.inspect(lake, o) for o in lake.list_bronze()]
    assert all(f.rejection is None for f in inspected), inspected
    return lake, inspected


def parsed(engine: Any, lake: Lake, files: list[BronzeFile]) -> tuple[list, list]:
    """What an engine exposes for the files: records (without row_id) and malformed ones."""
    try:
        engine.register_bronze(lake, files)
        raw = engine.fetch("SELECT source_file, ingestion_date, customer_id, first_name, "
                           "last_name, email, purchase_id, purchase_date, amount, currency "
                           "FROM raw_rows")
        bad = engine.fetch("SELECT source_file, ingestion_date, raw_line FROM malformed_rows")
    finally:
        engine.close()
    return sorted(raw, key=repr), sorted(bad, key=repr)


# Every case: what DuckDB (strict_mode) does, Spark must do, record for record.
CSV_CASES: dict[str, str | bytes] = {
    "bom_crlf.csv": "\ufeff" + H + "\r\n" + '1,"Smith, J",B,a@b.co,1,2024-01-10,1.00,AUD\r\n'
                    + GOOD.format(i=2) + "\r\n",
    "too_few.csv": H + "\n" + GOOD.format(i=1) + "\n2,A,B,a@b.co,2\n" + GOOD.format(i=3) + "\n",
    "too_many.csv": H + "\n" + GOOD.format(i=1) + ",extra\n" + GOOD.format(i=2) + "\n",
    "too_few_last.csv": H + "\n" + GOOD.format(i=1) + "\n2,A",
    "crlf_bad.csv": H + "\r\n2,A,B\r\n" + '3,"X\r\nY",B,a@b.co,3,2024-01-10,1,AUD,zz\r\n'
                    + GOOD.format(i=4) + "\r\n",
    "quoted.csv": H + "\n" + '1,"Multi\nLine",B,a@b.co,1,2024-01-10,1.00,AUD\n'
                  '2,"He said ""hi""",B,,2,2024-01-10,2.00,AUD\n'
                  '3,"",B,"",3,2024-01-10,3.00,AUD\n',
    "blank_lines.csv": "\n\n" + H + "\n" + GOOD.format(i=1) + "\n\n" + GOOD.format(i=2)
                       + "\n   \n" + GOOD.format(i=3) + "\n\n",
    "pre_header.csv": "\ufeff\n  \n,,\n" + H + "\n 1 , A ,B,a@b.co,1,2024-01-10,1.00,AUD\n",
    "empty_fields.csv": H + "\n,,,\n" + GOOD.format(i=1) + "\n,,,,,,,\n",
    "no_eol.csv": H + "\n" + GOOD.format(i=1),
    "unterminated.csv": H + "\n" + GOOD.format(i=1) + '\n2,"Open,B,a@b.co,2,2024-01-10,2.00,AUD\n'
                        + GOOD.format(i=3) + "\n",
    "stray_quote.csv": H + "\n" + "1,O\"Brien,B,a@b.co,1,2024-01-10,1.00,AUD\n",
    "reordered.csv": " Amount ,currency,EXTRA,purchase_id,purchase_date,email,last_name,"
                     "first_name,customer_id,amount\n"
                     "1.50,usd,x,7,2024-01-10,a@b.co,Lee,Ann,3,999\n",
    "gzipped.csv.gz": H + "\n" + GOOD.format(i=1) + "\n2,A,B\n",
    "header_only.csv": H + "\n",
    "odd_name [1] {x}.csv": H + "\n" + GOOD.format(i=1) + "\n",
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_records_and_malformed_rows_match_duckdb(spark: Any, tmp_path: Path,
                                                     case: str) -> None:
    lake, files = land(tmp_path, {case: CSV_CASES[case]})
    assert parsed(SparkEngine(lake), lake, files) == parsed(DuckDBEngine(lake), lake, files)


def test_all_cases_at_once_with_row_ids_in_arrival_order(spark: Any, tmp_path: Path) -> None:
    lake, files = land(tmp_path, CSV_CASES)
    assert parsed(SparkEngine(lake), lake, files) == parsed(DuckDBEngine(lake), lake, files)
    engine = SparkEngine(lake)
    try:
        engine.register_bronze(lake, files)
        rows = engine.fetch("SELECT row_id, source_file, purchase_id FROM raw_rows")
    finally:
        engine.close()
    ids = [r[0] for r in rows]
    assert len(set(ids)) == len(ids)
    # Ordered by row_id, the records come file by file in the batch's order, as in the files.
    order = [files.index(next(f for f in files if f.path == r[1])) for r in sorted(rows)]
    assert order == sorted(order)
    blank = [r[2] for r in sorted(rows) if r[1].endswith("blank_lines.csv")]
    assert blank == ["1", "2", "3"]


def test_malformed_detection_is_not_fooled_by_column_pruning(spark: Any, tmp_path: Path) -> None:
    """Counting malformed rows alone (only the corrupt column read) still finds them."""
    lake, files = land(tmp_path, {"x.csv": CSV_CASES["too_few.csv"]})
    engine = SparkEngine(lake)
    try:
        engine.register_bronze(lake, files)
        assert engine.fetch("SELECT COUNT(*) FROM malformed_rows") == [(1,)]
        assert engine.fetch("SELECT COUNT(*) FROM raw_rows") == [(2,)]
    finally:
        engine.close()


def test_write_parquet_partitions_keep_their_column(spark: Any, tmp_path: Path) -> None:
    engine = SparkEngine(Lake(str(tmp_path / "lake")))
    try:
        engine.register_rows("t", {"d": "DATE", "v": "DECIMAL(18,2)", "s": "VARCHAR"},
                             [(date(2024, 1, 15), Decimal("1.50"), "a"),
                              (date(2024, 1, 16), Decimal("2.25"), None),
                              (date(2024, 1, 16), Decimal("-0.01"), "c")])
        out = tmp_path / "out"
        out.mkdir()
        engine.write_parquet("SELECT d, v, s FROM t", str(out), partition_by="d")
        engine.write_parquet("SELECT d, v FROM t ORDER BY v", str(tmp_path / "flat"))
    finally:
        engine.close()
    parts = sorted(p.parent.name for p in out.rglob("*.parquet"))
    assert parts == ["d=2024-01-15", "d=2024-01-16"]
    for f in out.rglob("*.parquet"):
        table = pq.ParquetFile(f).read()
        assert table.column_names == ["d", "v", "s"]  # each file complete on its own
        assert {str(d) for d in table.column("d").to_pylist()} == {f.parent.name[2:]}
        assert str(table.schema.field("v").type) == "decimal128(18, 2)"
    flat = [pq.ParquetFile(f).read().to_pylist() for f in (tmp_path / "flat").rglob("*.parquet")]
    assert [r["v"] for rows in flat for r in rows] == [Decimal("-0.01"), Decimal("1.50"),
                                                       Decimal("2.25")]
    assert not list((tmp_path / "flat").rglob("_SUCCESS"))


def test_register_parquet_reads_files_and_empty_lists(spark: Any, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    duck = DuckDBEngine(lake)
    duck.create_view("src", "SELECT 1::BIGINT AS id, 'x' AS s, 1.25::DECIMAL(18,4) AS a "
                            "UNION ALL SELECT 2, NULL, NULL")
    (tmp_path / "p").mkdir()
    duck.write_parquet("SELECT * FROM src", str(tmp_path / "p"))
    duck.close()
    files = [str(p) for p in (tmp_path / "p").glob("*.parquet")]
    columns = {"id": "BIGINT", "a": "DECIMAL(18,4)", "s": "VARCHAR"}
    engine = SparkEngine(lake)
    try:
        engine.register_parquet("written", files, columns)  # DuckDB's file, read by Spark
        assert sorted(engine.fetch("SELECT id, a, s FROM written"), key=repr) == [
            (1, Decimal("1.2500"), "x"), (2, None, None)]
        engine.register_parquet("nothing", [], columns)
        assert engine.fetch("SELECT * FROM nothing") == []
        schema = engine.spark.table("nothing").schema.simpleString()
        assert schema == "struct<id:bigint,a:decimal(18,4),s:string>"
    finally:
        engine.close()


DECIMALS = ["0.0050", "0.0049", "2.345", "0.03", "1.0010", "33.3333", "999999.9999", "0",
            "12345.6789", "0.0001"]
RATES = ["1.00000000", "1.50000000", "0.01020000", "1.65000000", "0.19500000", "9999.99999999"]


def test_decimal_arithmetic_and_rounding_match_duckdb(spark: Any, tmp_path: Path) -> None:
    """amount x rate at scale 12, ROUND half-up to cents: Spark and DuckDB agree exactly."""
    sql = ("SELECT a, r, CAST(a AS DECIMAL(38,4)) * CAST(r AS DECIMAL(38,8)) AS exact, "
           "CAST(ROUND(CAST(a AS DECIMAL(38,4)) * CAST(r AS DECIMAL(38,8)), 2) "
           "AS DECIMAL(18,2)) AS aud FROM amounts, rates")
    results = []
    for engine in (DuckDBEngine(None), SparkEngine(None)):
        try:
            engine.register_rows("amounts", {"a": "DECIMAL(18,4)"},
                                 [(Decimal(a),) for a in DECIMALS])
            engine.register_rows("rates", {"r": "DECIMAL(18,8)"},
                                 [(Decimal(r),) for r in RATES])
            results.append(sorted(engine.fetch(sql)))
        finally:
            engine.close()
    assert results[0] == results[1]
    by_pair = {(a, r): aud for a, r, _, aud in results[1]}
    assert by_pair[(Decimal("0.0300"), Decimal("1.50000000"))] == Decimal("0.05")  # 0.045 up
    assert by_pair[(Decimal("2.3450"), Decimal("1.00000000"))] == Decimal("2.35")
    exact = {(a, r): e for a, r, e, _ in results[1]}
    assert exact[(Decimal("33.3333"), Decimal("1.50000000"))] == Decimal("49.999950000000")


def test_overflowing_cast_fails_like_duckdb_and_try_cast_does_not(spark: Any) -> None:
    engine = SparkEngine(None)
    try:
        assert engine.fetch("SELECT TRY_CAST('x1' AS BIGINT), TRY_CAST('9223372036854775808' "
                            "AS BIGINT), TRY_CAST('2024-02-30' AS DATE)") == [(None, None, None)]
        with pytest.raises(PermanentError):
            engine.fetch("SELECT CAST(CAST('1e20' AS DECIMAL(38,4)) AS DECIMAL(18,2))")
    finally:
        engine.close()
    duck = DuckDBEngine(None)
    with pytest.raises(PermanentError):
        duck.fetch("SELECT CAST(CAST('1e20' AS DECIMAL(38,4)) AS DECIMAL(18,2))")
    duck.close()


def test_session_settings(spark: Any, tmp_path: Path) -> None:
    lake, files = land(tmp_path, {"x.csv": H + "\n" + GOOD.format(i=1) + "\n"})
    engine = SparkEngine(lake)
    try:
        engine.register_bronze(lake, files)
        conf = engine.spark.conf
        assert conf.get("spark.sql.session.timeZone") == "UTC"
        assert conf.get("spark.sql.decimalOperations.allowPrecisionLoss") == "false"
        assert conf.get("spark.sql.ansi.enabled") == "true"
        assert engine.shuffle_partitions == 1  # a tiny input: not the default 200
        context = engine.spark.sparkContext.getConf()
        assert context.get("spark.ui.enabled") == "false"
        assert context.get("spark.master").startswith("local")
        assert not context.get("spark.jars.packages", "")
    finally:
        engine.close()


@pytest.mark.parametrize("mode", ["parquet", "cache"])
def test_create_table_materialises_once(spark: Any, tmp_path: Path, mode: str) -> None:
    engine = SparkEngine(None, materialise=mode)
    try:
        engine.register_rows("r", {"id": "BIGINT", "s": "VARCHAR"},
                             [(i, f"v{i}") for i in range(5)])
        engine.create_table("t", "SELECT id, COUNT(*) OVER (), UPPER(s) FROM r")
        engine.create_table("empty", "SELECT id, s FROM r WHERE id < 0")
        if mode == "cache":
            assert engine.spark.catalog.isCached("t")
        else:
            scratch = engine._scratch
            files = engine.spark.table("t").inputFiles()
            assert scratch and files and all(scratch in f for f in files)
        assert engine.spark.table("t").columns[0] == "id"  # names survive storage
        engine.create_view("v", "SELECT id * 2 AS d FROM t")
        assert engine.fetch("SELECT SUM(d) FROM v") == [(20,)]
        assert engine.fetch("SELECT COUNT(*) FROM empty") == [(0,)]
        engine.write_parquet("SELECT id, s FROM r", str(tmp_path / "out"), partition_by="s")
        assert len(list((tmp_path / "out").glob("s=v*/*.parquet"))) == 5
    finally:
        engine.close()
    assert not engine._cached and engine._scratch is None
    if mode == "parquet":
        assert not Path(scratch).exists()


def test_errors_are_the_products(spark: Any, tmp_path: Path) -> None:
    engine = SparkEngine(None)
    try:
        with pytest.raises(PermanentError, match="Spark error"):
            engine.fetch("SELECT no_such_column FROM range(1)")
        with pytest.raises(PermanentError):
            engine.register_parquet("p", [str(tmp_path / "missing.parquet")], {"a": "BIGINT"})
    finally:
        engine.close()


def test_engines_are_isolated_sessions(spark: Any) -> None:
    a, b = SparkEngine(None), SparkEngine(None)
    try:
        a.create_view("only_in_a", "SELECT 1 AS x")
        with pytest.raises(PermanentError):
            b.fetch("SELECT * FROM only_in_a")
    finally:
        a.close()
        b.close()


# --- publication ----------------------------------------------------------------------------


def test_reprocessing_a_file_adds_its_output_and_leaves_other_files_rows(
        spark: Any, settings: Any, tmp_path: Path) -> None:
    """Batch-named files: a changed file processed again never replaces another file's rows
    in the same ingestion-date partition; staging is published atomically and cleaned up."""
    settings = settings.model_copy(update={"engine": "spark"})
    lake = Lake(settings.lake_uri)
    a = H + "\n" + "1,A,B,a@b.co,1,2024-01-10,1.00,AUD\n1,A,B,a@b.co,2,2024-01-10,2.00,AUD\n"
    b = H + "\n" + "2,C,D,c@d.co,3,2024-01-11,3.00,AUD\n"
    day = date(2024, 1, 15)
    bronze.land(lake, [write_file(tmp_path / "in" / "a.csv", a)], day)
    bronze.land(lake, [write_file(tmp_path / "in" / "b.csv", b)], day)
    assert run_pipeline(settings).status == "succeeded"
    first = parquet_rows(lake, "silver")
    assert sorted(r["purchase_id"] for r in first) == [1, 2, 3]

    changed = a + "1,A,B,a@b.co,4,2024-01-12,4.00,AUD\n"
    bronze.land(lake, [write_file(tmp_path / "in2" / "a.csv", changed)], day)
    record = run_pipeline(settings)
    [outcome] = record.files
    assert (outcome["accepted"], outcome["duplicates"]) == (1, 2)
    silver = parquet_rows(lake, "silver", with_folder=True)
    assert sorted(r["purchase_id"] for r in silver) == [1, 2, 3, 4]
    assert {r["_folder"] for r in silver} == {
        "ingestion_date=2024-01-15/batch=000000000001",
        "ingestion_date=2024-01-15/batch=000000000002",
    }
    files = [p for p in lake.list_files("silver/ingestion_date=2024-01-15")
             if p.endswith(".parquet")]
    batches = {p.rsplit("/", 1)[-1].split("-")[1] for p in files}
    assert len(batches) == 2  # both batches' files side by side, none replaced
    by_source = {r["source_file"].rsplit("/", 1)[-1] for r in silver if r["purchase_id"] == 3}
    assert by_source == {"b.csv"}
    assert lake.list_files(commit_log.RUNS_STAGING_DIR) == []  # staging published and removed
    assert len(commit_log.load_commits(lake)) == 2


def test_a_lake_can_switch_engines(spark: Any, settings: Any, tmp_path: Path) -> None:
    """DuckDB-written state read by Spark (and on): the same end state as DuckDB alone."""
    from purchases import serving

    days = {date(2024, 1, 15): H + "\n" + "1,Ann,Lee,a@x.io,1,2024-01-10,10.00,USD\n"
                                          "2,Bo,Li,b@x.io,2,2024-01-11,5.5,AUD\n",
            date(2024, 1, 16): H + "\n" + "1,Ann,Lee-Smith,ann@x.io,3,2024-01-15,1.00,EUR\n"
                                          "2,Bo,Li,b@x.io,2,2024-01-11,5.50,aud\n"
                                          "3,Cy,Ng,,4,2024-01-16,7,JPY\n"}
    ends = []
    for name, engines in (("mixed", ("duckdb", "spark")), ("duck", ("duckdb", "duckdb"))):
        s = settings.model_copy(update={"home": tmp_path / name})
        lake = Lake(s.lake_uri)
        for (day, text), engine in zip(days.items(), engines, strict=True):
            bronze.land(lake, [write_file(tmp_path / name / "in" / f"{day}.csv", text)], day)
            assert run_pipeline(s.model_copy(update={"engine": engine})).status == "succeeded"
        with serving.connect(s) as db:
            ends.append((db.summary(), sorted(map(repr, parquet_rows(lake, "gold")))))
    assert ends[0] == ends[1]
