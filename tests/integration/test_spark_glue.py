"""The Glue entry point invoked as the Step Functions definition invokes it: one job run per
step, the same run id, one bronze file named by --s3_path; only that file is processed.

The per-step runs call the entry point (`glue_job.main`) in this process, on the shared
SparkSession (a JVM per step would cost seconds each); `--step all` runs under spark-submit,
as a process, which is what it tests. The interpreter test (test_state_machine.py) runs the
entry point as a process per step.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_spark_support import parquet_rows, spark_or_skip, write_file

from purchases import bronze, commit_log, history, serving
from purchases.config import load_settings
from purchases.pipeline import PIPELINE
from purchases.steps import pending_files
from purchases.storage import Lake

pytestmark = [pytest.mark.spark, pytest.mark.slow]

H = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"
FILES = {
    ("x.csv", date(2024, 1, 15)): H + "1,Ann,Lee,ann@x.io,1,2024-01-10,10.00,USD\n"
                                      "2,Bo,Li,bo@x.io,2,2024-01-11,5.00,AUD\n2,bad\n",
    ("y.csv", date(2024, 1, 15)): H + "3,Cy,Ng,cy@x.io,3,2024-01-12,7.00,EUR\n",
    ("z.csv", date(2024, 1, 16)): H + "4,Di,Wu,di@x.io,4,2024-01-13,1.00,GBP\n",
}


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_or_skip()


@pytest.fixture
def lake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in [k for k in os.environ if k.startswith("PURCHASES_")]:
        monkeypatch.delenv(name)  # the job's settings come from its arguments alone
    lake = Lake(str(tmp_path / "lake"))
    for (name, day), text in FILES.items():
        bronze.land(lake, [write_file(tmp_path / "in" / str(day) / name, text)], day)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    db = f"sqlite:///{tmp_path / 'serving.db'}"
    return {"lake": lake, "env": env, "db": db, "home": tmp_path / "home", "tmp": tmp_path}


def glue(ctx: dict[str, Any], *args: str, launcher: list[str] | None = None) -> dict[str, Any]:
    """One job run: in this process (glue_job.main), or as a process under `launcher`."""
    common = ["--lake", ctx["lake"].uri, "--database_url", ctx["db"], "--home", str(ctx["home"])]
    if launcher is None:
        from purchases.aws import glue_job

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = glue_job.main(["glue_job.py", *args, *common])
        assert code == 0, (args, out.getvalue(), err.getvalue())
        assert "Traceback" not in err.getvalue()
        return json.loads(out.getvalue().strip().splitlines()[-1])
    cmd = [*launcher, *args, *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ctx["env"], timeout=600,
                          cwd=ctx["tmp"])
    assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_step_functions_style_invocation_processes_exactly_that_file(
        spark: Any, lake_home: dict[str, Any]) -> None:
    lake = lake_home["lake"]
    s3_path = lake.url("bronze/year=2024/month=01/day=15/x.csv")
    date_args = ["--year", "2024", "--month", "1", "--day", "15"]
    summaries = []
    for task in PIPELINE:  # as the rendered state machine: Glue job per step, its Parameters
        args = ["--JOB_NAME", f"purchases-{task.name}", "--run_id", "exec-0001", *date_args]
        if "s3_path" in task.parameters:
            args += ["--s3_path", s3_path]
        summaries.append(glue(lake_home, *args))
    assert [s["step"] for s in summaries] == [t.name for t in PIPELINE]
    assert summaries[0]["files"] == ["bronze/year=2024/month=01/day=15/x.csv"]
    assert summaries[0]["counts"]["rows_in"] == 3 and summaries[0]["counts"]["accepted"] == 2
    assert summaries[1]["counts"]["customers_changed"] == 2

    commits = commit_log.load_commits(lake)
    assert [[f.path for f in c.files] for c in commits] == [
        ["bronze/year=2024/month=01/day=15/x.csv"]]
    assert {r["source_file"] for r in parquet_rows(lake, "silver")} == {
        "bronze/year=2024/month=01/day=15/x.csv"}
    assert [r["reason"] for r in parquet_rows(lake, "quarantine")] == ["malformed_row"]
    pending = {o.path for o in pending_files(lake, commits, None)}
    assert pending == {"bronze/year=2024/month=01/day=15/y.csv",
                       "bronze/year=2024/month=01/day=16/z.csv"}  # untouched
    assert lake.list_files(commit_log.RUNS_STAGING_DIR) == []

    settings = load_settings(home=lake_home["home"], lake=lake.uri,
                             database_url=lake_home["db"])
    with serving.connect(settings) as db:
        summary = {r["customer_id"]: str(r["total_spent_aud"]) for r in db.summary()}
    assert summary == {1: "15.00", 2: "5.00"}

    record = history.load(lake, "exec-0001")
    assert record is not None and record.trigger == "glue" and record.status == "succeeded"
    assert [s.status for s in record.steps] == ["succeeded"] * len(PIPELINE)
    assert record.files[0]["accepted"] == 2

    # The same execution input again (a Step Functions retry, a duplicate event): a no-op.
    again = glue(lake_home, "--step", "bronze_to_silver", "--run_id", "exec-0002", *date_args,
                 "--s3_path", s3_path)
    assert again["files"] == []
    glue(lake_home, "--step", "silver_to_gold", "--run_id", "exec-0002", *date_args)
    assert len(commit_log.load_commits(lake)) == 1


def test_all_steps_in_one_job_run_with_spark_submit(spark: Any, lake_home: dict[str, Any]
                                                    ) -> None:
    """`--step all` runs the local orchestrator for that one file; spark-submit runs the job."""
    lake = lake_home["lake"]
    spark_submit = Path(sys.executable).with_name("spark-submit")
    if not spark_submit.exists():
        pytest.skip("spark-submit is not installed next to the interpreter")
    import purchases.aws.glue_job as job

    out = glue(lake_home, "--JOB_NAME", "purchases-all", "--s3_path",
               "bronze/year=2024/month=01/day=16/z.csv", "--year", "2024", "--month", "01",
               "--day", "16",
               launcher=[str(spark_submit), "--master", "local[1]", "--driver-memory", "512m",
                         "--conf", "spark.ui.enabled=false", job.__file__])
    assert out["step"] == "all" and out["status"] == "succeeded"
    assert out["files"] == ["bronze/year=2024/month=01/day=16/z.csv"]
    commits = commit_log.load_commits(lake)
    assert [[f.path for f in c.files] for c in commits] == [
        ["bronze/year=2024/month=01/day=16/z.csv"]]
    assert history.load(lake, out["run_id"]).trigger == "glue"
    pending = {o.path for o in pending_files(lake, commits, None)}
    assert pending == {"bronze/year=2024/month=01/day=15/x.csv",
                       "bronze/year=2024/month=01/day=15/y.csv"}
