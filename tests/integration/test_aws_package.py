"""`purchases aws package`: the deployment artifacts, built for real (pip and the package
registry), twice from one source snapshot to prove the bytes reproducible; the Lambda zip is
imported by a Python 3.12 that sees nothing but the zip, and its upsert serves batches the
Glue job committed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import HEADER, Harness
from purchases.aws import asl, glue_job, package
from purchases.aws.package import Package
from purchases.bronze import land

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ["glue_job.py", "lambda.zip", "manifest.json", "purchases-{v}-py3-none-any.whl",
             "statemachine.asl.json"]


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Package, Package]:
    """Two builds of one snapshot of the source (others may edit the tree meanwhile), each
    into its own folder; the second into a folder that already holds a first build."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    first = package.build(tmp / "one", source=source)
    # "two" holds an earlier build (every artifact's name, other bytes) and an older
    # release's wheel; the second build must replace all of it to equal the first.
    (tmp / "two").mkdir()
    for artifact in first.out.iterdir():
        (tmp / "two" / artifact.name).write_bytes(b"an earlier build of " + artifact.name.encode())
    (tmp / "two" / "purchases-0.0.1-py3-none-any.whl").write_bytes(b"an older build")
    second = package.build(tmp / "two", source=source)
    return first, second


def test_the_artifacts_and_their_manifest(built: tuple[Package, Package]) -> None:
    first, _ = built
    version = _version()
    names = sorted(n.format(v=version) for n in ARTIFACTS)
    assert sorted(p.name for p in first.out.iterdir()) == names
    manifest = json.loads((first.out / "manifest.json").read_text())
    wheel = f"purchases-{version}-py3-none-any.whl"
    assert manifest["version"] == version and manifest["wheel"] == wheel
    assert manifest["files"] == {
        n: hashlib.sha256((first.out / n).read_bytes()).hexdigest()
        for n in names if n != "manifest.json"}
    assert (first.out / "statemachine.asl.json").read_text() == asl.render(asl.to_asl())
    script = Path(glue_job.__file__).with_name("glue_script.py")
    assert (first.out / "glue_job.py").read_bytes() == script.read_bytes()
    with zipfile.ZipFile(first.out / wheel) as whl:
        assert "purchases/aws/glue_job.py" in whl.namelist()
        metadata = whl.read(f"purchases-{version}.dist-info/METADATA").decode()
    assert "Requires-Dist: duckdb" in metadata  # Glue installs the wheel with its dependencies


def test_two_builds_are_byte_identical_and_an_older_wheel_is_gone(
    built: tuple[Package, Package]
) -> None:
    first, second = built
    assert sorted(p.name for p in second.out.iterdir()) == sorted(
        p.name for p in first.out.iterdir())
    for path in sorted(first.out.iterdir()):
        assert path.read_bytes() == (second.out / path.name).read_bytes(), path.name
    assert second.files == first.files


def test_the_lambda_zip_holds_no_engine_and_fits_lambda(built: tuple[Package, Package]) -> None:
    first, _ = built
    with zipfile.ZipFile(first.out / "lambda.zip") as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) and len(set(names)) == len(names)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n
                    or n.startswith("bin/") or n.endswith("direct_url.json")]
        unzipped = sum(i.file_size for i in infos)
        records = {n: zf.read(n).decode() for n in names if n.endswith(".dist-info/RECORD")}
    tops = set(package.top_level(names))
    assert not tops & {"duckdb", "pyspark", "pyarrow", "numpy", "pandas"}
    assert {"purchases", "sqlalchemy", "alembic", "pydantic_core", "pydantic_settings",
            "psycopg", "psycopg_binary", "pymysql", "s3fs", "botocore", "tenacity"} <= tops
    # Built for Lambda's CPython 3.12 on x86_64 Linux, not for this machine.
    assert any(n.startswith("pydantic_core/") and n.endswith(".cpython-312-x86_64-linux-gnu.so")
               for n in names)
    assert not [n for n in names if ".cpython-311-" in n]
    size = (first.out / "lambda.zip").stat().st_size
    assert (first.lambda_zipped, first.lambda_unzipped) == (size, unzipped)
    assert size <= 50 * 2**20 and unzipped <= 250 * 2**20
    # Every RECORD lists exactly files the zip holds (itself included).
    for record, text in records.items():
        listed = [line.split(",")[0] for line in text.splitlines()]
        assert listed and all(os.path.normpath(p) in names for p in listed), record


def _python312() -> str | None:
    """A CPython 3.12 interpreter that runs (a pyenv shim may name one it cannot start)."""
    candidates = [shutil.which("python3.12"),
                  *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    return None


LAMBDA_CHILD = """
import importlib.util, json, os, sys
sys.path.insert(0, sys.argv[1])  # what Lambda does with /var/task
import purchases.aws.lambdas as l
out = {"upsert": l.upsert({"run_id": "exec-1", "step": "upsert", "year": "2024",
                            "month": "01", "day": "15"}, None)}
out["record_failure"] = l.record_failure(
    {"run_id": "exec-z", "step": "upsert", "error": {"Error": "States.Timeout",
                                                    "Cause": "timed out"}}, None)
out["trigger"] = l.trigger({"Event": "s3:TestEvent"}, None)
import botocore.session, psycopg, pymysql, s3fs
out["psycopg"] = psycopg.pq.__impl__
out["engines"] = sorted({"duckdb", "pyspark", "pyarrow"} & set(sys.modules))
out["findable"] = [m for m in ("duckdb", "pyspark", "pyarrow")
                   if importlib.util.find_spec(m) is not None]
# Every module loaded came from the zip or the standard library, nowhere else.
out["outside"] = sorted({name.split(".")[0] for name, m in list(sys.modules.items())
                         if getattr(m, "__file__", None)
                         and not m.__file__.startswith((sys.argv[1], sys.base_prefix))})
print(json.dumps(out, default=str))
"""


def test_python312_imports_the_handlers_from_the_zip_alone_and_serves(
    built: tuple[Package, Package], harness: Harness, tmp_path: Path
) -> None:
    python = _python312()
    if python is None:
        pytest.skip("no Python 3.12 (Lambda's runtime) on this machine: "
                    "apt-get install python3.12 or pyenv install 3.12")
    first, _ = built
    task_root = tmp_path / "var-task"
    with zipfile.ZipFile(first.out / "lambda.zip") as zf:
        zf.extractall(task_root)

    # The lake side, as the Glue jobs leave it (this machine's Python, DuckDB for Spark).
    csv = harness.write("a.csv", HEADER + "1,Ann,Lee,ann@x.io,101,2024-01-10,10.00,AUD\n"
                                          "2,Bob,Ng,bob@x.io,201,2024-01-11,5.50,USD\n")
    (item,) = land(harness.lake, [csv], date(2024, 1, 15))
    s = harness.settings
    for step in ("bronze_to_silver", "silver_to_gold", "gold_to_staging"):
        args = ["glue_job.py", "--step", step, "--run_id", "exec-1", "--year", "2024",
                "--month", "01", "--day", "15", "--engine", "duckdb", "--lake", s.lake_uri,
                "--home", str(s.home), "--database_url", s.db_url]
        assert glue_job.main(args + (["--s3_path", item.path] if step == "bronze_to_silver"
                                     else [])) == 0

    # -I -S: no site-packages, no PYTHON* variables; only the standard library and the zip.
    env = {"PATH": "/usr/bin:/bin", "PURCHASES_LAKE": s.lake_uri,
           "PURCHASES_DATABASE_URL": s.db_url, "PURCHASES_HOME": str(tmp_path / "lambda-home"),
           "PURCHASES_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:1:stateMachine:p",
           "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([python, "-I", "-S", "-c", LAMBDA_CHILD, str(task_root)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["engines"] == [] and child["findable"] == [] and child["outside"] == []
    assert child["psycopg"] == "binary"
    assert child["upsert"] == {"step": "upsert", "run_id": "exec-1", "status": "succeeded",
                               "counts": {"customers_upserted": 2}}
    assert child["record_failure"]["recorded"] is True
    assert child["trigger"]["started"] == []
    assert {k: v["total_spent_aud"] for k, v in harness.summary().items()} == {
        1: Decimal("10.00"), 2: Decimal("8.25")}
    assert harness.lake.read_json("_state/runs/exec-z.json")["error_class"] == "States.Timeout"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "purchases.cli", "aws", "package", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_an_unusable_out_folder_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    done = _cli("--out", str(tmp_path / where), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: --out ") and str(tmp_path / where) in line
    assert (tmp_path / "a-file").read_text() == "x"


def test_pip_failing_is_one_line_with_pips_reason(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / "README.md", source / "README.md")
    text = (ROOT / "pyproject.toml").read_text()
    (source / "pyproject.toml").write_text(
        text.replace(f'version = "{_version()}"', 'version = "not a version"', 1))
    with pytest.raises(package.PackageError) as failed:
        package.build(tmp_path / "out", source=source)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("pip could not build the wheel: ERROR:")
    assert "`project.version` must be pep440" in message and str(source) in message
    assert list((tmp_path / "out").iterdir()) == []


def test_out_inside_the_source_is_refused(tmp_path: Path) -> None:
    """--out src/purchases/aws would put the Glue script over the module glue_job.py."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    module = source / "src" / "purchases" / "aws" / "glue_job.py"
    before = module.read_bytes()
    with pytest.raises(package.PackageError, match=r"^--out .* is inside the source"):
        package.build(module.parent, source=source)
    assert module.read_bytes() == before
