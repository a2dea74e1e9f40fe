"""Typed settings: defaults < PURCHASES_* environment < command-line flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from purchases.contract import DEFAULT_MAX_AMOUNT, DEFAULT_MAX_RECORD_BYTES
from purchases.errors import ConfigError

EngineName = Literal["duckdb", "spark"]


# Secrets Manager's own forms: arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME, and a
# name of letters, digits and /_+=.@- (up to 512 characters).
_SECRET_ARN = re.compile(
    r"arn:[a-z-]+:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+")
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


class Settings(BaseSettings):
    """Where the lake and the serving database are, and how to process them."""

    # An empty variable (`export PURCHASES_LAKE=`) is unset, as a shell user means it.
    model_config = SettingsConfigDict(
        env_prefix="PURCHASES_", extra="ignore", env_ignore_empty=True)

    home: Path = Field(default=Path(".purchases"))
    """Folder holding the default lake, the default SQLite file and the run lock."""

    lake: str | None = None
    """Lake URI (a folder or s3://bucket/prefix); default: $PURCHASES_HOME/lake."""

    database_url: str | None = None
    """SQLAlchemy URL of the serving database; default: SQLite in $PURCHASES_HOME."""

    database_password_file: Path | None = None
    """File holding the database password, used when the URL carries none."""

    database_secret_arn: str | None = None
    """AWS Secrets Manager secret (RDS JSON: engine, host, port, username, password, dbname)
    holding the serving database; its keys override those of database_url (purchases.secrets)."""

    fx_rates: Path | None = None
    """CSV of FX rates (currency, rate_to_aud, valid_from); default: the shipped table."""

    engine: EngineName = "duckdb"
    """Processing engine."""

    max_amount: Decimal = DEFAULT_MAX_AMOUNT
    """Largest accepted amount, in the purchase's own currency."""

    memory_limit: ByteSize = Field(default=ByteSize(10**9))
    """Memory the process may use before DuckDB spills to disk (`1GB`, `512MiB`, bytes)."""

    max_record_bytes: int = Field(default=DEFAULT_MAX_RECORD_BYTES, ge=256, le=64 << 20)
    """Longest CSV record, in bytes (its line break not counted), accepted from a bronze file;
    a longer one is quarantined as record_too_large with a prefix of its text. 256..64 MiB:
    each engine holds a record whole in memory while parsing it."""

    glue_database: str | None = None
    """Glue Data Catalog database the lake's silver, quarantine and gold tables are registered
    in after each commit, for Athena (needs an s3:// lake and the s3 extra); unset: no catalog."""

    glue_table_prefix: str = ""
    """Prefix of the Glue table names (`<prefix>silver`, `<prefix>quarantine`, `<prefix>gold`),
    e.g. `prod_` to keep two lakes' tables in one database."""

    @field_validator("glue_database", "glue_table_prefix")
    @classmethod
    def _glue_name(cls, value: str | None) -> str | None:
        # Athena reads only lower-case letters, digits and underscores in these names.
        if value and not re.fullmatch(r"[a-z0-9_]{1,200}", value):
            raise ValueError("use lower-case letters, digits and underscores (Athena's names)")
        return value

    @field_validator("home", "fx_rates", "database_password_file", "lake", "database_url",
                     mode="before")
    @classmethod
    def _not_blank(cls, value: object) -> object:
        # Only spaces is a quoting slip (`--home " "`), never a place: refuse it rather than
        # create a folder named " " and report on it by a name that reads as nothing.
        if isinstance(value, str | os.PathLike) and value and not str(value).strip():
            raise ValueError("is blank (only spaces): give a path or URL")
        return value

    @field_validator("database_secret_arn")
    @classmethod
    def _a_secret_id(cls, value: str | None) -> str | None:
        # Secrets Manager takes a secret's ARN or its name; anything else would be sent as a
        # name and answered "no region" or "not found", naming neither mistake.
        if not value:
            return value
        if not value.strip():
            raise ValueError("is blank (only spaces): give the secret's ARN")
        if value.startswith("arn:"):
            if not _SECRET_ARN.fullmatch(value):
                raise ValueError(f"{value!r} is not a Secrets Manager secret's ARN "
                                 "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)")
        elif not _SECRET_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is neither a Secrets Manager secret's ARN "
                             "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME) nor its name")
        return value

    @field_validator("home", "fx_rates", "database_password_file")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        # `~` as a shell would read it, also when quoted: else the lake (fsspec expands it)
        # and the SQLite file (a folder literally named ~) would part ways.
        return value.expanduser() if value is not None else None

    @field_validator("lake")
    @classmethod
    def _expand_local_lake(cls, value: str | None) -> str | None:
        return os.path.expanduser(value) if value and "://" not in value else value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _a_size(cls, value: object) -> object:
        # pydantic's ByteSize reads only a leading number and unit: "100%" would be 100 bytes.
        if isinstance(value, str) and not re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*[A-Za-z]*\s*",
                                                        value):
            raise ValueError(f"{value!r} is not a size: give one such as 1GB, 512MiB or a "
                             "number of bytes")
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]*\.[0-9]+\s*", value):
            # ByteSize would drop the fraction: "1.5" (meant as GB, most likely) is 1 byte.
            raise ValueError(f"{value!r} is not a whole number of bytes: give a unit, such as "
                             f"{value.strip()}GB")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _enough_memory(cls, value: ByteSize) -> ByteSize:
        # Said in units: pydantic's own "greater than or equal to 67108864" reads as a riddle.
        if value < 64 << 20:
            raise ValueError(f"{value.human_readable(decimal=True)} is too little: give at "
                             "least 64MiB, as a size such as 1GB or 512MiB")
        return value

    @field_validator("max_amount")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0 or value >= Decimal("1e14"):
            raise ValueError("must be > 0 and < 1e14 (amounts are DECIMAL(18,4))")
        return value

    @property
    def lake_uri(self) -> str:
        return self.lake or str(self.home / "lake")

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        from sqlalchemy.engine import URL

        # Built, not formatted: a home named `m?1` or `e%41f` is a query string or an escape
        # in a URL's text, and put the database outside the home (one shared by homes).
        return URL.create("sqlite", database=str(self.home / "purchases.db")).render_as_string()


def load_settings(flags: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (flags); None means unset.
    `flags` names the command-line flag an override came from (field -> "--flag").

    Raises:
        ConfigError: naming the invalid key (the flag, for a value given by one) and what it
            expects.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = (flags or {}).get(field) if field in given else None
        key = flag or ("setting PURCHASES_" + field.upper() if field else "settings")
        # A validator's own message, without pydantic's "Value error, " in front of it.
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {key}: {message}") from None
