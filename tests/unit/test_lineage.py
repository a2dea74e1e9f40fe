"""OpenLineage events (issue 12): a run with the file transport writes START and COMPLETE (or
FAIL) RunEvents that validate, the datasets are named without credentials, lineage is off by
default, and neither a dead endpoint nor a missing `lineage` extra ever fails a run.

How the events are validated. openlineage-python 1.54 ships no JSON Schema file: its wheel
holds only the Python classes generated from the spec (`openlineage.client.generated`), each
naming its schema by URL (`https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent`,
`.../facets/1-1-1/ProcessingEngineRunFacet.json`, ...), and nothing may be fetched here. So
every event is checked twice against what the client does ship:
1. jsonschema (Draft 2020-12, with format checks) against a schema derived from those
   generated attrs classes: each field's JSON type, required fields (no default, or set by
   the class itself such as `_producer`/`_schemaURL`), the eventType enum, `date-time` for
   eventTime and `uuid` for runId, and each facet by the class of its key;
2. a rebuild through the same classes (their validators run: eventTime must be ISO 8601 with a
   time, runId a UUID), whose serialisation must equal the line written, schema URLs included.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from conftest import REQUIRE_SERVICES
from purchases import lineage
from purchases.config import load_settings
from purchases.history import RunRecord, StepRun
from purchases.orchestrator import RunFailed

HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"

try:
    import attr
    import jsonschema
    from openlineage.client.generated import (
        base,
        error_message_run,
        input_statistics_input_dataset,
        job_type_job,
        output_statistics_output_dataset,
        processing_engine_run,
        tags_run,
    )
    from openlineage.client.serde import Serde
except ImportError as missing:  # the `lineage` and `dev` extras; required in CI
    if REQUIRE_SERVICES:
        raise
    pytest.skip(f"{missing.name} is not installed (pip install -e '.[lineage,dev]')",
                allow_module_level=True)

FACETS: dict[str, type] = {
    "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
    "tags": tags_run.TagsRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "jobType": job_type_job.JobTypeJobFacet,
    "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet,
    "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
}
FORMATS = {("BaseEvent", "eventTime"): "date-time", ("Run", "runId"): "uuid"}


# --- the schema the client's generated classes define ------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    """The attrs fields' types (annotations are strings: evaluated in the defining module)."""
    hints: dict[str, Any] = {}
    for f in attr.fields(cls):
        owner = next(k for k in cls.__mro__ if f.name in k.__dict__.get("__annotations__", {}))
        hint = f.type
        if isinstance(hint, str):
            hint = eval(hint, vars(sys.modules[owner.__module__]))  # noqa: S307 - their source
        hints[f.name] = hint
    return hints


def schema_of(tp: Any) -> dict[str, Any]:
    """JSON Schema of a type used by the generated classes."""
    if tp is type(None):
        return {"type": "null"}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp in (float, typing.Any):
        return {"type": "number"} if tp is float else {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": schema_of(args[0])}
    if origin is dict:
        value = args[1]
        if isinstance(value, type) and issubclass(value, base.BaseFacet):
            known = {k: schema_of(c) for k, c in FACETS.items() if issubclass(c, value)}
            return {"type": "object", "properties": known, "additionalProperties": False}
        return {"type": "object", "additionalProperties": schema_of(value)}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and attr.has(tp):
        hints = _hints(tp)
        props, required = {}, []
        for f in attr.fields(tp):
            prop = schema_of(hints[f.name])
            for klass in tp.__mro__:
                if (klass.__name__, f.name) in FORMATS:
                    prop = {**prop, "format": FORMATS[(klass.__name__, f.name)]}
            props[f.name] = prop
            if f.default is attr.NOTHING or not f.init:
                required.append(f.name)
        return {"type": "object", "properties": props, "required": required}
    raise AssertionError(f"no schema for {tp!r}")


RUN_EVENT_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    **schema_of(base.RunEvent)}


def rebuilt(tp: Any, value: Any) -> Any:
    """The value rebuilt through the generated classes (their validators run)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else rebuilt(inner[0], value)
    if origin is list:
        return [rebuilt(args[0], v) for v in value]
    if origin is dict:
        facet = isinstance(args[1], type) and issubclass(args[1], base.BaseFacet)
        return {k: rebuilt(FACETS[k] if facet else args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if isinstance(tp, type) and attr.has(tp):
        hints = _hints(tp)
        kwargs = {f.alias: rebuilt(hints[f.name], value[f.name])
                  for f in attr.fields(tp) if f.init and f.name in value}
        return tp(**kwargs)
    return value


VALIDATOR = jsonschema.Draft202012Validator(
    RUN_EVENT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def assert_valid(event: dict[str, Any]) -> None:
    VALIDATOR.validate(event)
    assert Serde.to_dict(rebuilt(base.RunEvent, event)) == event


def test_the_derived_schema_rejects_what_the_spec_rejects() -> None:
    """The check can fail: a missing runId, a bad eventType or time, an unknown facet."""
    good = {
        "eventTime": "2024-01-15T10:00:00.000+00:00", "eventType": "START",
        "producer": "urn:purchases:test", "schemaURL": base.RunEvent._get_schema(),
        "run": {"runId": "7b1bb0a9-0a79-5686-9a71-f2f3196ed5de", "facets": {}},
        "job": {"namespace": "purchases", "name": "pipeline", "facets": {}},
        "inputs": [], "outputs": [],
    }
    assert_valid(good)
    for broken in (
        {**good, "run": {}},
        {**good, "eventType": "FINISHED"},
        {**good, "eventTime": "yesterday"},
        {**good, "run": {"runId": "run-1", "facets": {}}},
        {**good, "job": {"namespace": "purchases", "facets": {}}},
        {**good, "run": {"runId": good["run"]["runId"], "facets": {"madeUp": {}}}},
        {**good, "inputs": [{"namespace": "file:///lake"}]},
    ):
        assert list(VALIDATOR.iter_errors(broken)), broken


# --- runs that emit ----------------------------------------------------------------------------


@pytest.fixture
def clean_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(lineage, "_warned", set())
    monkeypatch.setattr(lineage, "_clients", {})


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_run_writes_start_and_complete_events(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_lineage: None
) -> None:
    out = tmp_path / "events" / "lineage.jsonl"
    out.parent.mkdir()
    monkeypatch.setenv(lineage.FILE_ENV, str(out))
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n"
                 "2,Bo,Zed,bo@x.io,101,2024-01-10,-1,AUD\n"
                 "3,Cy,Ng,cy@x.io,102,2024-01-11,12.50,USD\n")
    harness.land("broken.csv", "customer_id,first_name\n1,Ann\n")  # rejected whole
    record = harness.run()

    start, complete = events(out)
    for event in (start, complete):
        assert_valid(event)
        assert event["run"]["runId"] == lineage.run_uuid(record.run_id)
        assert event["job"] == {**event["job"], "namespace": "purchases", "name": "pipeline"}
        tags = {t["key"]: t["value"] for t in event["run"]["facets"]["tags"]["tags"]}
        assert tags["purchases.run_id"] == record.run_id
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")

    lake_ns = Path(harness.settings.lake_uri).resolve().as_uri()
    db_ns = "sqlite:///" + str((harness.settings.home / "purchases.db").resolve())
    assert {(d["namespace"], d["name"]) for d in complete["inputs"]} == {
        (lake_ns, "bronze/year=2024/month=01/day=15/a.csv"),
        (lake_ns, "bronze/year=2024/month=01/day=15/broken.csv"),
    }
    rows_in = {d["name"].rsplit("/", 1)[1]: d["inputFacets"].get("inputStatistics", {})
               .get("rowCount") for d in complete["inputs"]}
    assert rows_in == {"a.csv": 3, "broken.csv": None}
    written = {(d["namespace"], d["name"]): d["outputFacets"]["outputStatistics"]["rowCount"]
               for d in complete["outputs"]}
    assert written == {(lake_ns, "silver"): 2, (lake_ns, "quarantine"): 1, (lake_ns, "gold"): 2,
                       (db_ns, "customer_purchase_summary"): 2}
    assert {(d["namespace"], d["name"]) for d in start["outputs"]} == set(written)
    assert start["inputs"] == []  # which files are pending is known once the run has looked

    # A second run appends its own pair: one runId per run.
    harness.land("b.csv", HEADER + "4,Di,Ox,di@x.io,103,2024-01-12,5.00,AUD\n", day="2024-01-16")
    second = harness.run()
    later = events(out)[2:]
    assert [e["eventType"] for e in later] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in later} == {lineage.run_uuid(second.run_id)}
    assert lineage.run_uuid(second.run_id) != lineage.run_uuid(record.run_id)


def test_a_failing_run_writes_fail_with_the_error(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_lineage: None
) -> None:
    out = tmp_path / "lineage.jsonl"
    monkeypatch.setenv(lineage.FILE_ENV, str(out))
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n")
    monkeypatch.setenv("PURCHASES_IO_FAULT", "enospc:_state/commits/")  # disk full at commit
    with pytest.raises(RunFailed) as failed:
        harness.run()
    record = failed.value.record
    start, fail = events(out)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert_valid(fail)
    message = fail["run"]["facets"]["errorMessage"]
    assert message["programmingLanguage"] == "python"
    assert message["message"].startswith(f"{record.failed_step}: {record.error_class}: ")
    assert "no space left" in message["message"].lower()
    assert "outputStatistics" not in json.dumps(fail["outputs"])  # nothing was written

    monkeypatch.delenv("PURCHASES_IO_FAULT")
    harness.run()
    assert [e["eventType"] for e in events(out)] == ["START", "FAIL", "START", "COMPLETE"]


def test_dataset_names_carry_no_credentials(tmp_path: Path, clean_lineage: None) -> None:
    record = RunRecord(
        run_id="20240115T100000000000Z-abcdef", trigger="cli",
        started_at="2024-01-15T10:00:00.000+00:00",
        steps=[StepRun("bronze_to_silver", counts={"accepted": 2, "rejected": 1})],
        files=[{"path": "bronze/year=2024/month=01/day=15/a.csv", "rows_in": 3}],
    )
    settings = load_settings(home=tmp_path / "home",
                             database_url="postgresql+psycopg://app:s3cr3t@db.example:5432/sales",
                             lake="s3://AKIAKEY:s3cr3t@bucket/lake/")
    event = Serde.to_json(lineage.run_event(settings, record, "COMPLETE"))
    assert "s3cr3t" not in event and "AKIAKEY" not in event and "app@" not in event
    parsed = json.loads(event)
    assert_valid(parsed)
    names = {(d["namespace"], d["name"]) for d in parsed["outputs"]}
    assert ("postgresql://db.example:5432/sales", "customer_purchase_summary") in names
    assert ("s3://bucket/lake", "silver") in names
    assert [(d["namespace"], d["name"]) for d in parsed["inputs"]] == [
        ("s3://bucket/lake", "bronze/year=2024/month=01/day=15/a.csv")]
    assert lineage.database_namespace("mysql+pymysql://root:pw@127.0.0.1/test?charset=utf8mb4") \
        == "mysql://127.0.0.1/test"


# --- off by default, never in the way ------------------------------------------------------------


def test_off_by_default_and_the_client_is_imported_lazily(
    harness, monkeypatch: pytest.MonkeyPatch, clean_lineage: None
) -> None:
    assert not lineage.enabled()
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n")
    assert harness.run().status == "succeeded"
    assert not list(harness.settings.home.rglob("*.jsonl"))
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:1")
    assert lineage.enabled()  # the client's own configuration counts too ...
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not lineage.enabled()  # ... and so does its off switch

    # Importing the CLI and the orchestrator does not import the client (Lambda zip, make run).
    code = ("import sys, purchases.cli, purchases.orchestrator, purchases.lineage; "
            "sys.exit(any(m.split('.')[0] == 'openlineage' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_endpoint_or_an_unwritable_file_never_fails_a_run(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    clean_lineage: None,
) -> None:
    caplog.set_level(logging.WARNING, logger="purchases.lineage")
    monkeypatch.setenv(lineage.URL_ENV, f"http://user:s3cr3t@127.0.0.1:{_closed_port()}"
                       "/?password=s3cr3t&api_key=s3cr3t&access_token=s3cr3t&env=prod")
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n")
    assert harness.run().status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.name == "purchases.lineage"]
    assert len(warnings) == 1, warnings  # three events failed; said once
    assert "the run goes on" in warnings[0] and "s3cr3t" not in warnings[0]
    assert "/?password=***&api_key=***&access_token=***&env=prod)" in warnings[0], warnings
    assert harness.summary()[1]["total_spent_aud"] == 10

    caplog.clear()
    monkeypatch.setattr(lineage, "_warned", set())
    monkeypatch.delenv(lineage.URL_ENV)
    monkeypatch.setenv(lineage.FILE_ENV, str(tmp_path))  # a folder: cannot be appended to
    harness.land("b.csv", HEADER + "2,Bo,Zed,bo@x.io,101,2024-01-10,5.00,AUD\n")
    assert harness.run().status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.name == "purchases.lineage"]
    assert len(warnings) == 1 and str(tmp_path) in warnings[0]


@pytest.mark.parametrize("env", [lineage.URL_ENV, "OPENLINEAGE_URL"])
@pytest.mark.parametrize(("url", "shown"), [
    ("user:s3cr3t@127.0.0.1:9", "***@127.0.0.1:9"),  # no scheme: the client refuses it ...
    ("http:user:s3cr3t@127.0.0.1", "***@127.0.0.1"),  # ... and quotes it whole
    ("127.0.0.1:9/x?api_key=s3cr3t", "127.0.0.1:9/x?api_key=***"),
])
def test_a_malformed_lineage_url_is_warned_of_without_its_secrets(
    harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    clean_lineage: None, env: str, url: str, shown: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="purchases.lineage")
    monkeypatch.setenv(env, url)
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "s3cr3t")
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n")
    assert harness.run().status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.name == "purchases.lineage"]
    assert len(warnings) == 1 and "the run goes on" in warnings[0], warnings
    assert "s3cr3t" not in warnings[0] and f"passed {shown};" in warnings[0], warnings


def test_without_the_lineage_extra_a_run_warns_once_and_goes_on(
    harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    clean_lineage: None,
) -> None:
    # As in the Lambda zip or a `make run` venv: the client cannot be imported.
    for name in [m for m in sys.modules if m.split(".")[0] == "openlineage"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openlineage", None)
    caplog.set_level(logging.WARNING, logger="purchases.lineage")
    monkeypatch.setenv(lineage.FILE_ENV, str(tmp_path / "events.jsonl"))
    harness.land("a.csv", HEADER + "1,Ann,Lee,ann@x.io,100,2024-01-10,10.00,AUD\n")
    assert harness.run().status == "succeeded"
    harness.land("b.csv", HEADER + "2,Bo,Zed,bo@x.io,101,2024-01-10,5.00,AUD\n")
    assert harness.run().status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.name == "purchases.lineage"]
    assert len(warnings) == 1 and "pip install 'purchases[lineage]'" in warnings[0]
    assert not (tmp_path / "events.jsonl").exists()
