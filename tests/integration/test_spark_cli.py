"""`PURCHASES_ENGINE=spark purchases run` end to end, as a user runs it (a subprocess, its own
JVM), on generated data: the same results as the default engine.

Only the Spark `run` is a process (that is what is tested: the CLI starting and quieting a
JVM); landing the files, the DuckDB run and reading `runs`/`top`/`rejects` go through the
same CLI in this process (typer's runner), which starts no JVM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_spark_support import spark_installed_or_skip
from typer.testing import CliRunner

from purchases.cli import app
from purchases.generate import generate

pytestmark = [pytest.mark.spark, pytest.mark.slow]

PURCHASES = str(Path(sys.executable).with_name("purchases"))


@pytest.fixture(scope="module")
def spark() -> None:
    # The CLI process starts its own JVM: this one needs none, only pyspark and Java.
    spark_installed_or_skip()


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env.update(PURCHASES_HOME=str(home), COLUMNS="200")
    return env


def cli(home: Path, *args: str) -> str:
    """The CLI in this process, as a user's shell would call it; returns stdout."""
    result = CliRunner().invoke(app, list(args), env=clean_env(home), catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def spark_run(home: Path) -> subprocess.CompletedProcess:
    env = clean_env(home) | {"PURCHASES_ENGINE": "spark"}
    proc = subprocess.run([PURCHASES, "run"], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=900)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_purchases_run_with_the_spark_engine(spark: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PURCHASES_")]:
        monkeypatch.delenv(name)
    files = generate(tmp_path / "gen", rows=800, days=2, seed=5)
    results = {}
    for engine in ("spark", "duckdb"):
        home = tmp_path / engine
        for f in files:
            cli(home, "ingest", str(f.path), "--date", str(f.ingestion_date))
        if engine == "spark":
            proc = spark_run(home)
            out = proc.stdout
            # A quiet JVM: no Spark/Hadoop log lines on the user's terminal.
            assert " WARN " not in proc.stderr and "log4j" not in proc.stderr, proc.stderr
        else:
            out = cli(home, "run")
        assert "succeeded" in out and "purchases_2024-01-16_1.csv" in out
        runs = json.loads(cli(home, "runs", "--format", "json"))
        assert [r["status"] for r in runs] == ["succeeded"]
        top = json.loads(cli(home, "top", "-n", "20", "--format", "json"))
        rejects = json.loads(cli(home, "rejects", "--format", "json"))
        results[engine] = (runs[0]["accepted"], runs[0]["rejected"], runs[0]["duplicates"],
                           top, sorted(r["reason"] for r in rejects))
    assert results["spark"] == results["duckdb"]
    accepted, rejected, duplicates, top, _ = results["spark"]
    assert accepted + rejected + duplicates == 1600 and len(top) == 20
