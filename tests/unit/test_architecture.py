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
