"""The code's shape is checked, not just described: import contracts and no float money."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "purchases"


def test_import_contracts_hold() -> None:
    """Only engine adapters import engines; transforms do no I/O (pyproject [tool.importlinter])."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], capture_output=True, text=True,
                          cwd=SRC.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", proc.stdout), proc.stdout


def test_no_float_types_in_the_package() -> None:
    pattern = re.compile(r"\bfloat\(|\bFLOAT\b|\bDOUBLE\b|DoubleType|FloatType|float64|Float64")
    offenders = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


# A comparison with a database's name: `dialect.name == ...`, `backend != "sqlite"`, `in ("mysql",
# ...)`, `with_variant(..., "sqlite")`.
_DIALECT_BRANCH = re.compile(
    r"""(?:dialect\.name|dialect_name|backend|get_backend_name\(\))\s*(?:==|!=|\bin\b)|"""
    r"""(?:==|!=|\bin\b)\s*\(?\s*["'](?:sqlite|postgresql|mysql|mariadb)["']""")
# The dialect classes are where databases differ; a migration version is frozen history,
# written once in the SQL of the databases it changed.
_MAY_NAME_DATABASES = ("serving/dialects/", "migrations/versions/")


def test_no_dialect_branch_outside_the_serving_dialects() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(_MAY_NAME_DATABASES):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if _DIALECT_BRANCH.search(code):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
