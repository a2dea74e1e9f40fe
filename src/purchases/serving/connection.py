"""The serving database's URL and engine: driver defaults, credentials, masking.

Credentials: from the Secrets Manager secret PURCHASES_DATABASE_SECRET_ARN names when it is
set (`purchases.secrets`); else the password comes from the URL, else the file
PURCHASES_DATABASE_PASSWORD_FILE names, else the environment variable
PURCHASES_DATABASE_PASSWORD. Any URL this package shows goes through `masked_url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from purchases.errors import ConfigError
from purchases.masking import MASK, is_secret
from purchases.serving import dialects

if TYPE_CHECKING:
    from purchases.config import Settings

PASSWORD_ENV = "PURCHASES_DATABASE_PASSWORD"


# Drivers take a secret from the query as readily as from user:password@ (libpq's password
# and sslpassword, a driver's passwd, or one named inside another's value: `options=-c
# password=...`, a `dsn`): masking.is_secret tells them.
_MASK = MASK


def masked_url(url: str | sa.URL) -> str:
    """The URL as it may be shown: the password, and any query parameter that may carry a
    secret (by its name or its value), replaced by ***."""
    try:
        parsed = make_url(url)
        secret = {k: _MASK for k, v in parsed.query.items() if is_secret(k, str(v))}
        shown = parsed.update_query_dict(secret).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown not at all rather than leaked
        return "<database URL>"
    # The query is rendered percent-encoded: show the mask as it is.
    return shown.replace(quote(_MASK, safe=""), _MASK) if secret else shown


def database_file(settings: Settings) -> Path | None:
    """The file of an embedded database (SQLite), or None (a server, or in memory). Nothing
    is created."""
    url = configured_url(settings)
    return dialects.for_url(url).database_file(url)


def _with_shipped_driver(url: sa.URL) -> sa.URL:
    """A bare scheme on the driver the product ships; a backend or driver it does not
    support is a setting to fix, said so."""
    bare = dialects.find_scheme(url.drivername)
    if bare is not None:
        url = url.set(drivername=bare.default_drivers[url.drivername])
    backend, _, driver = url.drivername.partition("+")
    dialect = dialects.find(backend)
    if dialect is None:
        raise ConfigError(f"PURCHASES_DATABASE_URL: database {backend!r} is not supported; "
                          f"{dialects.supported_hint()}")
    if driver and driver != dialect.driver:
        install = f" (pip install 'purchases[{dialect.extra}]')" if dialect.extra else ""
        raise ConfigError(
            f"PURCHASES_DATABASE_URL: driver {driver!r} is not supported for {backend}; use "
            f"{backend}+{dialect.driver}://...{install}")
    return url


def database_url(settings: Settings) -> sa.URL:
    """`configured_url`, prepared by its dialect (SQLite: the file's folder made)."""
    url = configured_url(settings)
    return dialects.for_url(url).prepare_url(url)


def configured_url(settings: Settings) -> sa.URL:
    """The configured URL with its password resolved (the Secrets Manager secret; else the
    URL, then the password file, then the environment) and its dialect's defaults.

    Raises:
        ConfigError: not a URL, an unsupported database or driver, an unreadable password file.
    """
    if settings.database_secret_arn:
        from purchases import secrets  # boto3 only when a secret is configured

        url = secrets.database_url(settings.database_secret_arn, settings.database_url)
    else:
        try:
            url = make_url(settings.db_url)
        except Exception:
            raise ConfigError("PURCHASES_DATABASE_URL is not a valid SQLAlchemy URL") from None
    url = _with_shipped_driver(url)
    dialect = dialects.for_url(url)
    if url.password is None and not dialect.embedded:
        if settings.database_password_file:
            try:
                secret = Path(settings.database_password_file).read_text().strip()
            except OSError:
                raise ConfigError(
                    f"PURCHASES_DATABASE_PASSWORD_FILE {settings.database_password_file}: "
                    "unreadable"
                ) from None
            url = url.set(password=secret)
        elif os.environ.get(PASSWORD_ENV):
            url = url.set(password=os.environ[PASSWORD_ENV])
    return url


def create_db_engine(settings: Settings) -> sa.Engine:
    """An engine for the configured serving database (nothing is connected yet).

    Raises:
        ConfigError: see `database_url`; or the driver is not installed.
    """
    url = database_url(settings)
    dialect = dialects.for_url(url)
    try:
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=dict(dialect.connect_args))
    except ModuleNotFoundError as exc:
        install = f" (pip install 'purchases[{dialect.extra}]')" if dialect.extra else ""
        raise ConfigError(
            f"no driver {exc.name!r} for {masked_url(url)}: install it{install}") from None
    except Exception as exc:  # e.g. an unknown dialect name: the message never holds the URL
        raise ConfigError(f"cannot use database {masked_url(url)}: {exc}") from None
    event.listen(engine, "connect", lambda dbapi_con, _: dialect.on_connect(dbapi_con))
    return engine
