"""Gold -> serving database: staging load, replace-upsert and batch ledger (DESIGN §5).

One generic `ServingDatabase` (ledger, staging, apply, retries; `serving.database`) for every
supported database; what differs between SQLite, PostgreSQL and MySQL 8 / MariaDB (URL
defaults, transient error codes, bulk load, upsert form, migration lock, how money is kept)
is declared by one class per database in `serving.dialects`, registered by name. The URL,
credentials and engine are `serving.connection`'s; driver errors become the product's
Transient/PermanentError in `serving.errors`; a batch's gold change set on its way into
staging is `serving.staging`.

pyarrow is imported only by the staging load (the functions that read gold Parquet), so the
upsert alone (the AWS Lambda) runs without it.
"""

from purchases.serving import dialects
from purchases.serving.connection import (
    PASSWORD_ENV,
    create_db_engine,
    database_file,
    database_url,
    masked_url,
)
from purchases.serving.database import (
    ServingDatabase,
    connect,
    current_schema_revision,
    schema_status,
    upgrade_schema,
    upgrade_sql,
    upsert_statement,
)
from purchases.serving.errors import is_transient, translate
from purchases.serving.staging import STAGING_CHUNK

__all__ = [
    "PASSWORD_ENV", "STAGING_CHUNK", "ServingDatabase", "connect", "create_db_engine",
    "current_schema_revision",
    "database_file", "database_url", "dialects", "is_transient", "masked_url", "schema_status",
    "translate", "upgrade_schema", "upgrade_sql", "upsert_statement",
]
