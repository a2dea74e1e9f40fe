"""The serving dialects, registered by name: one class per kind of database.

A fourth backend is one module with a `DialectCapabilities` subclass and one `register` line
below (or a `register` call from the code that ships it). Everything that differs between
databases is asked of the dialect found here; nothing else names a database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from purchases.errors import ConfigError, PermanentError
from purchases.serving.dialects.base import DialectCapabilities, OnConflictUpsert
from purchases.serving.dialects.mysql import MySQLDialect
from purchases.serving.dialects.postgresql import PostgreSQLDialect
from purchases.serving.dialects.sqlite import SQLiteDialect

if TYPE_CHECKING:
    import sqlalchemy as sa

_REGISTRY: dict[str, type[DialectCapabilities]] = {}


def register(dialect: type[DialectCapabilities]) -> type[DialectCapabilities]:
    """Serve the URLs of `dialect.backends()` with `dialect` (replacing an earlier one).

    Raises:
        TypeError: `dialect` is not a DialectCapabilities subclass with a name.
    """
    if not (isinstance(dialect, type) and issubclass(dialect, DialectCapabilities)
            and getattr(dialect, "name", None)):
        raise TypeError(f"{dialect!r} is not a named DialectCapabilities subclass")
    _REGISTRY[dialect.name] = dialect
    return dialect


register(SQLiteDialect)
register(PostgreSQLDialect)
register(MySQLDialect)


def names() -> list[str]:
    """The registered dialects' names, in registration order."""
    return list(_REGISTRY)


def registered() -> list[type[DialectCapabilities]]:
    """The registered dialect classes, in registration order."""
    return list(_REGISTRY.values())


def find(backend: str) -> type[DialectCapabilities] | None:
    """The dialect serving URLs of this backend name, if any."""
    if backend in _REGISTRY:
        return _REGISTRY[backend]
    return next((d for d in reversed(_REGISTRY.values()) if backend in d.backends()), None)


def find_scheme(scheme: str) -> type[DialectCapabilities] | None:
    """The dialect that gives this bare URL scheme (`postgres`) a driver of its own, if any."""
    return next((d for d in reversed(_REGISTRY.values()) if scheme in d.default_drivers), None)


def supported_hint() -> str:
    """Every supported database as a user would write its URL, with the extra to install."""
    shown = []
    for dialect in registered():
        if dialect.url_example:
            extra = f" (pip install 'purchases[{dialect.extra}]')" if dialect.extra else ""
            shown.append(dialect.url_example + extra)
    return "supported: " + ", ".join(shown)


def for_url(url: sa.URL) -> DialectCapabilities:
    """The dialect of a (driver-resolved) URL.

    Raises:
        ConfigError: no registered dialect serves its backend.
    """
    backend = url.get_backend_name()
    dialect = find(backend)
    if dialect is None:
        raise ConfigError(
            f"PURCHASES_DATABASE_URL: database {backend!r} is not supported; {supported_hint()}")
    return dialect()


def for_dialect(dialect: sa.Dialect) -> DialectCapabilities:
    """The serving dialect of a SQLAlchemy dialect (by its name).

    Raises:
        PermanentError: no registered dialect serves it.
    """
    found = find(dialect.name)
    if found is None:
        raise PermanentError(
            f"serving database dialect {dialect.name!r} is not supported "
            f"(use {', '.join(names())})")
    return found()


def for_error(error: BaseException) -> DialectCapabilities | None:
    """The dialect whose driver raised `error`, if any."""
    module = type(error).__module__ or ""
    return next((d() for d in reversed(_REGISTRY.values())
                 if d.driver_modules and module.startswith(d.driver_modules)), None)


__all__ = [
    "DialectCapabilities", "MySQLDialect", "OnConflictUpsert", "PostgreSQLDialect",
    "SQLiteDialect", "find", "find_scheme", "for_dialect", "for_error", "for_url", "names",
    "register", "registered", "supported_hint",
]
