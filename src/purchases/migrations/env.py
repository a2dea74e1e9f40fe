"""Alembic environment: runs the shipped revisions on the connection the caller passes.

`purchases.migrations.upgrade` (and so `purchases db upgrade` and first use) hands over an
open connection; offline mode (`purchases db upgrade --sql`) renders DDL for a URL's dialect.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from purchases.migrations import VERSION_TABLE
from purchases.serving import dialects

config = context.config


def _options(url: sa.URL) -> dict:
    # Where ALTER TABLE cannot change most things in place, batch mode rebuilds the table.
    return {"version_table": VERSION_TABLE,
            "render_as_batch": dialects.for_url(url).alter_by_rebuild}


if context.is_offline_mode():
    url = config.attributes["offline_url"]
    context.configure(url=url, literal_binds=True, **_options(url))
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations with `purchases db upgrade`: it supplies the configured connection"
        )
    context.configure(connection=connection, **_options(connection.engine.url))
    with context.begin_transaction():
        context.run_migrations()
