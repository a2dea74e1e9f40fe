"""Glue Data Catalog: the lake's silver, quarantine and gold as Athena tables, batch by batch.

Partitions are registered explicitly (idempotent BatchCreatePartition, AlreadyExists ignored),
not declared once by partition projection. Projection would expose any folder that matches its
pattern as soon as a file appears in it: on S3 a move is copy-then-delete, so Athena would see
half of a batch being published, and a quarantine file superseded by `purchases reprocess`
would stay visible for ever (projection cannot subtract files). Registration lets the catalog
follow the commit log instead, so Athena reads exactly the files the embedded views read
(`commit_log.published_files`):

* every batch is published into its own folder of a partition (steps._final_names):
  `silver/ingestion_date=D/batch=<id>/`, `quarantine/ingestion_date=D/batch=<id>/`,
  `gold/year=Y/month=M/day=D/batch=<id>/`; one Glue partition per such folder, keyed
  (ingestion_date, batch) or (year, month, day, batch);
* a partition is registered only once its batch's publication is complete (every staged file
  moved), and only while none of its files is superseded by a later commit; a partition that
  holds a superseded file is deleted (the replacement is the reprocess batch's own partition).
  Deletions go first, then additions: a row is never visible in quarantine and in silver at
  once (it may be absent for the moment between the two calls; Glue has no transaction).

Column types are the contract's (DECIMAL(18,2) -> decimal(18,2), DATE -> date, BIGINT ->
bigint, VARCHAR -> string); a partition key is not repeated as a column (Athena forbids it),
its value in the folder name equals the column's in the files.

`register_batch` runs after each commit: it registers that batch and catches up every earlier
one not registered yet (a crash or a Glue outage between a commit and its registration), using
a marker in the lake, `_state/glue_catalog.json`. `sync` (`purchases aws catalog sync`)
reconciles the whole catalog with the commit log. botocore is imported lazily (aws.clients): the
engine and a lake without a catalog never need it. botocore's errors become the product's at
this module's edge (throttling and 5xx: TransientError; the rest: PermanentError naming the
AWS error code and what to do).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from purchases import commit_log
from purchases.aws.clients import aws_client
from purchases.commit_log import RUNS_STAGING_DIR, Commit
from purchases.config import Settings
from purchases.contract import GOLD_COLUMNS, QUARANTINE_COLUMNS, SILVER_COLUMNS
from purchases.errors import ConfigError, PermanentError, TransientError
from purchases.storage import Lake

log = logging.getLogger(__name__)

MARKER_PATH = "_state/glue_catalog.json"
"""Which batches `register_batch` has registered, and in which database (a lake-side note)."""

BATCH_KEY = "batch"
"""Partition key of a batch's folder (`batch=<id>`); not `batch_id`, a column of gold."""

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

_NOT_FOUND, _EXISTS = "EntityNotFoundException", "AlreadyExistsException"
_CREATE_CHUNK = 100  # BatchCreatePartition's limit
_DELETE_CHUNK = 25  # BatchDeletePartition's limit
_THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ConcurrentModificationException",
        "OperationTimeoutException",
        "ServiceUnavailable",
        "InternalServiceException",
        "InternalFailure",
        "RequestTimeout",
    }
)
_HINTS = {
    "AccessDeniedException": "grant this role glue:GetDatabase, glue:CreateDatabase, "
    "glue:GetTable, glue:CreateTable, glue:UpdateTable, glue:GetPartitions, "
    "glue:BatchCreatePartition and glue:BatchDeletePartition on the database and its tables",
    "UnrecognizedClientException": "check the AWS credentials (AWS_PROFILE or "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
    "InvalidInputException": "check PURCHASES_GLUE_DATABASE and PURCHASES_GLUE_TABLE_PREFIX",
    "ResourceNumberLimitExceededException": "raise the account's Glue quota or drop old partitions",
}


@dataclass(frozen=True)
class TableSpec:
    """One lake layer as a Glue table: its contract columns and its partition keys."""

    layer: str
    columns: dict[str, str]
    partition_keys: tuple[tuple[str, str], ...]  # (name, Glue type), in folder order

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.partition_keys)


TABLES: tuple[TableSpec, ...] = (
    TableSpec("silver", SILVER_COLUMNS, (("ingestion_date", "date"), (BATCH_KEY, "bigint"))),
    TableSpec(
        "quarantine", QUARANTINE_COLUMNS, (("ingestion_date", "date"), (BATCH_KEY, "bigint"))
    ),
    # year/month/day as the embedded gold view types them (BIGINT, from the folder names).
    TableSpec(
        "gold",
        GOLD_COLUMNS,
        (("year", "bigint"), ("month", "bigint"), ("day", "bigint"), (BATCH_KEY, "bigint")),
    ),
)

_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)", re.IGNORECASE)
_SIMPLE_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "int",
    "DATE": "date",
    "VARCHAR": "string",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",
}


def glue_type(sql_type: str) -> str:
    """The Glue/Athena (Hive DDL) type of a contract SQL type, e.g. DECIMAL(18,2) -> decimal(18,2).

    Raises:
        ValueError: a type the catalog has no mapping for (a contract change to make here).
    """
    m = _DECIMAL.fullmatch(sql_type.strip())
    if m:
        return f"decimal({int(m.group(1))},{int(m.group(2))})"
    try:
        return _SIMPLE_TYPES[sql_type.strip().upper()]
    except KeyError:
        raise ValueError(f"no Glue type for contract type {sql_type!r}") from None


def glue_columns(spec: TableSpec) -> list[dict[str, str]]:
    """The table's Glue columns: the contract's, less its partition keys (Athena forbids a
    column named like a partition key; the key's value is the files' value)."""
    keys = set(spec.key_names)
    return [{"Name": c, "Type": glue_type(t)} for c, t in spec.columns.items() if c not in keys]


@dataclass(frozen=True)
class Partition:
    """A batch's folder of one table: its partition values and its lake-relative folder."""

    values: tuple[str, ...]
    folder: str


@dataclass
class TableSync:
    """What a sync did to one table: partitions registered after it, added, removed."""

    table: str
    partitions: int = 0
    added: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)  # folders that cannot be exposed exactly


def enabled(settings: Settings) -> bool:
    """Whether a Glue database is configured (PURCHASES_GLUE_DATABASE)."""
    return bool(settings.glue_database)


def table_name(settings: Settings, spec: TableSpec) -> str:
    return f"{settings.glue_table_prefix}{spec.layer}"


# --- which partitions the commit log exposes ----------------------------------------------


def partition_of(spec: TableSpec, rel_path: str) -> Partition | None:
    """The partition of a published file (lake-relative), or None when its folder does not
    carry the table's keys (a file published before batch folders: see `sync`)."""
    folder = posixpath.dirname(rel_path)
    segments = folder.split("/")
    if segments[0] != spec.layer:
        return None
    pairs = [s.split("=", 1) for s in segments[1:]]
    if [p[0] for p in pairs] != list(spec.key_names) or any(len(p) != 2 for p in pairs):
        return None
    values = []
    for (_, glue_t), (_, raw) in zip(spec.partition_keys, pairs, strict=True):
        # Glue keeps partition values as text; bigint ones without the folder's zero padding.
        if glue_t == "bigint" and not raw.isdigit():
            return None
        values.append(str(int(raw)) if glue_t == "bigint" else raw)
    return Partition(tuple(values), folder)


def publication_complete(lake: Lake, commit: Commit) -> bool:
    """Whether every staged file of a committed batch has been moved into place.

    Staging is removed only after the last move, so its absence settles it in one look; while
    it exists (a publication under way, or interrupted), each move's source is checked."""
    if not lake.exists(f"{RUNS_STAGING_DIR}/{commit.run_id}"):
        return True
    return not any(lake.exists(src) for src, _ in commit.moves)


@dataclass
class _Plan:
    add: dict[str, dict[tuple[str, ...], Partition]] = field(default_factory=dict)
    drop: dict[str, dict[tuple[str, ...], Partition]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)


def _plan(lake: Lake, commits: list[Commit], chosen: Iterable[Commit]) -> tuple[_Plan, int]:
    """Partitions of the `chosen` commits to add (complete, nothing superseded) and partitions
    holding a file superseded by one of them to drop; and the highest batch id up to which
    every commit is complete (the marker's next value)."""
    gone = {p for c in commits for p in c.superseded}
    plan = _Plan(
        {s.layer: {} for s in TABLES}, {s.layer: {} for s in TABLES}, {s.layer: [] for s in TABLES}
    )
    done_upto, contiguous = 0, True
    superseding: list[str] = []
    for c in chosen:
        superseding.extend(c.superseded)
        if not publication_complete(lake, c):
            contiguous = False  # another writer is still moving it: its turn comes later
            continue
        if contiguous:
            done_upto = c.batch_id
        for spec in TABLES:
            folders: dict[Partition, set[bool]] = {}
            for rel in c.published_under(spec.layer):
                part = partition_of(spec, rel)
                if part is None:
                    plan.skipped[spec.layer].append(posixpath.dirname(rel))
                    continue
                folders.setdefault(part, set()).add(rel in gone)
            for part, superseded in folders.items():
                if superseded == {False}:
                    plan.add[spec.layer][part.values] = part
                elif superseded == {True, False}:
                    # A location cannot leave one file out: the partition is dropped rather
                    # than show a reprocessed row twice (one engine file per batch and day
                    # makes this rare: only Spark writes several).
                    plan.skipped[spec.layer].append(part.folder)
    for rel in superseding:
        for spec in TABLES:
            part = partition_of(spec, rel)
            if part is not None:
                plan.drop[spec.layer][part.values] = part
                plan.add[spec.layer].pop(part.values, None)
    return plan, done_upto


# --- the hook after a commit, and the full sync -----------------------------------------------


def register_batch(settings: Settings, lake: Lake, commit: Commit) -> None:
    """Register a just-published batch's partitions (and drop those it supersedes), after
    catching up any earlier batch not registered yet. A no-op when no Glue database is set.

    Call after the batch's publication is complete (commit_log.publish returned). Idempotent.

    Raises:
        ConfigError: a Glue database is set but the lake is not on S3.
        TransientError: Glue throttled or failed (retry; `purchases aws catalog sync` also
            catches up).
        PermanentError: Glue refused (the AWS error code and a hint in the message).
    """
    if not enabled(settings):
        return
    _require_s3(settings, lake)
    commits = commit_log.load_commits(lake)
    if all(c.batch_id != commit.batch_id for c in commits):
        commits.append(commit)
    marker = _read_marker(settings, lake)
    chosen = [c for c in commits if c.batch_id > marker]
    if not chosen:
        return
    glue = _GlueCatalog(settings, lake)
    glue.ensure_tables()
    plan, done_upto = _plan(lake, commits, chosen)
    for spec in TABLES:
        glue.delete_partitions(spec, plan.drop[spec.layer].values())
    for spec in TABLES:
        glue.create_partitions(spec, plan.add[spec.layer].values())
        for folder in dict.fromkeys(plan.skipped[spec.layer]):
            log.warning(
                "Glue catalog: %s not registered: not a batch folder, or it holds a "
                "superseded file beside current ones",
                folder,
            )
    if done_upto > marker:
        _write_marker(settings, lake, done_upto)


def require_catalog(settings: Settings) -> None:
    """What `sync` needs before it touches the lake: a Glue database and an S3 lake.

    Raises:
        ConfigError: no Glue database is set, or the lake is not on S3.
    """
    if not enabled(settings):
        raise ConfigError(
            "no Glue database configured: set PURCHASES_GLUE_DATABASE=<name> (or pass --database)"
        )
    if not settings.lake_uri.lower().startswith(("s3://", "s3a://")):  # maybe --database's
        raise ConfigError(f"the Glue catalog registers a lake on S3, not {settings.lake_uri}: "
                          "set --lake / PURCHASES_LAKE to s3://bucket/prefix")


def sync(settings: Settings, lake: Lake) -> list[TableSync]:
    """Make the Glue catalog match the commit log: database and tables created (or updated to
    the contract) if needed, every exposed partition registered, every other one dropped.

    Running it twice changes nothing the second time.

    Raises:
        ConfigError: no Glue database is set, or the lake is not on S3.
        TransientError / PermanentError: as `register_batch`.
    """
    require_catalog(settings)
    glue = _GlueCatalog(settings, lake)
    glue.ensure_tables(update=True)
    # Listed before the commit log is read: a partition a concurrent run registers after this
    # listing is then never taken for a stray and dropped.
    existing = {spec.layer: glue.partitions(spec) for spec in TABLES}
    commits = commit_log.load_commits(lake)
    plan, done_upto = _plan(lake, commits, commits)
    results, stale, missing = [], {}, {}
    for spec in TABLES:
        want, have = plan.add[spec.layer], existing[spec.layer]
        located = {v: glue.location(p.folder) for v, p in want.items()}
        # A partition at another location (a lake moved, tables renamed) is re-registered.
        stale[spec.layer] = [Partition(v, "") for v, loc in have.items() if located.get(v) != loc]
        missing[spec.layer] = [p for v, p in want.items() if have.get(v) != located[v]]
        results.append(
            TableSync(
                table_name(settings, spec),
                partitions=len(want),
                added=sum(1 for v in want if v not in have),
                removed=sum(1 for v in have if v not in want),
                skipped=sorted(set(plan.skipped[spec.layer])),
            )
        )
    for spec in TABLES:  # drops first (see the module doc)
        glue.delete_partitions(spec, stale[spec.layer])
    for spec in TABLES:
        glue.create_partitions(spec, missing[spec.layer])
    _write_marker(settings, lake, done_upto)
    return results


# --- the marker ---------------------------------------------------------------------------


def _marker_key(settings: Settings, lake: Lake) -> dict[str, str]:
    return {
        "database": settings.glue_database or "",
        "table_prefix": settings.glue_table_prefix,
        "lake": lake.uri,
    }


def _read_marker(settings: Settings, lake: Lake) -> int:
    """The batch id up to which this database has every partition (0: none, or another
    database than the marker's)."""
    data = lake.read_json_if_exists(MARKER_PATH)
    if data is None:
        return 0
    if {k: data.get(k) for k in ("database", "table_prefix", "lake")} != _marker_key(
        settings, lake
    ):
        return 0
    return int(data.get("batch_id") or 0)


def _write_marker(settings: Settings, lake: Lake, batch_id: int) -> None:
    lake.write_json(MARKER_PATH, {**_marker_key(settings, lake), "batch_id": batch_id})


def _require_s3(settings: Settings, lake: Lake) -> None:
    if not lake.url("").startswith("s3://"):
        raise ConfigError(
            f"PURCHASES_GLUE_DATABASE={settings.glue_database} needs a lake on S3, not "
            f"{lake.uri}: set PURCHASES_LAKE=s3://bucket/prefix, or unset "
            "PURCHASES_GLUE_DATABASE"
        )


# --- Glue, through botocore, with errors translated-----------------------------------------


def translate(exc: Exception, doing: str) -> Exception:
    """The product's error for a botocore exception met while `doing` something."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        lines = str(error.get("Message") or "").splitlines()
        message = lines[0][:300] if lines else ""
        detail = f"AWS Glue {code} {doing}" + (f": {message}" if message else "")
        if code in _THROTTLING or status >= 500:
            return TransientError(f"{detail} (retry; `purchases aws catalog sync` catches up)")
        return PermanentError(f"{detail}: {_HINTS.get(code, 'see the AWS Glue error code')}")
    if isinstance(exc, NoRegionError):
        return ConfigError(
            f"AWS Glue {doing}: no AWS region: set AWS_REGION (or "
            "AWS_DEFAULT_REGION, or a profile's region)"
        )
    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            f"AWS Glue {doing}: no AWS credentials: set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run with a role)"
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # Refused, reset or timed out: the network or the service, worth a retry.
        return TransientError(f"AWS Glue {doing}: cannot reach the endpoint ({exc})")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"AWS Glue {doing}: {exc}")
    return exc


class _GlueCatalog:
    """The configured database's tables, through one Glue client."""

    def __init__(self, settings: Settings, lake: Lake) -> None:
        self.settings, self.lake = settings, lake
        self.database = settings.glue_database or ""
        # Region, endpoint (AWS_ENDPOINT_URL) and credentials: the standard AWS settings.
        self.client = self._call(lambda: aws_client("glue"), "connecting")

    def _call(self, fn: Callable[..., Any], doing: str, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, doing) from exc

    def _try(
        self, fn: Callable[..., Any], doing: str, allowed: str, **kwargs: Any
    ) -> tuple[Any, bool]:
        """Call; (result, False), or (None, True) when AWS answers with the `allowed` error
        code (EntityNotFound on a lookup, AlreadyExists on a create: an expected outcome)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs), False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == allowed:
                return None, True
            raise translate(exc, doing) from exc
        except BotoCoreError as exc:
            raise translate(exc, doing) from exc

    def location(self, folder: str) -> str:
        return self.lake.url(folder).rstrip("/") + "/"

    def table_input(self, spec: TableSpec) -> dict[str, Any]:
        return {
            "Name": table_name(self.settings, spec),
            "Description": f"purchases {spec.layer}: Parquet, one partition per batch and day",
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
            "PartitionKeys": [{"Name": k, "Type": t} for k, t in spec.partition_keys],
            "StorageDescriptor": self.storage(spec, spec.layer),
        }

    def storage(self, spec: TableSpec, folder: str) -> dict[str, Any]:
        return {
            "Columns": glue_columns(spec),
            "Location": self.location(folder),
            "InputFormat": PARQUET_INPUT,
            "OutputFormat": PARQUET_OUTPUT,
            "SerdeInfo": {
                "SerializationLibrary": PARQUET_SERDE,
                "Parameters": {"serialization.format": "1"},
            },
        }

    def ensure_tables(self, *, update: bool = False) -> None:
        """Create the database and the tables where missing (with `update`, also bring an
        existing table's definition back to the contract's)."""
        db = self.database
        _, missing = self._try(
            self.client.get_database, f"reading database {db}", _NOT_FOUND, Name=db
        )
        if missing:
            self._try(
                self.client.create_database,
                f"creating database {db}",
                _EXISTS,
                DatabaseInput={
                    "Name": db,
                    "Description": "purchases lake: silver, quarantine, gold",
                },
            )
        for spec in TABLES:
            name = table_name(self.settings, spec)
            wanted = self.table_input(spec)
            found, missing = self._try(
                self.client.get_table,
                f"reading table {db}.{name}",
                _NOT_FOUND,
                DatabaseName=db,
                Name=name,
            )
            if missing:
                self._try(
                    self.client.create_table,
                    f"creating table {db}.{name}",
                    _EXISTS,
                    DatabaseName=db,
                    TableInput=wanted,
                )
            elif update and not _same_table(found["Table"], wanted):
                self._call(
                    self.client.update_table,
                    f"updating table {db}.{name}",
                    DatabaseName=db,
                    TableInput=wanted,
                )

    def partitions(self, spec: TableSpec) -> dict[tuple[str, ...], str]:
        """Every registered partition of a table: values -> location."""
        name = table_name(self.settings, spec)

        def every_page() -> list[dict[str, Any]]:
            pages = self.client.get_paginator("get_partitions")
            return list(pages.paginate(DatabaseName=self.database, TableName=name))

        found: dict[tuple[str, ...], str] = {}
        for page in self._call(every_page, f"listing partitions of {self.database}.{name}"):
            for p in page.get("Partitions", []):
                found[tuple(p["Values"])] = p.get("StorageDescriptor", {}).get("Location", "")
        return found

    def create_partitions(self, spec: TableSpec, parts: Iterable[Partition]) -> None:
        name = table_name(self.settings, spec)
        todo = sorted(parts, key=lambda p: p.values)
        for i in range(0, len(todo), _CREATE_CHUNK):
            chunk = todo[i : i + _CREATE_CHUNK]
            reply = self._call(
                self.client.batch_create_partition,
                f"registering partitions of {self.database}.{name}",
                DatabaseName=self.database,
                TableName=name,
                PartitionInputList=[
                    {"Values": list(p.values), "StorageDescriptor": self.storage(spec, p.folder)}
                    for p in chunk
                ],
            )
            _raise_entry_errors(reply, _EXISTS, f"registering partitions of {self.database}.{name}")

    def delete_partitions(self, spec: TableSpec, parts: Iterable[Partition]) -> None:
        name = table_name(self.settings, spec)
        todo = sorted({p.values for p in parts})
        for i in range(0, len(todo), _DELETE_CHUNK):
            reply = self._call(
                self.client.batch_delete_partition,
                f"dropping partitions of {self.database}.{name}",
                DatabaseName=self.database,
                TableName=name,
                PartitionsToDelete=[{"Values": list(v)} for v in todo[i : i + _DELETE_CHUNK]],
            )
            _raise_entry_errors(reply, _NOT_FOUND, f"dropping partitions of {self.database}.{name}")


def _raise_entry_errors(reply: dict[str, Any], ignored: str, doing: str) -> None:
    """A batch call's per-partition errors: the `ignored` code is the idempotent outcome."""
    for entry in reply.get("Errors") or []:
        detail = entry.get("ErrorDetail") or {}
        code = str(detail.get("ErrorCode") or "Unknown")
        if code == ignored:
            continue
        values = "/".join(entry.get("PartitionValues") or [])
        message = f"AWS Glue {code} {doing} ({values}): {detail.get('ErrorMessage', '')}"
        if code in _THROTTLING:
            raise TransientError(message)
        raise PermanentError(f"{message}: {_HINTS.get(code, 'see the AWS Glue error code')}")


def _same_table(table: dict[str, Any], wanted: dict[str, Any]) -> bool:
    sd, want_sd = table.get("StorageDescriptor") or {}, wanted["StorageDescriptor"]

    def cols(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(c.get("Name", ""), c.get("Type", "")) for c in items or []]

    return (
        cols(sd.get("Columns", [])) == cols(want_sd["Columns"])
        and cols(table.get("PartitionKeys", [])) == cols(wanted["PartitionKeys"])
        and sd.get("Location") == want_sd["Location"]
        and sd.get("InputFormat") == want_sd["InputFormat"]
        and sd.get("OutputFormat") == want_sd["OutputFormat"]
        and (sd.get("SerdeInfo") or {}).get("SerializationLibrary") == PARQUET_SERDE
    )
