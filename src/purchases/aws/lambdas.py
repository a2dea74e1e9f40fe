"""AWS Lambda handlers: `trigger`, `pending`, `upsert`, `record_failure` (the deployment
template names them `purchases.aws.lambdas.<name>`).

Configuration is the product's (PURCHASES_* environment variables, `config.Settings`) plus
PURCHASES_STATE_MACHINE_ARN for `trigger`. PURCHASES_LAKE must be set (s3://bucket/prefix).
Endpoint, region and credentials of the AWS APIs are the standard AWS ones.

No handler imports an engine (duckdb, pyspark, pyarrow): `trigger` needs the lake's location
and botocore, `pending` the commit log and the serving ledger, `upsert` the serving module,
`record_failure` the run history.

Events
------

``trigger(event, context)`` receives what S3 or EventBridge sends:

* an S3 event notification, ``{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key" (URL-encoded), "eTag",
  "versionId", "sequencer"}}}, ...]}``;
* an EventBridge event, ``{"source": "aws.s3", "detail-type": "Object Created", "detail":
  {"bucket": {"name"}, "object": {"key" (not encoded), "etag", "version-id", "sequencer"}}}``;
* S3's ``{"Event": "s3:TestEvent", ...}`` (starts nothing).

Each bronze data file of the lake (`triggers.parse_notifications`; anything else is skipped
with its reason) gets one execution of the state machine, input
``{"year": "YYYY", "month": "MM", "day": "DD", "s3_path": "s3://bucket/key"}`` (the file's
ingestion date from its bronze path), named by `execution_name`: the same delivery again
(S3 delivers at least once), or two deliveries racing, start one execution. It returns
``{"started": [{"path", "s3_path", "execution_name", "execution_arn"}], "skipped": [{"key",
"reason"}]}``; a StartExecution answered ``ExecutionAlreadyExists`` is skipped as already
handled. Other AWS errors are raised after every file was tried (the Lambda retry then
starts only what is missing).

``pending(event, context)`` is the sweep's check (`pipeline.SWEEP`, state ``find_pending``):
an execution without a file invokes it first, with ``{"run_id": <execution name>, "step":
"find_pending"}``. It counts the bronze files not processed yet (path + sha256 in no commit,
`steps.pending_files`: a file is read only when a processed path's size or stamp moved) and
the committed batches with gold output that the serving database's ledger does not hold
(the database is opened as `upsert` opens it, schema migrated if behind), and returns
``{"run_id", "files": <n>, "batches": <n>, "pending_files": [<the first PENDING_LISTED
paths>], "unserved_batches": [<the first PENDING_LISTED ids>]}``; the state machine keeps the
two counts and starts at bronze_to_silver (files), gold_to_staging (batches only) or ends.
It writes nothing to the lake and no run record (an idle sweep leaves none). The database is
PURCHASES_DATABASE_SECRET_ARN or PURCHASES_DATABASE_URL, as for ``upsert``; its errors are
raised as ``upsert``'s are.

``upsert(event, context)`` receives the Payload the state machine passes its Lambda tasks,
``{"run_id": <execution name>, "step": "upsert", "year", "month", "day"}``, runs the upsert
step (every committed batch not yet in the serving ledger, oldest first) through
`step_runner.run_step` and records it under ``run_id`` in the lake's run history. The
database is PURCHASES_DATABASE_SECRET_ARN (Secrets Manager, `purchases.secrets`) or
PURCHASES_DATABASE_URL. It returns ``{"step", "run_id", "status", "counts"}``. A failure is
raised with the ASL error name as its type: ``Purchases.Transient`` when a retry may help
(the task's Retry matches it), else the product's error class; its message never holds a
password.

``record_failure(event, context)`` is the target of the state machine's Catch. Its Payload:

    {"run_id.$": "$$.Execution.Name",
     "step": "<the failed step>",          # optional: else taken from the run's history
     "input.$": "$",                       # the execution input (an "error" key in it is dropped)
     "error.$": "$.error"}                 # the Catch's ResultPath: {"Error": ..., "Cause": ...}

The run input may also be given flat (year/month/day/s3_path beside run_id). ``Cause`` is
often a JSON string: a Lambda's ``{"errorType", "errorMessage", ...}`` or a Glue job run's
``{"JobName", "Id", "JobRunState", "ErrorMessage", ...}``; the message and class are taken
from it. The failure is recorded in ``_state/runs/<run_id>.json`` (status failed,
failed_step, error_class, error; trigger "aws" when no step recorded the run before), so
`purchases runs` on any machine shows it; a failed sweep check (step ``find_pending``) is shown
as a step before the pipeline's, which are skipped. Recording the same failure again changes
nothing.
Returns ``{"run_id", "step", "status": "failed", "error_class", "error", "recorded"}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from contextlib import suppress
from datetime import date
from typing import Any

from purchases import commit_log, serving, step_runner
from purchases.aws.clients import aws_client
from purchases.config import Settings, load_settings
from purchases.errors import ConfigError, InputError, PurchasesError
from purchases.history import RunRecord, StepRun
from purchases.pipeline import PIPELINE, RUN_PARAMETERS, SWEEP, TRANSIENT, task
from purchases.steps import RunContext, pending_files
from purchases.storage import Lake, day_parts, parse_bronze_path
from purchases.triggers import CreatedObject, Skipped, lake_bucket, parse_notifications

log = logging.getLogger(__name__)

STATE_MACHINE_ENV = "PURCHASES_STATE_MACHINE_ARN"
TRIGGER = "aws"
"""The trigger recorded for runs a Lambda records first (S3 event -> Step Functions)."""

NAME_MAX = 80
# Execution names are [A-Za-z0-9_-]{1,80}: Step Functions allows more, but only these keep
# CloudWatch logging working and every run-history path (the name is the run id) safe.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_DIGEST_CHARS = 32  # 128 bits of the delivery id: unique, with room for a readable prefix

_RUN_ID = re.compile(r"^[A-Za-z0-9_.=+@-]{1,128}$")
# user:password@ in a URL; greedy to the netloc's last @ (a URL's password has no raw "/").
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")
ERROR_MAX = 2000
"""Characters of an error message kept in the run history."""


# --- trigger -------------------------------------------------------------------------------


def execution_name(obj: CreatedObject) -> str:
    """The execution's name for one object creation: `<YYYYMMDD>-<file stem>-<hash>`.

    At most 80 characters of [A-Za-z0-9_-]; the hash (of bucket, key, version id, ETag and
    sequencer: `CreatedObject.delivery_id`) makes it unique per creation and the same for
    every delivery of it, so StartExecution itself refuses a second execution.
    """
    parsed = parse_bronze_path(obj.path)
    stem = obj.path.rsplit("/", 1)[-1]
    for suffix in (".csv.gz", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    readable = f"{parsed[0].isoformat().replace('-', '')}-{stem}" if parsed else stem
    room = NAME_MAX - _DIGEST_CHARS - 1
    readable = _NAME_UNSAFE.sub("_", readable)[:room].strip("_-") or "file"
    return f"{readable}-{obj.delivery_id[:_DIGEST_CHARS]}"


def execution_input(lake: Lake, obj: CreatedObject) -> dict[str, str]:
    """The state machine's input for one bronze file (pipeline.RUN_PARAMETERS)."""
    parsed = parse_bronze_path(obj.path)
    if parsed is None:  # parse_notifications passes bronze paths only
        raise InputError(f"{obj.path}: not a bronze path")
    day: date = parsed[0]
    return {**day_parts(day), "s3_path": lake.url(obj.path)}


def trigger(event: Any, context: Any = None) -> dict[str, Any]:
    """Start one state machine execution per new bronze file the S3 event names (module doc).

    Raises:
        ConfigError: PURCHASES_LAKE or PURCHASES_STATE_MACHINE_ARN not set.
        PurchasesError: StartExecution failed for some file (after every file was tried).
    """
    _setup_logging()
    settings = _settings()
    state_machine = os.environ.get(STATE_MACHINE_ENV)
    if not state_machine:
        raise ConfigError(f"{STATE_MACHINE_ENV} is not set: the ARN of the pipeline's state "
                          "machine, which the trigger starts")
    lake = Lake(settings.lake_uri)
    found, skipped = parse_notifications(event, *lake_bucket(lake))
    started: list[dict[str, str]] = []
    failed: list[str] = []
    client = aws_client("stepfunctions") if found else None
    for obj in found:
        if lake.bronze_object(obj.path) is None:
            skipped.append(Skipped(obj.key, "no longer in the lake"))
            continue
        name = execution_name(obj)
        payload = execution_input(lake, obj)
        try:
            answer = client.start_execution(  # type: ignore[union-attr]
                stateMachineArn=state_machine, name=name, input=json.dumps(payload))
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError, told apart by code
            code = _aws_error_code(exc)
            if code == "ExecutionAlreadyExists":
                resumed = _resume(client, state_machine, name, payload)
                if resumed is None:
                    skipped.append(Skipped(obj.key, f"already handled: execution {name} exists"))
                    continue
                name, answer = resumed
            else:
                log.error("could not start an execution for %s: %s", obj.key, exc)
                failed.append(f"{obj.key}: {code or type(exc).__name__}")
                continue
        log.info("started execution %s for %s", name, payload["s3_path"])
        # A repeat of a running execution's name and input is answered with that execution
        # (StartExecution is idempotent): reported here with the same ARN, nothing new runs.
        started.append({"path": obj.path, "s3_path": payload["s3_path"], "execution_name": name,
                        "execution_arn": answer["executionArn"]})
    for s in skipped:
        log.info("skipped %s: %s", s.key or "<event>", s.reason)
    if failed:
        raise PurchasesError(
            f"could not start {len(failed)} execution(s) of {state_machine} "
            f"({len(started)} started): {'; '.join(failed)}")
    return {"started": started, "skipped": [{"key": s.key, "reason": s.reason} for s in skipped]}


RESUMES_MAX = 20
"""Follow-up executions one file may get after its execution failed (see `_resume`)."""
_ENDED_BADLY = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


def _resume(
    client: Any, state_machine: str, name: str, payload: dict[str, str]
) -> tuple[str, dict[str, Any]] | None:
    """A follow-up execution for a redelivered file whose execution ended badly.

    A step killed after the commit point leaves a batch committed but not served; the
    redelivered event (S3's retry, or a user re-sending it) must bring serving up to date.
    The file itself is processed already, so the follow-up's bronze_to_silver finds nothing
    pending and its gold_to_staging and upsert apply every unserved batch. Names are
    `<name>-r<k>`, the lowest k not taken: deterministic, so racing redeliveries start one.
    Returns (name, StartExecution answer), or None when an execution for the file succeeded
    or is still running (nothing to do).
    """
    base = state_machine.replace(":stateMachine:", ":execution:", 1)
    if client.describe_execution(executionArn=f"{base}:{name}")["status"] not in _ENDED_BADLY:
        return None
    for k in range(1, RESUMES_MAX + 1):
        candidate = f"{name[: NAME_MAX - 4]}-r{k}"
        try:
            status = client.describe_execution(executionArn=f"{base}:{candidate}")["status"]
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError, told apart by code
            if _aws_error_code(exc) != "ExecutionDoesNotExist":
                raise
        else:
            if status in _ENDED_BADLY:
                continue
            return None
        try:
            answer = client.start_execution(
                stateMachineArn=state_machine, name=candidate, input=json.dumps(payload))
        except Exception as exc:  # noqa: BLE001
            if _aws_error_code(exc) == "ExecutionAlreadyExists":
                return None  # a racing redelivery started it a moment ago
            raise
        log.info("execution %s ended badly; started %s to finish its work", name, candidate)
        return candidate, answer
    log.warning("execution %s and %d follow-ups ended badly; leaving it to the sweep",
                name, RESUMES_MAX)
    return None


# --- pending (the sweep's check) -----------------------------------------------------------

PENDING_LISTED = 20
"""Pending paths and unserved batch ids named in the check's result (the counts are whole):
enough to read in the execution history, far from Step Functions' 256 KB state limit."""


def pending(event: Any, context: Any = None) -> dict[str, Any]:
    """Count the bronze files and committed batches a sweep execution has to process or
    serve (module doc). Changes nothing in the lake.

    Raises:
        Exception: named `Purchases.Transient` (worth the task's Retry) or after the product's
            error class, with a message that holds no password.
    """
    _setup_logging()
    event = event if isinstance(event, dict) else {}
    step = event.get("step") or SWEEP.check.name
    try:
        if step != SWEEP.check.name:
            raise InputError(f"the pending Lambda runs {SWEEP.check.name}, not {step!r}")
        run_id = _run_id(event)
        settings = _serving_settings("pending")
        lake = Lake(settings.lake_uri)
        commits = commit_log.load_commits(lake)
        files = [f.path for f in pending_files(lake, commits)]
        with serving.connect(settings) as db:
            applied = db.applied_batches()
        # What gold_to_staging and upsert would take: committed, with gold output, not applied.
        batches = [c.batch_id for c in commits
                   if c.batch_id not in applied and commit_log.gold_files(c)]
    except Exception as exc:
        raise _lambda_error(exc) from None
    log.info("run %s: %d pending file(s) %s, %d unserved batch(es) %s", run_id, len(files),
             files[:PENDING_LISTED], len(batches), batches[:PENDING_LISTED])
    return {"run_id": run_id, "files": len(files), "batches": len(batches),
            "pending_files": files[:PENDING_LISTED], "unserved_batches": batches[:PENDING_LISTED]}


# --- upsert --------------------------------------------------------------------------------


def upsert(event: Any, context: Any = None) -> dict[str, Any]:
    """Run the `upsert` step of the execution `event["run_id"]` (module doc).

    Raises:
        Exception: named `Purchases.Transient` (worth the task's Retry) or after the product's
            error class, with a message that holds no password; recorded in the run history.
    """
    _setup_logging()
    event = event if isinstance(event, dict) else {}
    step = event.get("step") or "upsert"
    if step != "upsert":
        raise InputError(f"the upsert Lambda runs the upsert step, not {step!r}")
    try:
        settings = _serving_settings("upsert")
        lake = Lake(settings.lake_uri)
        run_id = _run_id(event) or _fresh_run_id()
        record = step_runner.load_or_start(lake, run_id, PIPELINE, trigger=TRIGGER,
                                           run_input=_run_input(event))
        # Step Functions retries by invoking the Lambda again: one attempt per invocation.
        result = step_runner.run_step(task(step), RunContext(settings, lake, run_id), record,
                                      retry=False)
        step_runner.finish(lake, record, "succeeded")
    except Exception as exc:
        raise _lambda_error(exc) from None
    entry = next(s for s in record.steps if s.step == step)
    log.info("run %s: upsert %s, %s", run_id, entry.status, result.counts)
    return {"step": step, "run_id": run_id, "status": entry.status, "counts": result.counts}


def _lambda_error(exc: BaseException) -> Exception:
    """The exception a Lambda raises for a failed step: its type named as Step Functions
    matches errors (the Lambda runtime reports the class name as errorType), its message
    scrubbed of any URL password, no chained cause that could hold one."""
    names = step_runner.error_names(exc)
    name = TRANSIENT if TRANSIENT in names else names[0]
    kind = type(name, (Exception,), {"__module__": __name__, "__qualname__": name})
    message = scrub(str(exc))
    log.error("%s: %s", name, message)
    return kind(message)


# --- record_failure ------------------------------------------------------------------------


def record_failure(event: Any, context: Any = None) -> dict[str, Any]:
    """Record a failed execution in the lake's run history (module doc); idempotent."""
    _setup_logging()
    if not isinstance(event, dict):
        raise InputError("record_failure expects the Catch payload: {run_id, step, input, error}")
    run_id = _run_id(event)
    if run_id is None:
        raise InputError("record_failure: the payload has no run_id (pass $$.Execution.Name)")
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    error_class, message = describe_error(error)
    run_in = _run_input(event)
    settings = _settings()
    lake = Lake(settings.lake_uri)
    record = step_runner.load_or_start(lake, run_id, PIPELINE, trigger=TRIGGER,
                                       run_input=run_in)
    step = event.get("step") or _failed_step(record)
    known = {s.step for s in record.steps}
    if step == SWEEP.check.name and step not in known:
        # The sweep's check failed before any step ran: shown first, the steps after it
        # skipped, as `purchases runs show` shows any failed step.
        record.steps.insert(0, StepRun(step))
        known.add(step)
    if step not in known:
        raise InputError(f"record_failure: step {step!r} is not a pipeline step "
                         f"({', '.join(sorted(known | {SWEEP.check.name}))})")
    recorded = _mark_failed(record, step, error_class, message, run_in)
    if recorded:
        step_runner.finish(lake, record)
        log.info("run %s recorded failed in step %s: %s: %s", run_id, step, error_class, message)
    return {"run_id": run_id, "step": step, "status": record.status,
            "error_class": record.error_class, "error": record.error, "recorded": recorded}


def describe_error(error: Mapping[str, Any]) -> tuple[str, str]:
    """(error class, message) of a Catch's `{"Error", "Cause"}`, from the Cause's JSON when it
    is a Lambda's or a Glue job run's; every URL password scrubbed, the message bounded."""
    name = str(error.get("Error") or "Purchases.Failed")
    cause: Any = error.get("Cause")
    if isinstance(cause, str) and cause.strip().startswith("{"):
        with suppress(ValueError):  # not JSON after all: kept as the text it is
            cause = json.loads(cause)
    if isinstance(cause, dict):
        if "errorMessage" in cause or "errorType" in cause:  # a Lambda function's error
            name = str(cause.get("errorType") or name)
            message = str(cause.get("errorMessage") or name)
        elif "JobRunState" in cause or "ErrorMessage" in cause:  # a Glue job run
            run = " ".join(str(cause[k]) for k in ("JobName", "Id") if cause.get(k))
            state = cause.get("JobRunState", "FAILED")
            message = f"Glue job run {run} {state}".replace("  ", " ")
            if cause.get("ErrorMessage"):
                message += f": {cause['ErrorMessage']}"
        else:  # Arguments and the like are left out: they may carry settings
            message = str(cause.get("message") or cause.get("Message") or name)
    else:
        message = str(cause) if cause else name
    return scrub(name)[:200], scrub(message)[:ERROR_MAX]


def _failed_step(record: RunRecord) -> str:
    """The step a failure belongs to when the payload does not say: the one running or
    failed, else the first that did not succeed."""
    for wanted in (("running", "failed"), ("pending", "skipped", "interrupted")):
        for s in record.steps:
            if s.status in wanted:
                return s.step
    return record.steps[-1].step


def _mark_failed(record: RunRecord, step: str, error_class: str, message: str,
                 run_in: dict[str, Any]) -> bool:
    """Put the failure in the record; False when it says so already (nothing to write)."""
    entry = next(s for s in record.steps if s.step == step)
    if record.status == "failed" and record.failed_step == step and entry.status == "failed":
        return False  # recorded before: by this handler, or by the step itself (more precisely)
    if entry.status != "failed" or not entry.error:
        entry.status, entry.error_class, entry.error = "failed", error_class, message
    record.status, record.failed_step = "failed", step
    record.error_class, record.error = entry.error_class, entry.error
    if not any(record.input.get(k) for k in RUN_PARAMETERS):
        record.input = run_in
    # The steps after it never ran; those before keep whatever their own runs recorded.
    for s in record.steps[record.steps.index(entry) + 1:]:
        if s.status in ("pending", "running"):
            s.status = "skipped"
    return True


# --- shared --------------------------------------------------------------------------------


def scrub(text: str) -> str:
    """Text with the password of any URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _settings() -> Settings:
    settings = load_settings()
    if not settings.lake:
        raise ConfigError("PURCHASES_LAKE is not set: the Lambda handlers work on the lake "
                          "at s3://bucket/prefix")
    return settings


def _serving_settings(function: str) -> Settings:
    settings = _settings()
    if not (settings.database_secret_arn or settings.database_url):
        # The default SQLite file would live in the function's own (read-only) folder.
        raise ConfigError("set PURCHASES_DATABASE_SECRET_ARN (or PURCHASES_DATABASE_URL): "
                          f"the {function} Lambda has no serving database of its own")
    return settings


def _run_id(event: Mapping[str, Any]) -> str | None:
    """The execution's run id (its name), checked to be one path component."""
    value = event.get("run_id")
    if value in (None, ""):
        return None
    text = str(value)
    if not _RUN_ID.match(text) or text.startswith("."):
        raise InputError(f"run_id {text!r} is not a run id (1-128 of A-Z a-z 0-9 _ . = + @ -)")
    return text


def _run_input(event: Mapping[str, Any]) -> dict[str, Any]:
    """The execution input (year/month/day/s3_path), nested under "input" or given flat."""
    source = event.get("input") if isinstance(event.get("input"), dict) else event
    return {k: (None if source.get(k) is None else str(source.get(k))) for k in RUN_PARAMETERS}


def _fresh_run_id() -> str:
    from purchases.orchestrator import new_run_id  # an upsert sweep invoked by hand

    return new_run_id()


def _aws_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _setup_logging() -> None:
    # On Lambda the runtime's root handler shows WARNING and up; the handlers' INFO lines
    # (what started, what was skipped and why) belong in CloudWatch too.
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        logger = logging.getLogger("purchases")
        if logger.level == logging.NOTSET:
            level = logging.getLevelName(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper())
            logger.setLevel(level if isinstance(level, int) else logging.INFO)


__all__ = ["describe_error", "execution_input", "execution_name", "pending", "record_failure",
           "scrub", "trigger", "upsert"]
