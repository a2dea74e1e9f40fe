"""The Glue job's argument handling (no Spark, no AWS): Glue-style arguments, the step, the
run date, and --s3_path as a URL in the lake or a lake-relative path."""

from __future__ import annotations

import importlib.util
from datetime import date

import pytest

from purchases.aws import glue_job
from purchases.errors import InputError
from purchases.pipeline import PIPELINE
from purchases.storage import Lake

FILE = "bronze/year=2024/month=01/day=15/x.csv"


def test_glue_style_arguments_parse_and_unknown_ones_are_ignored() -> None:
    args = glue_job.parse_args([
        "glue_job.py", "--JOB_NAME", "purchases-bronze_to_silver", "--year", "2024",
        "--month", "1", "--day", "15", "--s3_path", f"s3://b/lake/{FILE}", "--run_id", "r1",
        "--TempDir", "s3://tmp/", "--job-bookmark-option", "job-bookmark-disable",
    ])
    assert args["JOB_NAME"] == "purchases-bronze_to_silver"
    assert (args["year"], args["month"], args["day"]) == ("2024", "1", "15")
    assert args["s3_path"] == f"s3://b/lake/{FILE}" and args["run_id"] == "r1"
    assert args["step"] is None and args["lake"] is None


def test_every_declared_glue_task_is_a_step() -> None:
    assert set(glue_job.STEPS) == {*(t.name for t in PIPELINE), "all"}
    assert {t.name for t in PIPELINE} <= set(glue_job.STEPS)


@pytest.mark.parametrize(("args", "step"), [
    ({"step": "silver_to_gold"}, "silver_to_gold"),
    ({"JOB_NAME": "purchases-gold_to_staging"}, "gold_to_staging"),
    ({"JOB_NAME": "my-co-purchases-upsert"}, "upsert"),
    ({"step": "all", "JOB_NAME": "purchases-upsert"}, "all"),
])
def test_step_from_argument_or_job_name(args: dict, step: str) -> None:
    assert glue_job.resolve_step(args) == step


@pytest.mark.parametrize("args", [{}, {"step": "bronze"}, {"JOB_NAME": "purchases"}])
def test_unknown_step_is_an_input_error(args: dict) -> None:
    with pytest.raises(InputError, match="--step"):
        glue_job.resolve_step(args)


def test_run_date() -> None:
    assert glue_job.run_date({"year": "2024", "month": "1", "day": "15"}) == date(2024, 1, 15)
    assert glue_job.run_date({}) is None
    with pytest.raises(InputError):
        glue_job.run_date({"year": "2024", "month": "2", "day": "30"})
    with pytest.raises(InputError):
        glue_job.run_date({"year": "2024"})


def test_s3_path_of_a_local_lake(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    absolute = str(tmp_path / "lake" / FILE)
    assert glue_job.lake_path(lake, absolute) == FILE
    assert glue_job.lake_path(lake, "file://" + absolute) == FILE
    assert glue_job.lake_path(lake, FILE) == FILE
    assert glue_job.lake_path(lake, "bronze/2024/01/15/x.csv") == "bronze/2024/01/15/x.csv"
    with pytest.raises(InputError, match="not inside the lake"):
        glue_job.lake_path(lake, str(tmp_path / "elsewhere" / FILE))
    with pytest.raises(InputError, match="not a bronze file"):
        glue_job.lake_path(lake, "silver/x.parquet")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is None, reason="s3fs not installed")
@pytest.mark.s3
def test_s3_path_of_an_s3_lake(aws_env: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="glue-args-bucket")  # a lake checks its bucket
    lake = Lake("s3://glue-args-bucket/lake")
    assert glue_job.lake_path(lake, f"s3://glue-args-bucket/lake/{FILE}") == FILE
    assert glue_job.lake_path(lake, f"s3a://glue-args-bucket/lake/{FILE}") == FILE
    with pytest.raises(InputError, match="not inside the lake"):
        glue_job.lake_path(lake, f"s3://other/lake/{FILE}")


def test_derived_run_id_is_stable_per_execution_input() -> None:
    a = glue_job.derived_run_id(date(2024, 1, 15), FILE)
    assert a == glue_job.derived_run_id(date(2024, 1, 15), FILE)
    assert a != glue_job.derived_run_id(date(2024, 1, 15), FILE.replace("x.csv", "y.csv"))
    assert a.startswith("glue-20240115-")


def test_bad_arguments_exit_1_with_one_line(tmp_path, capsys) -> None:
    code = glue_job.main(["glue_job.py", "--step", "nope", "--lake", str(tmp_path / "lake")])
    assert code == glue_job.EXIT_FAILED
    assert "--step must be one of" in capsys.readouterr().err


def test_s3_path_must_match_the_run_date(tmp_path) -> None:
    code = glue_job.main(["glue_job.py", "--step", "bronze_to_silver", "--lake",
                          str(tmp_path / "lake"), "--year", "2024", "--month", "1",
                          "--day", "16", "--s3_path", FILE, "--home", str(tmp_path)])
    assert code == glue_job.EXIT_FAILED
