"""No database password ever reaches output or the lake: every CLI command, success and failure.

A role with a password owns a throw-away database; the CLI runs as a user would run it (a
subprocess with PURCHASES_* in the environment). On this machine PostgreSQL trusts
127.0.0.1, so it does not check the password; MariaDB does.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import forked_cli
import pytest
import sqlalchemy as sa

from purchases.generate import generate


@dataclass
class Account:
    url: str  # with the password in it
    url_without_password: str
    url_with_password_parameter: str  # the password as a query parameter (?password=)
    password: str
    missing_db_url: str  # same server and credentials, a database that does not exist


def _pg_account(admin_url: str) -> Iterator[Account]:
    tag = uuid.uuid4().hex[:10]
    role, db, password = f"purchases_u_{tag}", f"purchases_s_{tag}", f"s3cr3t-{tag}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:  # the cleanup also undoes a setup that failed half-way
        with admin.connect() as con:
            con.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            con.exec_driver_sql(f"CREATE DATABASE {db} OWNER {role}")
        yield _account(admin_url, role, db, password)
    finally:
        with admin.connect() as con:
            con.exec_driver_sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            con.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def _mysql_account(admin_url: str) -> Iterator[Account]:
    tag = uuid.uuid4().hex[:10]
    user, db, password = f"pu_{tag}", f"purchases_s_{tag}", f"s3cr3t-{tag}"
    hosts = ("%", "localhost", "127.0.0.1")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:  # the cleanup also undoes a setup that failed half-way
        with admin.connect() as con:
            con.exec_driver_sql(f"CREATE DATABASE {db}")
            for host in hosts:
                con.exec_driver_sql("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
                con.exec_driver_sql(f"GRANT ALL ON {db}.* TO %s@%s", (user, host))
        yield _account(admin_url, user, db, password)
    finally:
        with admin.connect() as con:
            con.exec_driver_sql(f"DROP DATABASE IF EXISTS {db}")
            for host in hosts:
                con.exec_driver_sql("DROP USER IF EXISTS %s@%s", (user, host))
        admin.dispose()


def _account(admin_url: str, user: str, db: str, password: str) -> Account:
    base = sa.make_url(admin_url).set(username=user, database=db)
    return Account(
        url=base.set(password=password).render_as_string(hide_password=False),
        url_without_password=base.render_as_string(hide_password=False),
        url_with_password_parameter=base.update_query_dict({"password": password})
        .render_as_string(hide_password=False),
        password=password,
        missing_db_url=base.set(password=password, database=f"{db}_missing")
        .render_as_string(hide_password=False),
    )


@pytest.fixture(params=[
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
])
def account(request: pytest.FixtureRequest) -> Iterator[Account]:
    """A login with a password and a database it owns, on each server."""
    if request.param == "postgresql":
        yield from _pg_account(request.getfixturevalue("postgres_url"))
    else:
        yield from _mysql_account(request.getfixturevalue("mysql_url"))


class Cli:
    """Runs `purchases` and keeps everything it printed."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.transcript: list[str] = []

    def __call__(self, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
        environ |= {"PURCHASES_HOME": str(self.home), **env}
        done = forked_cli.run(list(args), environ, timeout=300)
        self.transcript += [done.stdout, done.stderr]
        assert (done.returncode == 0) == ok, (args, done.returncode, done.stderr)
        return done


def lake_texts(home: Path) -> Iterator[tuple[Path, str]]:
    for path in (home / "lake").rglob("*.json"):
        yield path, path.read_text()


def test_no_password_in_any_output_or_run_history(
    account: Account, tmp_path: Path
) -> None:
    files = generate(tmp_path / "incoming", rows=600, days=3, seed=21, bad_ratio=0.02)
    home = tmp_path / "home"
    cli = Cli(home)
    db = {"PURCHASES_DATABASE_URL": account.url}

    # Success, with the password in the URL.
    cli("db", "upgrade", **db)
    cli("db", "current", **db)
    cli("ingest", str(files[0].path), "--date", str(files[0].ingestion_date), **db)
    cli("run", **db)
    cli("top", **db)
    cli("top", "-f", "json", **db)
    cli("--database-url", account.url, "top", "-f", "csv")
    runs = json.loads(cli("runs", "-f", "json", **db).stdout)
    cli("runs", "show", runs[-1]["run_id"], **db)

    # Success, with the password from the environment and from a file.
    no_pw = {"PURCHASES_DATABASE_URL": account.url_without_password}
    cli("ingest", str(files[1].path), "--date", str(files[1].ingestion_date), **no_pw)
    cli("run", **no_pw, PURCHASES_DATABASE_PASSWORD=account.password)
    secret_file = tmp_path / "db-password"
    secret_file.write_text(account.password + "\n")
    cli("top", **no_pw, PURCHASES_DATABASE_PASSWORD_FILE=str(secret_file))
    cli("db", "current", **no_pw, PURCHASES_DATABASE_PASSWORD_FILE=str(secret_file))
    # Success, with the password as a query parameter, which drivers take as well.
    cli("db", "current", PURCHASES_DATABASE_URL=account.url_with_password_parameter)
    cli("top", PURCHASES_DATABASE_URL=account.url_with_password_parameter)

    # Failure: a database that does not exist, in a run (recorded in history) and elsewhere.
    missing = {"PURCHASES_DATABASE_URL": account.missing_db_url}
    cli("ingest", str(files[2].path), "--date", str(files[2].ingestion_date), **missing)
    failed = cli("run", ok=False, **missing)
    assert "***" in failed.stderr, failed.stderr  # the URL is named, masked
    assert "_missing" in failed.stderr  # and names the database it could not use
    cli("--debug", "run", ok=False, **missing)
    cli("top", ok=False, **missing)
    cli("db", "upgrade", ok=False, **missing)
    cli("db", "current", ok=False, **missing)
    cli("run", ok=False, PURCHASES_DATABASE_URL=account.url_without_password + "_missing",
        PURCHASES_DATABASE_PASSWORD=account.password)
    as_parameter = sa.make_url(account.url_with_password_parameter).set(
        database=sa.make_url(account.missing_db_url).database).render_as_string(
        hide_password=False)
    failed = cli("run", ok=False, PURCHASES_DATABASE_URL=as_parameter)
    assert "password=***" in failed.stderr, failed.stderr
    cli("db", "current", ok=False, PURCHASES_DATABASE_URL=as_parameter)
    runs = json.loads(cli("runs", "-f", "json", **missing).stdout)
    assert runs[-1]["status"] == "failed"
    shown = cli("runs", "show", runs[-1]["run_id"], **missing).stdout
    assert "gold_to_staging" in shown
    # Once the database is right again, the failed batch goes through.
    cli("run", **db)
    assert json.loads(cli("runs", "-f", "json", **db).stdout)[-1]["status"] == "succeeded"

    output = "\n".join(cli.transcript)
    assert account.password not in output
    history = list(lake_texts(home))
    assert any("_state/runs" in str(p) for p, _ in history)
    for path, text in history:
        assert account.password not in text, path
