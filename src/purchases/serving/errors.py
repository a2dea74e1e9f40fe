"""Driver errors as the product's TransientError (worth a retry: dropped connection, deadlock,
lock wait, failover) or PermanentError, told apart by the dialect whose driver raised them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from purchases.errors import PermanentError, TransientError
from purchases.serving import dialects
from purchases.serving.connection import masked_url


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may succeed: a dropped connection, deadlock, lock wait, failover."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    dialect = dialects.for_error(orig)
    return dialect is not None and dialect.is_transient(orig)


def translate(exc: BaseException, url: str | sa.URL) -> Exception:
    """A driver or SQLAlchemy error as the product's Transient/PermanentError, URL masked."""
    where = masked_url(url)
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(orig).strip()
    detail = text.splitlines()[0].strip() if text else type(orig).__name__
    try:
        secret = make_url(url).password
    except Exception:
        secret = None
    if secret:  # drivers never echo it as far as we know; this makes sure
        detail = detail.replace(str(secret), "***")
    dialect = dialects.for_error(orig)
    hint = dialect.hint(orig) if dialect is not None else ""
    if hint:
        detail = f"{detail} ({hint})"
    if is_transient(exc):
        return TransientError(f"database {where}: {detail}")
    return PermanentError(f"database {where}: {detail}")
