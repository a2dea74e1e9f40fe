"""Shared fixtures: isolated settings per test, and service probes that skip with a reason
(or fail, when PURCHASES_REQUIRE_SERVICES=1 as in CI)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
            "PURCHASES_REQUIRE_SERVICES",
            "PURCHASES_TEST_POSTGRES_URL",
            "PURCHASES_TEST_MYSQL_URL",
        ):
            monkeypatch.delenv(key)
    return load_settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require(_port_open("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a throw-away PostgreSQL database, dropped after the test."""
    import sqlalchemy as sa

    name = unique_name("purchases_t")
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as con:
            con.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    require(_port_open("127.0.0.1", 3306), "MariaDB/MySQL is not running on 127.0.0.1:3306")
    return MYSQL_URL


# --- one throw-away database per serving dialect (the serving suite runs on each) ------------

TEST_DATABASES_ENV = "PURCHASES_TEST_DATABASES"
"""Comma-separated serving dialects the db_url fixture runs on (default: every registered)."""
SERVER_URL_FIXTURES = {"postgresql": "postgres_url", "mysql": "mysql_url"}
"""The admin URL of each dialect's test server; another dialect's comes from
PURCHASES_TEST_<NAME>_URL."""
DIALECT_MARKS = {"postgresql": pytest.mark.postgres, "mysql": pytest.mark.mysql}


def serving_database_names() -> list[str]:
    """The registered serving dialects, filtered by PURCHASES_TEST_DATABASES (a name a dialect
    also serves, e.g. mariadb, selects that dialect)."""
    from purchases.serving import dialects

    names = dialects.names()
    wanted = [n.strip() for n in os.environ.get(TEST_DATABASES_ENV, "").split(",") if n.strip()]
    unknown = [n for n in wanted if dialects.find(n) is None]
    if unknown:
        pytest.exit(f"{TEST_DATABASES_ENV}: {', '.join(unknown)} is not a registered serving "
                    f"dialect (registered: {', '.join(names)})", returncode=4)
    chosen = {dialects.find(n).name for n in wanted}
    return [n for n in names if not wanted or n in chosen]


def database_params(*, servers_only: bool = False) -> list:
    """pytest params of the dialects to test (marked for their service)."""
    from purchases.serving import dialects

    names = [n for n in serving_database_names()
             if not (servers_only and dialects.find(n).embedded)]
    return [pytest.param(n, id=n, marks=DIALECT_MARKS.get(n, ())) for n in names]


def _server_admin_url(request: pytest.FixtureRequest, name: str) -> str:
    if name in SERVER_URL_FIXTURES:
        return request.getfixturevalue(SERVER_URL_FIXTURES[name])
    env = f"PURCHASES_TEST_{name.upper()}_URL"
    require(bool(os.environ.get(env)), f"no {name} server to test on: set {env}")
    return os.environ[env]


@contextmanager
def throwaway_database(request: pytest.FixtureRequest, name: str, where: Path) -> Iterator[str]:
    """A fresh, empty database of serving dialect `name`, dropped afterwards: a file under
    `where` for an embedded dialect, else a database on its test server. Yields its URL."""
    import sqlalchemy as sa

    from purchases.serving import dialects

    dialect = dialects.find(name)
    assert dialect is not None, f"no serving dialect {name!r}"
    if dialect.embedded:
        path = where / f"serving-{uuid.uuid4().hex[:8]}.db"
        yield sa.URL.create(name, database=str(path)).render_as_string(hide_password=False)
        return
    admin_url = _server_admin_url(request, name)
    db = unique_name("purchases_t")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.exec_driver_sql(f"CREATE DATABASE {db}")
        yield sa.make_url(admin_url).set(database=db).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
        with admin.connect() as con:
            con.exec_driver_sql(f"DROP DATABASE IF EXISTS {db}{force}")
        admin.dispose()


@pytest.fixture(params=database_params())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of each registered serving dialect in turn
    (PURCHASES_TEST_DATABASES=sqlite,postgresql narrows the list)."""
    with throwaway_database(request, request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=database_params(servers_only=True))
def server_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database on each database server (those whose sessions can be killed)."""
    with throwaway_database(request, request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def java_available() -> bool:
    ok = shutil.which("java") is not None
    if ok:
        ok = subprocess.run(["java", "-version"], capture_output=True).returncode == 0
    return ok


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3/Step Functions/Secrets Manager/Glue API: moto's server on 127.0.0.1."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # pragma: no cover - moto is in the dev extra
        require(False, "moto[server] is not installed (dev extra)")
        raise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS settings pointed at moto (no product variable for the endpoint)."""
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:  # pragma: no cover
        pass
    return moto_endpoint


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# --- a harness to land CSV text, run the pipeline and read every layer back ----------------


def write_file(path: Path, content: str | bytes) -> Path:
    """Write test input; a .gz name gets gzip-compressed bytes (deterministic: mtime=0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        import gzip

        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(gzip.compress(data, mtime=0))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


class Harness:
    """Drives the real pipeline (DuckDB, Parquet, SQLite) for one test's home folder."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)

    @property
    def lake(self):
        from purchases.storage import Lake

        return Lake(self.settings.lake_uri)

    def write(self, name: str, content: str | bytes) -> Path:
        return write_file(self.inbox / name, content)

    def land(self, name: str, content: str | bytes, day: str = "2024-01-15") -> Path:
        from datetime import date

        from purchases.bronze import land

        path = self.write(name, content)
        land(self.lake, [path], date.fromisoformat(day))
        return path

    def run(self):
        from purchases.orchestrator import run_pipeline

        return run_pipeline(self.settings)

    def table(self, layer: str) -> list[dict]:
        """Rows of a layer as readers see it: the files the commit log lists as published."""
        import pyarrow.parquet as pq

        from purchases import commit_log

        lake = self.lake
        rows: list[dict] = []
        for rel in commit_log.published_files(commit_log.load_commits(lake), layer):
            with lake.open(rel) as fh:
                rows.extend(pq.read_table(fh).to_pylist())
        return rows

    def silver(self) -> list[dict]:
        return sorted(self.table("silver"), key=lambda r: r["purchase_id"])

    def quarantine(self) -> list[dict]:
        return self.table("quarantine")

    def summary(self) -> dict[int, dict]:
        from purchases import serving

        with serving.connect(self.settings) as db:
            return {r["customer_id"]: r for r in db.summary()}


HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"


@pytest.fixture
def harness(settings: Settings, tmp_path: Path) -> Harness:
    return Harness(settings, tmp_path)
