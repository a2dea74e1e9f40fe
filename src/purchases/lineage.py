"""OpenLineage run events (START, COMPLETE, FAIL), so Marquez, DataHub and the like show the
pipeline: which bronze files each run read and which lake layers and serving table it wrote.

Off by default. Any one of these turns it on (OPENLINEAGE_DISABLED=true turns it off again):

* `PURCHASES_OPENLINEAGE_URL=http://marquez:5000`: the client's HTTP transport (POST to
  `api/v1/lineage`; `PURCHASES_OPENLINEAGE_ENDPOINT` changes that path);
* `PURCHASES_OPENLINEAGE_FILE=/path/events.jsonl`: the client's file transport, one JSON event
  per line, appended;
* the client's own configuration, for everything else (authentication, Kafka, several
  transports): `OPENLINEAGE_CONFIG` (an openlineage.yml), `OPENLINEAGE_URL` (+
  `OPENLINEAGE_API_KEY`) or `OPENLINEAGE__TRANSPORT__...` variables. An openlineage.yml that
  merely lies in the working folder does not turn lineage on by itself.

Datasets are named as the lake and the database name them: namespace = the lake URI
(`file:///...` for a local folder, `s3://bucket/prefix`) or the database URL without user,
password or query (`postgresql://host:5432/db`, `sqlite:////path/purchases.db`); name = the
lake-relative path of a bronze file, the layer (`silver`, `quarantine`, `gold`) or the table.

Lineage never fails or stops a run: an endpoint that is down, a file that cannot be written or
a missing `lineage` extra (the client is imported only when lineage is on; the Lambda zip and
`make run` do not have it) is logged once per process as a warning, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from purchases import __version__
from purchases.config import Settings
from purchases.contract import SUMMARY_TABLE
from purchases.history import RunRecord
from purchases.masking import MASK, is_secret, scrubbed, shown_url

log = logging.getLogger(__name__)

URL_ENV = "PURCHASES_OPENLINEAGE_URL"
ENDPOINT_ENV = "PURCHASES_OPENLINEAGE_ENDPOINT"
FILE_ENV = "PURCHASES_OPENLINEAGE_FILE"
NAMESPACE_ENV = "PURCHASES_OPENLINEAGE_NAMESPACE"
CLIENT_ENV = ("OPENLINEAGE_CONFIG", "OPENLINEAGE_URL")
CLIENT_ENV_PREFIX = "OPENLINEAGE__TRANSPORT"

JOB_NAMESPACE = "purchases"
PRODUCER = f"urn:purchases:{__version__}"
LAKE_LAYERS = ("silver", "quarantine", "gold")
HTTP_TIMEOUT_SECONDS = 5
# The client's default (5 retries, backoff 0.3 s) adds ~10 s to each event when the endpoint
# is down; lineage is worth a short wait, not a slow pipeline.
HTTP_RETRY = {"total": 2, "connect": 2, "read": 2, "backoff_factor": 0.2}

EventType = Literal["START", "COMPLETE", "FAIL"]

_warned: set[str] = set()
_clients: dict[tuple[str, ...], Any] = {}


def transport_config() -> dict[str, Any] | None:
    """The client configuration lineage is turned on with; None when it is off.

    Returns {} when only the client's own configuration (OPENLINEAGE_*) is set: the client
    then reads it itself.
    """
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return None
    if url := os.environ.get(URL_ENV, "").strip():
        endpoint = os.environ.get(ENDPOINT_ENV, "").strip() or "api/v1/lineage"
        return {"type": "http", "url": url, "endpoint": endpoint,
                "timeout": HTTP_TIMEOUT_SECONDS, "retry": HTTP_RETRY}
    if path := os.environ.get(FILE_ENV, "").strip():
        return {"type": "file", "log_file_path": str(Path(path).expanduser()), "append": True}
    client_env = any(os.environ.get(k) for k in CLIENT_ENV) or any(
        k.startswith(CLIENT_ENV_PREFIX) for k in os.environ)
    return {} if client_env else None


def enabled() -> bool:
    """Whether runs emit lineage events (cheap: reads the environment, imports nothing)."""
    return transport_config() is not None


def emit(settings: Settings, record: RunRecord, event_type: EventType) -> None:
    """Send one event of this run, if lineage is on. Never raises (warns once instead)."""
    config = transport_config()
    if config is None:
        return
    try:
        client = _client(config)
        if client is None:
            return
        client.emit(run_event(settings, record, event_type))
    except Exception as exc:  # noqa: BLE001 - lineage must never fail a run
        _warn_once("emit", f"OpenLineage: cannot send the {event_type} event of run "
                   f"{record.run_id} ({_where(config)}): {type(exc).__name__}: "
                   f"{_shown_error(exc, config)}; "
                   "the run goes on (this warning is shown once)")


def _where(config: dict[str, Any]) -> str:
    if config.get("type") == "http":
        return f"{URL_ENV}={shown_url(config['url'])}"
    if config.get("type") == "file":
        return f"{FILE_ENV}={config['log_file_path']}"
    return "the OPENLINEAGE_* configuration"


def _shown_error(exc: Exception, config: dict[str, Any]) -> str:
    """The client's message without the secrets of its configuration: it quotes the URL it
    was given (a malformed one whole) or the path and query it sent."""
    text = str(exc)
    if config.get("type") == "http":
        return scrubbed(text, config["url"])
    for name, value in os.environ.items():  # the client's own configuration
        if not name.startswith("OPENLINEAGE"):
            continue
        if name.endswith("URL"):
            text = scrubbed(text, value)
        elif is_secret(name, "") and len(value) >= 3:  # OPENLINEAGE_API_KEY and the like
            text = text.replace(value, MASK)
    return text


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def _client(config: dict[str, Any]) -> Any:
    """An OpenLineage client for this configuration (one per process), None without the
    `lineage` extra."""
    key = tuple(sorted(f"{k}={v}" for k, v in config.items()))
    if key in _clients:
        return _clients[key]
    try:
        from openlineage.client import OpenLineageClient, set_producer
    except ImportError:
        _warn_once("extra", "OpenLineage is configured but the client is not installed: "
                   "pip install 'purchases[lineage]' (runs go on without lineage events)")
        _clients[key] = None
        return None
    set_producer(PRODUCER)
    # The client would add a sourceCodeLocation facet from the working folder's git remote,
    # which can carry a token, and has nothing to do with this pipeline.
    user_config: dict[str, Any] = {"facets": {"source_code_location": {"disabled": True}}}
    if config:
        user_config["transport"] = config
    client = OpenLineageClient(config=user_config)
    _clients[key] = client
    return client


# --- the event -------------------------------------------------------------------------------


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId of a run: a UUID derived from its run id, so every event of one
    run (and every process of one Step Functions execution) names the same run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:purchases:run:{run_id}"))


def lake_namespace(lake_uri: str) -> str:
    """The lake as a dataset namespace: its URI, `file://` + absolute path when local."""
    if "://" in lake_uri:
        return shown_url(lake_uri.rstrip("/"))
    return Path(lake_uri).expanduser().resolve().as_uri()


def database_namespace(url: str) -> str:
    """The serving database as a dataset namespace: its URL without driver, user, password
    or query, e.g. `postgresql://db.example:5432/sales` or `sqlite:////home/me/purchases.db`."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparseable URL is named by nothing it holds
        return "database"
    from purchases.serving import dialects

    backend = parsed.get_backend_name()
    dialect = dialects.find(backend)
    if dialect is not None and dialect.embedded:  # a file: named by its absolute path
        file = dialect().database_file(parsed)
        database = str(file.resolve()) if file is not None else parsed.database or ""
        return f"{backend}:///{database}"
    host = parsed.host or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{backend}://{host}{port}/{parsed.database or ''}"


def _database_url(settings: Settings) -> str:
    if settings.database_secret_arn:  # host and database come from the secret
        from purchases import serving

        return serving.database_url(settings).render_as_string(hide_password=True)
    return settings.db_url


def run_event(settings: Settings, record: RunRecord, event_type: EventType) -> Any:
    """The OpenLineage RunEvent of a run at START, COMPLETE or FAIL (needs the client)."""
    from openlineage.client import __version__ as client_version
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.generated import (
        error_message_run,
        input_statistics_input_dataset,
        job_type_job,
        output_statistics_output_dataset,
        processing_engine_run,
        tags_run,
    )

    lake_ns = lake_namespace(settings.lake_uri)
    db_ns = database_namespace(_database_url(settings))
    ended = event_type != "START"
    counts = record.counts()

    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=__version__, name="purchases", openlineageAdapterVersion=client_version),
        "tags": tags_run.TagsRunFacet(tags=[
            tags_run.TagsRunFacetFields(key="purchases.run_id", value=record.run_id,
                                        source="PURCHASES"),
            tags_run.TagsRunFacetFields(key="purchases.trigger", value=record.trigger,
                                        source="PURCHASES"),
            tags_run.TagsRunFacetFields(key="purchases.engine", value=settings.engine,
                                        source="PURCHASES"),
        ]),
    }
    if event_type == "FAIL":
        message = f"{record.failed_step or 'run'}: {record.error_class}: {record.error}"
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python")

    inputs = []
    if record.trigger == "reprocess":
        inputs.append(InputDataset(namespace=lake_ns, name="quarantine"))
    files = record.files if ended else []
    for f in files:
        if str(f.get("path", "")).startswith("reprocess:"):
            continue  # counted against the quarantine input above
        stats = {"inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
            rowCount=int(f.get("rows_in") or 0))} if not f.get("file_rejection") else {}
        inputs.append(InputDataset(namespace=lake_ns, name=str(f["path"]), inputFacets=stats))
    if not ended:
        inputs.extend(InputDataset(namespace=lake_ns, name=p)
                      for p in record.requested_files or [])

    rows_out = {
        "silver": counts.get("accepted"),
        "quarantine": counts.get("rejected"),
        "gold": counts.get("customers_changed"),
        SUMMARY_TABLE: counts.get("customers_upserted"),
    }

    def output(namespace: str, name: str) -> Any:
        facets = {}
        if event_type == "COMPLETE" and rows_out.get(name) is not None:
            facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=int(rows_out[name] or 0)))
        return OutputDataset(namespace=namespace, name=name, outputFacets=facets)

    outputs = [output(lake_ns, layer) for layer in LAKE_LAYERS]
    outputs.append(output(db_ns, SUMMARY_TABLE))

    job_name = "reprocess" if record.trigger == "reprocess" else "pipeline"
    return RunEvent(
        eventType=getattr(RunState, event_type),
        eventTime=datetime.now(UTC).isoformat(timespec="milliseconds"),
        run=Run(runId=run_uuid(record.run_id), facets=run_facets),
        job=Job(
            namespace=os.environ.get(NAMESPACE_ENV, "").strip() or JOB_NAMESPACE,
            name=job_name,
            facets={"jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="PURCHASES", jobType="PIPELINE")},
        ),
        producer=PRODUCER,
        inputs=inputs,
        outputs=outputs,
    )


__all__ = [
    "FILE_ENV", "URL_ENV", "database_namespace", "emit", "enabled", "lake_namespace",
    "run_event", "run_uuid", "transport_config",
]
