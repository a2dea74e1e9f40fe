"""Versioned schema of the serving database (Alembic), shipped inside the package.

`upgrade` brings any supported backend to the newest revision; the serving layer calls it
on first use and `purchases db upgrade` calls it explicitly. Revisions live in `versions/`
and are frozen history: a schema change is a new revision, never an edit of an old one.
"""

from __future__ import annotations

import contextlib
import io
from functools import cache
from typing import TYPE_CHECKING

import sqlalchemy as sa

from purchases.errors import PermanentError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = "purchases:migrations"
VERSION_TABLE = "purchases_alembic_version"
"""Own name rather than Alembic's default, so the serving tables can share a database (and
its `alembic_version`) with another application's schema."""

BASELINE = "0001"
"""The revision equal to the tables earlier releases created with `metadata.create_all`."""

HEAD = "0002"
"""The newest revision in `versions/`. Every process that opens the serving database checks
it is at head; knowing head without Alembic, and reading the version table with one SELECT,
spares that process loading Alembic and parsing the scripts (about a tenth of a second of a
CLI command's start), which it needs only to migrate. A new revision moves this constant
(a unit test compares it with the head Alembic finds in the scripts)."""


def alembic_config(connection: sa.Connection | None = None, *, output=None) -> Config:
    """An Alembic config for the shipped scripts, bound to `connection` when given; offline
    SQL goes to `output`."""
    from alembic.config import Config

    # Alembic's own chatter is not for the product's output.
    cfg = Config(stdout=io.StringIO(), output_buffer=output)
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


@cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision shipped with this version of the package."""
    return HEAD


def scripts_head() -> str | None:
    """The head revision as Alembic finds it in the shipped scripts (what HEAD must be)."""
    return _script().get_current_head()


def shipped_revisions() -> list[str]:
    """Every revision this version ships, oldest first (the history is linear)."""
    return [r.revision for r in reversed(list(_script().walk_revisions()))]


def is_known(revision: str) -> bool:
    """Whether this version of the package ships `revision`."""
    return revision in shipped_revisions()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at; None for a database never migrated.

    Read as Alembic reads it (the version table in the connection's default schema; no table
    or no row is no revision), without loading Alembic. The history is linear, so the table
    holds at most one row: more is a database another tool changed, not one to migrate.

    Raises:
        PermanentError: the version table holds more than one revision.
    """
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    table = sa.table(VERSION_TABLE, sa.column("version_num"))
    revisions = list(connection.scalars(sa.select(table.c.version_num)))
    if len(revisions) > 1:
        raise PermanentError(
            f"the serving database's {VERSION_TABLE} holds {len(revisions)} revisions "
            f"({', '.join(sorted(revisions))}); purchases keeps one linear history: "
            "keep the newest row only")
    return revisions[0] if revisions else None


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Migrate the database to `revision`, serialised against concurrent upgraders.

    Two processes may reach a fresh database at once (a run and `purchases top`): each takes
    a database-wide lock first, and the second then finds the work done. Returns the revision
    the database is at afterwards.
    """
    from alembic import command

    with engine.connect() as con:
        release = None
        try:
            with con.begin():
                release = _lock(con)
                _adopt_unversioned(con)
                command.upgrade(alembic_config(con), revision)
                reached = current_revision(con)
            # Released only once the work is committed: a session-level lock (MySQL) let go
            # inside the transaction let the next upgrader read the version table before the
            # last version change was visible, and apply that revision a second time.
            return reached
        finally:
            if release is not None:
                with contextlib.suppress(Exception):  # a lost session releases it itself
                    release()


def upgrade_sql(url: sa.URL, revision: str = "head", start: str | None = None) -> str:
    """The DDL `upgrade` would run on a database of this URL's dialect at revision `start`
    (None: an empty database), for DBAs."""
    from alembic import command

    out = io.StringIO()
    cfg = alembic_config(output=out)
    cfg.attributes["offline_url"] = url
    command.upgrade(cfg, f"{start}:{revision}" if start else revision, sql=True)
    return out.getvalue()


def _lock(con: sa.Connection):
    """Take the database-wide migration lock (each serving dialect has its own kind); returns
    how to release it."""
    from purchases.serving import dialects

    return dialects.for_url(con.engine.url).migration_lock(con)


def _adopt_unversioned(con: sa.Connection) -> None:
    """Mark a database holding the pre-migration tables (no version table) as at BASELINE."""
    from alembic import command

    from purchases.contract import SUMMARY_TABLE

    if current_revision(con) is None and sa.inspect(con).has_table(SUMMARY_TABLE):
        command.stamp(alembic_config(con), BASELINE)
