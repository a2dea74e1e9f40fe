"""Serving-database credentials from AWS Secrets Manager (PURCHASES_DATABASE_SECRET_ARN).

The secret is the JSON that RDS and Secrets Manager's rotation templates use:

    {"engine": "postgres" | "mysql" | "mariadb", "host": ..., "port": 5432,
     "username": ..., "password": ..., "dbname": ...}

It becomes a SQLAlchemy URL on the drivers the project ships (psycopg 3, PyMySQL). An RDS
managed master-user secret holds only username and password: the rest then comes from
PURCHASES_DATABASE_URL (a URL without a password), each key of the secret overriding that
part of the URL. The endpoint, region and credentials of Secrets Manager itself are the
standard AWS ones (AWS_ENDPOINT_URL, AWS_REGION, the credential chain).

Nothing here ever puts a value of the secret in a log line or an error message: errors name
the secret (its ARN is not secret) and the key at fault, never what it holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from purchases.aws.clients import arn_region, aws_client
from purchases.errors import ConfigError, TransientError

SETTING = "PURCHASES_DATABASE_SECRET_ARN"

# RDS `engine` values -> the SQLAlchemy driver the product ships for them. MariaDB goes
# through the MySQL dialect, which detects MariaDB itself (as PURCHASES_DATABASE_URL does).
ENGINES: dict[str, str] = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "aurora-postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "aurora-mysql": "mysql+pymysql",
    "aurora": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}

# Secrets Manager errors worth a retry (throttled, or the service briefly unavailable).
_TRANSIENT_CODES = frozenset({
    "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalServiceError", "InternalFailure", "ServiceUnavailable",
})


def fetch(secret_id: str) -> Mapping[str, Any]:
    """The secret's JSON object (its current version).

    Raises:
        ConfigError: botocore missing, no such secret, access denied, or not a JSON object.
        TransientError: throttled, or Secrets Manager unreachable.
    """
    try:
        client = aws_client("secretsmanager", region=arn_region(secret_id))
    except ConfigError as exc:
        named = "" if secret_id.startswith("arn:") else " (or give the secret's ARN: it names it)"
        raise ConfigError(f"{SETTING} {secret_id}: {exc}{named}") from None
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    where = f"{SETTING} {secret_id}"
    try:
        with _response_bodies_unlogged():
            answer = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _TRANSIENT_CODES:
            raise TransientError(f"{where}: Secrets Manager answered {code}; retry") from None
        raise ConfigError(
            f"{where}: Secrets Manager answered {code or 'an error'} (check the ARN, and that "
            "this role may call secretsmanager:GetSecretValue and decrypt it)") from None
    except EndpointConnectionError:
        raise TransientError(f"{where}: cannot reach Secrets Manager; retry") from None
    except BotoCoreError as exc:  # no region, no credentials, ...: the message holds no secret
        raise ConfigError(f"{where}: {type(exc).__name__}: {exc}") from None
    text = answer.get("SecretString")
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: the secret is not a JSON object (expected the RDS shape: engine, host, "
            "port, username, password, dbname)")
    return value


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _response_bodies_unlogged() -> Iterator[None]:
    # botocore logs every response body at DEBUG: for GetSecretValue, the secret itself.
    logger = logging.getLogger("botocore.parsers")
    drop = _Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def to_url(secret: Mapping[str, Any], source: str, base: str | None = None) -> sa.URL:
    """A SQLAlchemy URL from an RDS-shaped secret; keys it lacks come from the URL `base`.

    Raises:
        ConfigError: an engine the product does not serve, a required key missing from both,
            or a port that is not a number; naming the key, never a value.
    """
    url: sa.URL | None = None
    if base:
        try:
            url = make_url(base)
        except Exception:
            raise ConfigError("PURCHASES_DATABASE_URL is not a valid SQLAlchemy URL") from None
    engine = secret.get("engine")
    if engine is not None:
        driver = ENGINES.get(str(engine).strip().lower())
        if driver is None:
            raise ConfigError(
                f"{source}: engine {engine!r} is not served; use one of "
                f"{', '.join(sorted(ENGINES))}")
    elif url is not None:
        driver = url.drivername
    else:
        raise ConfigError(f"{source}: the secret has no \"engine\" (postgres, mysql or mariadb)")
    backend = driver.partition("+")[0]

    def part(key: str, current: Any) -> Any:
        value = secret.get(key)
        return current if value in (None, "") else value

    host = part("host", url.host if url else None)
    username = part("username", url.username if url else None)
    password = part("password", url.password if url else None)
    database = part("dbname", url.database if url else None)
    port = part("port", url.port if url else None) or DEFAULT_PORTS.get(backend)
    for key, value in (("host", host), ("username", username), ("password", password),
                       ("dbname", database)):
        if value in (None, ""):
            raise ConfigError(f"{source}: the secret has no {key!r} (nor has "
                              "PURCHASES_DATABASE_URL); add it to the secret")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: \"port\" is not a number") from None
    return sa.URL.create(
        driver, username=str(username), password=str(password), host=str(host), port=port,
        database=str(database), query=url.query if url is not None else {},
    )


def database_url(secret_id: str, base: str | None = None) -> sa.URL:
    """The serving database's URL from the secret (and `base`, see the module doc)."""
    return to_url(fetch(secret_id), f"{SETTING} {secret_id}", base)


__all__ = ["ENGINES", "SETTING", "aws_client", "database_url", "fetch", "to_url"]
