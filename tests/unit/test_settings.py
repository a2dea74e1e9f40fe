"""Settings a careless user may get wrong are refused when they load, naming the variable."""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal

import pytest

from purchases import serving
from purchases.bronze import land
from purchases.config import load_settings
from purchases.errors import ConfigError
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake


@pytest.mark.parametrize(("given", "expected"), [
    ("1GB", 10**9), ("512MiB", 512 * 2**20), ("2.5GB", 2_500_000_000), ("1 GiB", 2**30)])
def test_memory_limit_sizes(given: str, expected: int) -> None:
    assert load_settings(memory_limit=given).memory_limit == expected


@pytest.mark.parametrize("given", ["lots", "1", "-1GB"])
def test_a_memory_limit_that_is_no_usable_size_is_refused_by_name(given: str) -> None:
    with pytest.raises(ConfigError, match="PURCHASES_MEMORY_LIMIT"):
        load_settings(memory_limit=given)


@pytest.mark.parametrize(("given", "said"), [
    # pydantic read the leading number alone: 100 bytes, 1 GB.
    ("100%", "'100%' is not a size: give one such as 1GB, 512MiB or a number of bytes"),
    ("1GB!", "'1GB!' is not a size: give one such as 1GB, 512MiB or a number of bytes"),
    # Said in units, not as pydantic's "greater than or equal to 67108864".
    ("1000", "1.0KB is too little: give at least 64MiB, as a size such as 1GB or 512MiB"),
    ("10MB", "10.0MB is too little: give at least 64MiB, as a size such as 1GB or 512MiB"),
    # pydantic dropped the fraction: "1 bytes is too little".
    ("1.5", "'1.5' is not a whole number of bytes: give a unit, such as 1.5GB"),
])
def test_a_memory_limit_refusal_says_what_a_size_is(given: str, said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(memory_limit=given)
    assert str(refused.value) == f"invalid setting PURCHASES_MEMORY_LIMIT: {said}"


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("MEMORY_LIMIT", "LAKE", "ENGINE", "MAX_AMOUNT", "DATABASE_URL"):
        monkeypatch.setenv(f"PURCHASES_{name}", "")  # `export PURCHASES_LAKE=` in a shell
    settings = load_settings(home=tmp_path)
    assert settings.memory_limit == 10**9 and settings.engine == "duckdb"
    assert settings.lake_uri == str(tmp_path / "lake")
    assert str(settings.max_amount) == "1000000"
    assert settings.db_url == f"sqlite:///{tmp_path / 'purchases.db'}"


def test_a_tilde_means_the_users_home_for_every_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Quoted, `~` reaches the product unexpanded; the lake and the SQLite file must not end
    up in different places (fsspec expands it, SQLite does not)."""
    from purchases import serving

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    settings = load_settings(home="~/h")
    assert settings.home == tmp_path / "h"
    assert settings.lake_uri == str(tmp_path / "h" / "lake")
    assert serving.database_url(settings).database == str(tmp_path / "h" / "purchases.db")
    assert load_settings(lake="~/elsewhere").lake_uri == str(tmp_path / "elsewhere")
    assert load_settings(lake="s3://b/~x").lake_uri == "s3://b/~x"  # a key, not a path
    url = serving.database_url(load_settings(database_url="sqlite:///~/x.db"))
    assert url.database == str(tmp_path / "x.db")
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("name", ["HOME", "LAKE", "DATABASE_URL", "FX_RATES",
                                  "DATABASE_PASSWORD_FILE"])
def test_a_path_of_only_spaces_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path, name: str
) -> None:
    """`--home " "` would create a folder named " " and report on it by a blank name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(f"PURCHASES_{name}", "  ")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"invalid setting PURCHASES_{name}: is blank (only spaces): give a path or URL")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_given_by_a_flag_is_refused_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--engine foo` and `aws catalog sync --database My-DB` were refused naming the
    environment variables, which the user never set."""
    from purchases.cli import main

    monkeypatch.chdir(tmp_path)
    for args, said in (
        (["--engine", "foo", "runs"], "invalid --engine: Input should be 'duckdb' or 'spark'"),
        (["--database-url", "not a url", "db", "current"],
         "--database-url is not a valid SQLAlchemy URL"),
        (["aws", "catalog", "sync", "--database", "My-DB"], "invalid --database: use lower-case "
         "letters, digits and underscores (Athena's names)"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 1
        assert capsys.readouterr().err == f"Error: {said}\n"
    monkeypatch.setenv("PURCHASES_ENGINE", "foo")  # from the environment: named so
    with pytest.raises(ConfigError, match="^invalid setting PURCHASES_ENGINE: "):
        load_settings({"engine": "--engine"}, engine=None)


def test_a_path_with_spaces_inside_is_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(home=" my home ").home.name == " my home "


@pytest.mark.parametrize(("value", "said"), [
    ("  ", "is blank (only spaces): give the secret's ARN"),
    ("arn:aws:s3:::bucket", "'arn:aws:s3:::bucket' is not a Secrets Manager secret's ARN "
     "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"),
    ("my secret", "'my secret' is neither a Secrets Manager secret's ARN "
     "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME) nor its name"),
])
def test_a_secret_arn_that_names_no_secret_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    """Sent as they were, these came back "no region" or "not found", naming neither slip."""
    monkeypatch.setenv("PURCHASES_DATABASE_SECRET_ARN", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid setting PURCHASES_DATABASE_SECRET_ARN: {said}"


@pytest.mark.parametrize("value", [
    "arn:aws:secretsmanager:ap-southeast-2:123456789012:secret:purchases/db-AbCdEf",
    "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:db",
    "purchases/db",  # a name: Secrets Manager takes that too
])
def test_a_secret_arn_or_name_is_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PURCHASES_DATABASE_SECRET_ARN", value)
    assert load_settings().database_secret_arn == value


@pytest.mark.parametrize("name", ["m?1", "e%41f", "h#1", "a@b:c", "sp ace", "ü"])
def test_the_default_database_is_in_the_home_whatever_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path, name: str
) -> None:
    """The default URL was formatted from the home's path: `m?1` made `?1/purchases.db` a
    query string (the database was the file `m`, shared by homes m?1 and m?2) and `e%41f`
    put it in `eAf`."""
    for key in [k for k in os.environ if k.startswith("PURCHASES_")]:
        monkeypatch.delenv(key)
    settings = load_settings(home=tmp_path / name)
    assert serving.database_file(settings) == tmp_path / name / "purchases.db"
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    (inbox / "a.csv").write_text(
        "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"
        "7,A,B,a@x.io,70,2024-01-10,4.00,AUD\n")
    land(Lake(settings.lake_uri), [inbox / "a.csv"], date(2024, 1, 15))
    run_pipeline(settings)
    assert (tmp_path / name / "purchases.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])
    with serving.connect(settings) as db:
        assert [(r["customer_id"], r["total_spent_aud"]) for r in db.summary()] == [
            (7, Decimal("4.00"))]
