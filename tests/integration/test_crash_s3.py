"""Crash safety on an `s3://` lake (moto's S3 server): a `purchases run` killed (os._exit, as
kill -9) at a fault point, then run again, ends exactly where a run that was never killed ends.
The local-disk twin, every fault point, is test_crash.py; this file is its own so that the two
halves run on separate test workers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from lakecheck import assert_clean_lake, end_state, purchases

from purchases import bronze, commit_log
from purchases.config import load_settings
from purchases.engines.duckdb_lake import lake_query
from purchases.faults import KILLED_EXIT_CODE
from purchases.generate import generate
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake

pytestmark = pytest.mark.slow

# A subset: each S3 case costs ~3x a local one, and these cover every step, both sides of the
# commit point, a move half-way through the publication and a small atomic write.
S3_FAULTS = [
    "after_run_start", "after_keys_write", "after_bronze_to_silver", "after_state_write",
    "after_commit_record", "mid_publication:2", "after_publication", "after_commit",
    "inside_upsert", "mid_atomic_write:3",
]


@pytest.fixture(scope="module")
def s3_template(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str
                ) -> Iterator[dict[str, Any]]:
    """template's S3 twin: the lakes are prefixes of one bucket, the homes local folders; the
    reference's end state and silver row count are taken once, here."""
    import boto3
    import s3fs

    from conftest import unique_name

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_REGION": "us-east-1"}.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = unique_name("crash").replace("_", "-")
        boto3.client("s3").create_bucket(Bucket=bucket)
        root = tmp_path_factory.mktemp("crash-s3")
        files = generate(root / "input", rows=600, days=3, bad_ratio=0.03)
        start = f"s3://{bucket}/start"
        lake = Lake(start)
        bronze.land(lake, [files[0].path], files[0].ingestion_date)
        run_pipeline(load_settings(home=root / "start", lake=start))
        for f in files[1:]:
            bronze.land(lake, [f.path], f.ingestion_date)
        reference = _s3_copy({"root": root, "bucket": bucket, "start": start}, "reference")
        run = purchases(reference["home"], "run", PURCHASES_LAKE=reference["lake"])
        assert run.returncode == 0, run.stderr
        mp.setenv("PURCHASES_LAKE", reference["lake"])
        reference["state"] = end_state(reference["home"])
        reference["silver_rows"] = lake_query(
            Lake(reference["lake"]), "SELECT COUNT(*) AS n FROM silver")[0]["n"]
        mp.delenv("PURCHASES_LAKE")
        yield {"root": root, "bucket": bucket, "start": start, "reference": reference}


def _s3_copy(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of the start state: its lake prefix and its home (serving SQLite)."""
    lake = Lake(template["start"])
    target = f"s3://{template['bucket']}/{name}"
    for rel in lake.list_files(""):
        lake.fs.copy(lake.full(rel), f"{template['bucket']}/{name}/{rel}")
    home = template["root"] / name
    shutil.copytree(template["root"] / "start", home)
    return {"home": home, "lake": target}


@pytest.mark.s3
@pytest.mark.parametrize("fault", S3_FAULTS)
def test_killed_run_on_s3_then_rerun_equals_uninterrupted_run(
    s3_template: dict[str, Any], aws_env: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    copy = _s3_copy(s3_template, f"case-{fault.replace(':', '-')}")
    home, lake_uri = copy["home"], copy["lake"]
    monkeypatch.setenv("PURCHASES_LAKE", lake_uri)
    before = lake_query(Lake(lake_uri), "SELECT COUNT(*) AS n FROM silver")[0]["n"]
    killed = purchases(home, "run", PURCHASES_FAULT=fault, PURCHASES_LAKE=lake_uri)
    assert killed.returncode == KILLED_EXIT_CODE, (
        f"fault point {fault} was not reached: {killed.stdout} {killed.stderr}")
    # Between the kill and the re-run, queries see whole batches: the previous state, or
    # (past the commit point) the new batch in full, read from wherever its files are now.
    after = purchases(home, "query", "SELECT COUNT(*) AS n FROM silver", "--format", "json",
                      PURCHASES_LAKE=lake_uri)
    assert after.returncode == 0, after.stderr
    seen = json.loads(after.stdout)[0]["n"]
    ref = s3_template["reference"]
    committed = len(commit_log.load_commits(Lake(lake_uri))) > 1
    assert seen == (ref["silver_rows"] if committed else before)
    rerun = purchases(home, "run", PURCHASES_LAKE=lake_uri)
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(home) == ref["state"]
    assert_clean_lake(home)
