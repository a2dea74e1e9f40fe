"""Glue Data Catalog (issue 9 item 6, acceptance 5): an s3:// lake in moto's server, its
tables and partitions in moto's Glue, checked against the commit log."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import HEADER, Harness, unique_name, write_file

from purchases import commit_log
from purchases.aws import glue_catalog
from purchases.cli import main
from purchases.contract import GOLD_COLUMNS, QUARANTINE_COLUMNS, SILVER_COLUMNS
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.orchestrator import reprocess_pipeline
from purchases.storage import Lake

pytestmark = pytest.mark.s3

FX = "currency,rate_to_aud,valid_from\nAUD,1.00000000,1970-01-01\nUSD,1.50000000,1970-01-01\n"
DAY1 = HEADER + (
    "1,Ann,Lee,ann@x.io,100,2024-01-10,10.50,AUD\n"
    "2,Bob,Ng,bob@x.io,101,2024-01-11,3.3333,USD\n"
    "3,Cy,Oh,cy@x.io,102,2024-01-12,1.00,XYZ\n"  # unknown_currency until XYZ gets a rate
)
DAY2 = HEADER + ("1,Ann,Lee,ann@x.io,103,2024-01-15,2.00,AUD\n"
                 "4,Di,Po,di@x.io,104,2024-01-16,-1.00,AUD\n")  # negative_amount

SILVER_TYPES = {
    "purchase_id": "bigint", "customer_id": "bigint", "first_name": "string",
    "last_name": "string", "full_name": "string", "email": "string", "purchase_date": "date",
    "amount": "decimal(18,4)", "currency": "string", "rate_to_aud": "decimal(18,8)",
    "amount_aud": "decimal(18,2)", "source_file": "string",
}
GOLD_TYPES = {
    "customer_id": "bigint", "full_name": "string", "email": "string",
    "total_spent_aud": "decimal(18,2)", "first_purchase_date": "date",
    "last_purchase_date": "date", "purchase_count": "bigint", "batch_id": "bigint",
}


@pytest.fixture
def lake_h(aws_env: str, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[Harness, Any]:
    """A harness on an s3:// lake in a fresh moto bucket, with a fresh Glue database; the
    same settings in the environment, for the CLI."""
    import boto3

    bucket = unique_name("lake").replace("_", "-")
    boto3.client("s3").create_bucket(Bucket=bucket)
    fx = write_file(tmp_path / "fx.csv", FX)
    s = settings.model_copy(update={"lake": f"s3://{bucket}/lake", "fx_rates": fx,
                                    "glue_database": unique_name("purchases")})
    for key, value in {"PURCHASES_HOME": str(s.home), "PURCHASES_LAKE": s.lake,
                       "PURCHASES_FX_RATES": str(fx),
                       "PURCHASES_GLUE_DATABASE": s.glue_database}.items():
        monkeypatch.setenv(key, value)
    return Harness(s, tmp_path), boto3.client("glue")


def two_runs(h: Harness) -> None:
    h.land("a.csv", DAY1, day="2024-01-15")
    assert h.run().status == "succeeded"
    h.land("b.csv", DAY2, day="2024-01-16")
    assert h.run().status == "succeeded"


def snapshot(glue: Any, db: str) -> dict[str, Any]:
    """The catalog as Athena sees it: per table, its columns, keys, formats and partitions."""
    out: dict[str, Any] = {}
    for t in glue.get_tables(DatabaseName=db)["TableList"]:
        sd = t["StorageDescriptor"]
        parts = [p for page in glue.get_paginator("get_partitions").paginate(
            DatabaseName=db, TableName=t["Name"]) for p in page["Partitions"]]
        out[t["Name"]] = {
            "columns": {c["Name"]: c["Type"] for c in sd["Columns"]},
            "keys": [(k["Name"], k["Type"]) for k in t["PartitionKeys"]],
            "location": sd["Location"],
            "formats": (sd["InputFormat"], sd["OutputFormat"],
                        sd["SerdeInfo"]["SerializationLibrary"]),
            "partitions": {tuple(p["Values"]): p["StorageDescriptor"]["Location"]
                           for p in parts},
        }
    return out


def exposed_files(lake: Lake, partitions: dict[tuple[str, ...], str]) -> set[str]:
    """Every object Athena reads through the partitions: all objects under their locations."""
    files = set()
    for location in partitions.values():
        assert location.endswith("/")
        files.update(f"s3://{found}" for found in lake.fs.find(location.removeprefix("s3://")))
    return files


def published(lake: Lake, layer: str) -> set[str]:
    return {lake.url(p) for p in commit_log.published_files(commit_log.load_commits(lake), layer)}


def test_two_runs_register_partitions_with_the_contract_types(lake_h: tuple[Harness, Any]
                                                               ) -> None:
    h, glue = lake_h
    db = h.settings.glue_database
    two_runs(h)
    assert db in {d["Name"] for d in glue.get_databases()["DatabaseList"]}
    cat = snapshot(glue, db)
    assert set(cat) == {"silver", "quarantine", "gold"}
    lake = h.lake
    assert cat["silver"]["columns"] == SILVER_TYPES
    assert cat["silver"]["keys"] == [("ingestion_date", "date"), ("batch", "bigint")]
    assert cat["quarantine"]["columns"] == {
        c: ("bigint" if c == "line_number" else "string")
        for c in QUARANTINE_COLUMNS if c != "ingestion_date"}
    assert cat["quarantine"]["keys"] == [("ingestion_date", "date"), ("batch", "bigint")]
    assert cat["gold"]["columns"] == GOLD_TYPES
    assert cat["gold"]["keys"] == [("year", "bigint"), ("month", "bigint"), ("day", "bigint"),
                                   ("batch", "bigint")]
    # Every contract column is a column or a partition key of the same type.
    for name, cols in (("silver", SILVER_COLUMNS), ("gold", GOLD_COLUMNS)):
        assert set(cols) <= set(cat[name]["columns"]) | {k for k, _ in cat[name]["keys"]}
    for t in cat.values():
        assert t["formats"] == (glue_catalog.PARQUET_INPUT, glue_catalog.PARQUET_OUTPUT,
                                glue_catalog.PARQUET_SERDE)
    assert cat["silver"]["location"] == lake.url("silver") + "/"
    assert set(cat["silver"]["partitions"]) == {("2024-01-15", "1"), ("2024-01-16", "2")}
    assert set(cat["quarantine"]["partitions"]) == {("2024-01-15", "1"), ("2024-01-16", "2")}
    assert set(cat["gold"]["partitions"]) == {("2024", "1", "15", "1"), ("2024", "1", "16", "2")}
    assert cat["silver"]["partitions"][("2024-01-16", "2")] == (
        lake.url("silver/ingestion_date=2024-01-16/batch=000000000002") + "/")
    # What Athena reads is exactly what the commit log publishes (what `query` reads).
    for layer in ("silver", "quarantine", "gold"):
        assert exposed_files(lake, cat[layer]["partitions"]) == published(lake, layer), layer


def test_sync_recreates_a_deleted_catalog_and_twice_is_a_no_op(
        lake_h: tuple[Harness, Any], capsys: pytest.CaptureFixture[str]) -> None:
    h, glue = lake_h
    db = h.settings.glue_database
    h.land("a.csv", DAY1, day="2024-01-15")
    assert h.run().status == "succeeded"
    before = snapshot(glue, db)
    for t in before:
        glue.delete_table(DatabaseName=db, Name=t)
    glue.delete_database(Name=db)
    capsys.readouterr()
    assert main(["aws", "catalog", "sync"]) in (None, 0)
    lines = capsys.readouterr().out.splitlines()
    assert f"{db}.silver: 1 partition registered (1 added, 0 removed)" in lines
    assert f"{db}.gold: 1 partition registered (1 added, 0 removed)" in lines
    assert snapshot(glue, db) == before
    assert main(["aws", "catalog", "sync"]) in (None, 0)
    lines = capsys.readouterr().out.splitlines()
    assert f"{db}.quarantine: 1 partition registered (0 added, 0 removed)" in lines
    assert snapshot(glue, db) == before
    # A stray partition (registered by hand, or of a file no commit lists) is dropped.
    glue.batch_create_partition(DatabaseName=db, TableName="silver", PartitionInputList=[
        {"Values": ["2024-02-01", "9"], "StorageDescriptor": {"Location": "s3://x/y/"}}])
    assert main(["aws", "catalog", "sync"]) in (None, 0)
    assert f"{db}.silver: 1 partition registered (0 added, 1 removed)" in (
        capsys.readouterr().out.splitlines())
    assert snapshot(glue, db) == before


def test_a_batch_still_being_moved_is_not_exposed(lake_h: tuple[Harness, Any]) -> None:
    """S3 moves copy then delete: while a staged copy remains, the batch is not registered."""
    h, glue = lake_h
    db = h.settings.glue_database
    h.land("a.csv", DAY1, day="2024-01-15")
    no_catalog = h.settings.model_copy(update={"glue_database": None})
    assert Harness(no_catalog, h.inbox.parent).run().status == "succeeded"
    lake = h.lake
    [commit] = commit_log.load_commits(lake)
    src, dst = commit.moves[-1]
    lake.fs.copy(lake.full(dst), lake.full(src))  # copied, not yet deleted: mid-move
    glue_catalog.sync(h.settings, lake)
    assert all(not t["partitions"] for t in snapshot(glue, db).values())
    lake.remove(src)  # the move completes
    glue_catalog.sync(h.settings, lake)
    cat = snapshot(glue, db)
    assert set(cat["silver"]["partitions"]) == {("2024-01-15", "1")}
    for layer in ("silver", "quarantine", "gold"):
        assert exposed_files(lake, cat[layer]["partitions"]) == published(lake, layer), layer


def test_reprocess_replaces_the_superseded_quarantine_partition(
        lake_h: tuple[Harness, Any]) -> None:
    h, glue = lake_h
    db = h.settings.glue_database
    h.land("a.csv", DAY1, day="2024-01-15")
    assert h.run().status == "succeeded"
    assert ("2024-01-15", "1") in snapshot(glue, db)["quarantine"]["partitions"]
    write_file(h.settings.fx_rates, FX + "XYZ,0.50000000,1970-01-01\n")
    record = reprocess_pipeline(h.settings, ["unknown_currency"], None)
    assert record.status == "succeeded", record
    lake = h.lake
    commits = commit_log.load_commits(lake)
    assert [c.batch_id for c in commits] == [1, 2]
    assert commits[-1].superseded  # batch 1's quarantine file for 2024-01-15
    cat = snapshot(glue, db)
    # Batch 1's quarantine partition is gone; the reprocessed row is in silver batch 2 once.
    assert ("2024-01-15", "1") not in cat["quarantine"]["partitions"]
    assert ("2024-01-15", "2") in cat["silver"]["partitions"]
    for layer in ("silver", "quarantine", "gold"):
        assert exposed_files(lake, cat[layer]["partitions"]) == published(lake, layer), layer
    # A sync afterwards agrees with what the hook left.
    glue_catalog.sync(h.settings, lake)
    assert snapshot(glue, db) == cat


def test_a_registration_lost_at_commit_is_caught_up_by_the_next(
        lake_h: tuple[Harness, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Glue down when batch 1 commits: the batch stands (the catalog is derived), and batch
    2's registration also registers batch 1."""
    h, glue = lake_h
    db = h.settings.glue_database
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    h.land("a.csv", DAY1, day="2024-01-15")
    assert h.run().status == "succeeded"  # silver_to_gold's retry finds its batch published
    monkeypatch.delenv("AWS_ENDPOINT_URL_GLUE")
    assert db not in {d["Name"] for d in glue.get_databases()["DatabaseList"]}
    h.land("b.csv", DAY2, day="2024-01-16")
    assert h.run().status == "succeeded"
    cat = snapshot(glue, db)
    assert set(cat["silver"]["partitions"]) == {("2024-01-15", "1"), ("2024-01-16", "2")}
    lake = h.lake
    for layer in ("silver", "quarantine", "gold"):
        assert exposed_files(lake, cat[layer]["partitions"]) == published(lake, layer), layer


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_glue_unreachable_is_one_transient_line(lake_h: tuple[Harness, Any],
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Glue's endpoint refusing connections: one line, exit 1, no botocore traceback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(SystemExit) as exit_:
        main(["aws", "catalog", "sync"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("Error: AWS Glue reading database") and "cannot reach" in err, err


def test_glue_error_codes_become_transient_or_permanent(lake_h: tuple[Harness, Any]) -> None:
    from botocore.exceptions import ClientError

    _, glue = lake_h
    with pytest.raises(ClientError) as refused:  # a real refusal from moto's Glue
        glue.get_table(DatabaseName=unique_name("nodb"), Name="silver")
    permanent = glue_catalog.translate(refused.value, "reading table x.silver")
    assert isinstance(permanent, PermanentError) and not isinstance(permanent, TransientError)
    assert str(permanent).startswith("AWS Glue EntityNotFoundException reading table x.silver")
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchCreatePartition")
    assert isinstance(glue_catalog.translate(throttled, "registering"), TransientError)
    failed = ClientError({"Error": {"Code": "InternalError"},
                          "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetPartitions")
    assert isinstance(glue_catalog.translate(failed, "listing"), TransientError)
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"},
                          "ResponseMetadata": {"HTTPStatusCode": 400}}, "CreateTable")
    message = str(glue_catalog.translate(denied, "creating table x.silver"))
    assert "AccessDeniedException" in message and "glue:CreateTable" in message


def test_sync_of_a_local_lake_names_the_lake_not_the_database_setting(
        settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """With --database given, the error named PURCHASES_GLUE_DATABASE, which was never set."""
    with pytest.raises(SystemExit) as exit_:
        main(["--home", str(settings.home), "aws", "catalog", "sync", "--database", "foo"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"Error: the Glue catalog registers a lake on S3, not {settings.lake_uri}: set --lake / "
        "PURCHASES_LAKE to s3://bucket/prefix\n")


def test_sync_takes_an_s3a_lake_as_runs_do(settings: Any) -> None:
    """The check before the lake opens compared the text with s3:// only, and refused the
    s3a:// lake that each run's registration takes."""
    for lake in ("s3://b/p", "s3a://b/p", "S3://b/p"):
        glue_catalog.require_catalog(settings.model_copy(
            update={"glue_database": "db", "lake": lake}))
    with pytest.raises(ConfigError, match="registers a lake on S3"):
        glue_catalog.require_catalog(settings.model_copy(update={"glue_database": "db"}))


def test_a_local_lake_with_a_glue_database_is_a_config_error(settings: Any) -> None:
    s = settings.model_copy(update={"glue_database": "purchases"})
    with pytest.raises(ConfigError, match="needs a lake on S3"):
        glue_catalog.register_batch(s, Lake(s.lake_uri), None)  # type: ignore[arg-type]
    off = settings.model_copy(update={"glue_database": None})
    glue_catalog.register_batch(off, Lake(off.lake_uri), None)  # type: ignore[arg-type]


def test_a_bad_database_name_is_a_one_line_setting_error(
        settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["aws", "catalog", "sync", "--database", "My-DB"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: invalid --database: ") and (
        "lower-case letters" in err), err
