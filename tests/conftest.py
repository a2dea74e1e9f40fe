"""Shared fixtures: isolated settings per test, and service probes that skip with a reason
(or fail, when PURCHASES_REQUIRE_SERVICES=1 as in CI)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from purchases.config import Settings, load_settings

REQUIRE_SERVICES = os.environ.get("PURCHASES_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "PURCHASES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PURCHASES_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(available: bool, reason: str) -> None:
    """Skip with a reason where a service is missing; fail instead where CI requires it."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (PURCHASES_REQUIRE_SERVICES=1: required here)")
    pytest.skip(reason)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a fresh home folder (lake + SQLite) under tmp_path; env cleared."""
    for key in list(os.environ):
        if key.startswith("PURCHASES_") and key not in (
            "PURCHASES_REQUIRE_SERVICES", "PURCHASES_TEST_POSTGRES_URL", "PURCHASES_TEST_MYSQL_URL"
        ):
            monkeypatch.delenv(key)
    return load_settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require(_port_open("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def mysql_url() -> str:
    require(_port_open("127.0.0.1", 3306), "MariaDB/MySQL is not running on 127.0.0.1:3306")
    return MYSQL_URL


@pytest.fixture(scope="session")
def java_available() -> bool:
    ok = shutil.which("java") is not None
    if ok:
        ok = subprocess.run(["java", "-version"], capture_output=True).returncode == 0
    return ok


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
