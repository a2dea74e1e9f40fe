"""Typed settings: defaults < PURCHASES_* environment < command-line flags."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from purchases.contract import DEFAULT_MAX_AMOUNT
from purchases.errors import ConfigError

EngineName = Literal["duckdb", "spark"]


class Settings(BaseSettings):
    """Where the lake and the serving database are, and how to process them."""

    model_config = SettingsConfigDict(env_prefix="PURCHASES_", extra="ignore")

    home: Path = Field(default=Path(".purchases"))
    """Folder holding the default lake, the default SQLite file and the run lock."""

    lake: str | None = None
    """Lake URI (a folder or s3://bucket/prefix); default: $PURCHASES_HOME/lake."""

    database_url: str | None = None
    """SQLAlchemy URL of the serving database; default: SQLite in $PURCHASES_HOME."""

    database_password_file: Path | None = None
    """File holding the database password, used when the URL carries none."""

    fx_rates: Path | None = None
    """CSV of FX rates (currency, rate_to_aud, valid_from); default: the shipped table."""

    engine: EngineName = "duckdb"
    """Processing engine."""

    max_amount: Decimal = DEFAULT_MAX_AMOUNT
    """Largest accepted amount, in the purchase's own currency."""

    memory_limit: str = "1GB"
    """Memory the DuckDB engine may use before spilling to disk."""

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
        return self.database_url or f"sqlite:///{self.home / 'purchases.db'}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (flags); None means unset.

    Raises:
        ConfigError: naming the invalid key and what it expects.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "PURCHASES_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
        raise ConfigError(f"invalid setting {key}: {err['msg']}") from None
