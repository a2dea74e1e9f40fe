"""`PURCHASES_ENGINE=spark purchases run` end to end, as a user runs it (a subprocess), on
generated data: the same results as the default engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_spark_support import spark_or_skip

from purchases.generate import generate

pytestmark = [pytest.mark.spark, pytest.mark.slow]

PURCHASES = str(Path(sys.executable).with_name("purchases"))


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_or_skip()  # the CLI starts its own JVM; this checks that it can


def cli(home: Path, *args: str, engine: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env.update(PURCHASES_HOME=str(home), COLUMNS="200")
    if engine:
        env["PURCHASES_ENGINE"] = engine
    proc = subprocess.run([PURCHASES, *args], capture_output=True, text=True, env=env,
                          cwd=home.parent, timeout=900)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_purchases_run_with_the_spark_engine(spark: Any, tmp_path: Path) -> None:
    files = generate(tmp_path / "gen", rows=800, days=2, seed=5)
    results = {}
    for engine in ("spark", None):
        home = tmp_path / (engine or "duckdb")
        for f in files:
            cli(home, "ingest", str(f.path), "--date", str(f.ingestion_date))
        out = cli(home, "run", engine=engine)
        assert "succeeded" in out.stdout and "purchases_2024-01-16_1.csv" in out.stdout
        if engine == "spark":
            # A quiet JVM: no Spark/Hadoop log lines on the user's terminal.
            assert " WARN " not in out.stderr and "log4j" not in out.stderr, out.stderr
        runs = json.loads(cli(home, "runs", "--format", "json").stdout)
        assert [r["status"] for r in runs] == ["succeeded"]
        top = json.loads(cli(home, "top", "-n", "20", "--format", "json").stdout)
        rejects = json.loads(cli(home, "rejects", "--format", "json").stdout)
        results[engine or "duckdb"] = (runs[0]["accepted"], runs[0]["rejected"],
                                       runs[0]["duplicates"], top,
                                       sorted(r["reason"] for r in rejects))
    assert results["spark"] == results["duckdb"]
    accepted, rejected, duplicates, top, _ = results["spark"]
    assert accepted + rejected + duplicates == 1600 and len(top) == 20
