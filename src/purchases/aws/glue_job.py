"""AWS Glue job entry point: one pipeline step per job run, as Step Functions invokes it.

    python -m purchases.aws.glue_job --JOB_NAME purchases-bronze_to_silver \\
        --step bronze_to_silver --run_id <execution id> --year 2024 --month 1 --day 15 \\
        --s3_path s3://bucket/lake/bronze/year=2024/month=01/day=15/x.csv \\
        --lake s3://bucket/lake --database_url postgresql+psycopg://...

On AWS Glue 5.0 (Spark 3.5, Python 3.11) the arguments are read with awsglue's
``getResolvedOptions`` and the run is wrapped in ``Job.init`` / ``Job.commit``; anywhere else
(``python -m ...`` or ``spark-submit .../glue_job.py ...``) with argparse. The same steps of
`purchases.steps` run, on the Spark engine unless ``--engine`` says otherwise.

Arguments (Glue style, ``--name value``):

* ``--step``: bronze_to_silver | silver_to_gold | gold_to_staging | upsert | all (the rendered
  state machine, `aws.asl.to_asl`, always passes it). When absent it is taken from the job
  name (``<prefix>-<step>``).
* ``--run_id``: ties the steps of one execution together (their hand-over lives under
  ``_runs/<run_id>/``); pass the Step Functions execution name. When absent, a single step
  derives one from the run input (date + file), which is stable across the steps of one
  execution; ``--step all`` makes a fresh one.
* ``--year --month --day``: the ingestion date of the run (checked against the file's path).
* ``--s3_path``: the bronze file of the run: a URL inside the lake (``s3://bucket/lake/...``,
  a local path) or a lake-relative path (``bronze/...``). Only that file is processed; other
  pending files are left for their own runs. Absent or empty (a sweep execution): every
  pending file. An argument whose value is empty may reach the script as the bare flag.
* settings: ``--lake``, ``--database_url``, ``--database_password_file``,
  ``--database_secret_arn`` (Secrets Manager, RDS JSON: `purchases.secrets`), ``--fx_rates``,
  ``--max_amount``, ``--max_record_bytes``, ``--home``, ``--engine``, ``--memory_limit``,
  ``--glue_database``, ``--glue_table_prefix`` (else PURCHASES_* variables).

A single step takes no lock: executions (and other machines on the same lake) may overlap,
and the commit record's conditional write lets exactly one of them commit a batch id. The
loser's silver_to_gold discards its outputs and plans again by itself, as the local
orchestrator does: bronze_to_silver for the same run (its file, from the run's record), then
silver_to_gold, at most `orchestrator.MAX_REPLANS` times, noted as ``lost_commit_races`` in
the run's record (Step Functions retries a Task alone, so the execution cannot go back to its
first step). ``--step all`` runs the local orchestrator (`run_pipeline`, under the lock,
trigger "glue").

Exit status: 0 success, 1 permanent failure, 3 the commit race was lost even after planning
again MAX_REPLANS times (the run's files stay pending: the next sweep execution processes
them), 75 (EX_TEMPFAIL) a transient failure worth a retry. The last line on stdout is a JSON
summary of what the step did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from purchases import commit_log, history, step_runner
from purchases.commit_log import CommitConflict
from purchases.config import load_settings
from purchases.errors import InputError, PurchasesError, TransientError
from purchases.history import RunRecord
from purchases.pipeline import PIPELINE, task
from purchases.steps import RunContext, StepResult
from purchases.storage import Lake, day_parts, parse_bronze_path

STEPS: tuple[str, ...] = (*(t.name for t in PIPELINE), "all")
SETTING_ARGS: tuple[str, ...] = (
    "lake", "database_url", "database_password_file", "database_secret_arn", "fx_rates",
    "max_amount", "max_record_bytes", "home", "engine", "memory_limit", "glue_database",
    "glue_table_prefix",
)
VALIDATION_ARGS: tuple[str, ...] = ("fx_rates", "max_amount", "max_record_bytes")
"""The settings that decide which rows are valid. bronze_to_silver validates, and
silver_to_gold validates again when it plans again after a lost commit race: both jobs must
be given the same (deploy/template.yaml; tests/unit/test_deploy_template.py checks)."""
RUN_ARGS: tuple[str, ...] = ("step", "run_id", "year", "month", "day", "s3_path")
OPTIONAL_ARGS: tuple[str, ...] = (*RUN_ARGS, *SETTING_ARGS)
EXIT_OK, EXIT_FAILED, EXIT_CONFLICT, EXIT_TRANSIENT = 0, 1, 3, 75
COMMIT_STEP = "silver_to_gold"
"""The step whose commit record may lose the race to another writer (CommitConflict)."""


# --- arguments -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> dict[str, str | None]:
    """Glue-style job arguments, with awsglue when it is importable, else argparse.

    Unknown arguments (Glue adds its own, e.g. --TempDir, --job-bookmark-option) are ignored.
    """
    argv = with_empty_values(argv)
    try:
        from awsglue.utils import getResolvedOptions
    except ImportError:
        getResolvedOptions = None  # noqa: N806 - awsglue's name
    if getResolvedOptions is not None:
        present = [n for n in OPTIONAL_ARGS if f"--{n}" in argv]
        required = ["JOB_NAME"] if "--JOB_NAME" in argv else []
        resolved = getResolvedOptions(list(argv), required + present)
        return {n: resolved.get(n) for n in ("JOB_NAME", *OPTIONAL_ARGS)}
    parser = argparse.ArgumentParser(prog="python -m purchases.aws.glue_job",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--JOB_NAME")
    for name in OPTIONAL_ARGS:
        parser.add_argument(f"--{name}")
    known, _unknown = parser.parse_known_args(list(argv)[1:])
    return vars(known)


def with_empty_values(argv: Sequence[str]) -> list[str]:
    """argv with "" after each of our options that has no value (the flag last, or followed by
    another flag): a sweep execution's empty arguments may arrive that way, and both
    getResolvedOptions and argparse would refuse the bare flag."""
    names = {f"--{n}" for n in ("JOB_NAME", *OPTIONAL_ARGS)}
    out = list(argv)
    i = 1
    while i < len(out):
        if out[i] in names and (i + 1 == len(out) or out[i + 1].startswith("--")):
            out.insert(i + 1, "")
        i += 1
    return out


def resolve_step(args: dict[str, str | None]) -> str:
    step = args.get("step")
    if not step and args.get("JOB_NAME"):
        suffix = str(args["JOB_NAME"]).rsplit("-", 1)[-1]
        step = suffix if suffix in STEPS else None
    if step not in STEPS:
        raise InputError(f"--step must be one of {', '.join(STEPS)} (got {step!r}); "
                         "or name the job <prefix>-<step>")
    return step


def run_date(args: dict[str, str | None]) -> date | None:
    """The run's ingestion date from --year/--month/--day (all three, or none)."""
    parts = [args.get("year"), args.get("month"), args.get("day")]
    if not any(parts):
        return None
    if not all(parts):
        raise InputError("--year, --month and --day go together")
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))  # type: ignore[arg-type]
    except ValueError:
        raise InputError(f"--year/--month/--day {parts} is not a calendar date") from None


def lake_path(lake: Lake, path: str) -> str:
    """The lake-relative bronze path of --s3_path (a URL in the lake or a relative path)."""
    p = path.strip()
    for scheme in ("s3a://", "s3n://"):
        if p.startswith(scheme):
            p = "s3://" + p[len(scheme):]
    if p.startswith("file://"):
        p = p[len("file://"):]
    if lake.is_local and os.path.isabs(p):
        rel = os.path.relpath(os.path.abspath(p), lake.root)
        if rel.startswith(".."):
            raise InputError(f"--s3_path {path} is not inside the lake {lake.uri}")
        rel = rel.replace(os.sep, "/")
    elif "://" in p:
        base = lake.url("").rstrip("/")
        if not p.startswith(base + "/"):
            raise InputError(f"--s3_path {path} is not inside the lake {base}")
        rel = p[len(base) + 1:]
    else:
        rel = p.lstrip("/")
    if not rel.startswith("bronze/") or parse_bronze_path(rel) is None:
        raise InputError(f"--s3_path {path}: not a bronze file (expected "
                         "bronze/year=YYYY/month=MM/day=DD/<name> or bronze/YYYY/MM/DD/<name>)")
    return rel


def derived_run_id(day: date | None, rel: str | None) -> str:
    """A run id the steps of one execution agree on without being told (see module doc)."""
    digest = hashlib.sha256(f"{day}|{rel}".encode()).hexdigest()[:12]
    return f"glue-{day.isoformat().replace('-', '')}-{digest}" if day else f"glue-{digest}"


# --- running -------------------------------------------------------------------------------------


def run(args: dict[str, str | None]) -> dict[str, Any]:
    """Run the requested step (or all of them); returns the JSON-ready summary."""
    step = resolve_step(args)
    overrides = {k: args.get(k) for k in SETTING_ARGS}
    overrides["engine"] = overrides.get("engine") or "spark"
    settings = load_settings(**overrides)
    lake = Lake(settings.lake_uri)
    day = run_date(args)
    rel = lake_path(lake, args["s3_path"]) if args.get("s3_path") else None
    if rel and day:
        file_day = parse_bronze_path(rel)[0]  # type: ignore[index]
        if file_day != day:
            raise InputError(f"--s3_path {rel} is in the ingestion date {file_day}, "
                             f"not --year/--month/--day {day}")
    only = [rel] if rel else None

    if step == "all":
        from purchases.orchestrator import run_pipeline

        record = run_pipeline(settings, only_files=only, trigger="glue")
        return {"step": "all", "run_id": record.run_id, "status": record.status,
                "counts": record.counts(), "files": [f["path"] for f in record.files]}

    run_id = args.get("run_id") or derived_run_id(day, rel)
    ctx = RunContext(settings, lake, run_id, only)
    d = day or datetime.now(UTC).date()
    run_in = {**day_parts(d), "s3_path": args.get("s3_path")}
    record = step_runner.load_or_start(lake, run_id, PIPELINE, trigger="glue",
                                       run_input=run_in, requested_files=only)
    if step == PIPELINE[0].name:
        # The start of a run: finish publications a dead run left and drop the staging of
        # runs known to be dead (never of an execution that may still be running).
        from purchases.orchestrator import run_is_dead

        commit_log.recover(lake, commit_log.load_commits(lake),
                           lambda other: other != run_id and run_is_dead(lake, other))
    if step != COMMIT_STEP:
        _skip_steps_before(record, step)
    # Step Functions retries by invoking the job again: one attempt per process.
    if step == COMMIT_STEP:
        result = commit_or_plan_again(ctx, record)
    else:
        result = step_runner.run_step(task(step), ctx, record, retry=False)
    if step == PIPELINE[-1].name:
        step_runner.finish(lake, record, "succeeded")
    entry = next(s for s in record.steps if s.step == step)
    return {"step": step, "run_id": run_id, "status": entry.status, "counts": result.counts,
            "files": [f.path for f in result.files], "seconds": entry.seconds}


def commit_or_plan_again(ctx: RunContext, record: RunRecord) -> StepResult:
    """silver_to_gold; when another writer committed the batch first, plan it again as the
    local orchestrator does: bronze_to_silver for this run's own files (the record's, since
    this job is not given the file), then silver_to_gold, at most MAX_REPLANS times.

    A lost race discards the plan, so bronze_to_silver is recorded pending again: an
    invocation that finds it so (Step Functions retrying this job after exit 3, or after it
    died while planning again) plans first.

    Raises:
        CommitConflict: the race was lost more than MAX_REPLANS times (recorded failed).
    """
    from purchases.orchestrator import MAX_REPLANS

    plan_ctx = replace(ctx, only_files=record.requested_files)
    planning = next(s for s in record.steps if s.step == PIPELINE[0].name)
    replan = "lost_commit_races" in record.recovered and planning.status != "succeeded"
    replans = 0
    while True:
        if replan:
            # As the orchestrator's re-plan; a Glue run has no running marker to renew.
            step_runner.reopen(record)
            step_runner.run_step(task(PIPELINE[0].name), plan_ctx, record, retry=False)
        try:
            return step_runner.run_step(task(COMMIT_STEP), ctx, record, retry=False)
        except CommitConflict as exc:
            lost = record.recovered.get("lost_commit_races", [])
            record.recovered["lost_commit_races"] = [*lost, exc.batch_id]
            planning.status = "pending"  # its plan went with the discarded outputs
            history.save(ctx.lake, record)
            if replans == MAX_REPLANS:
                raise
        replans, replan = replans + 1, True


def _skip_steps_before(record: RunRecord, step: str) -> None:
    """Mark the steps before `step` that never ran in this execution as skipped: a sweep that
    found only unserved batches starts at gold_to_staging (pipeline.SWEEP). (Before the commit
    step a pending plan means a lost race, which commit_or_plan_again plans again.)"""
    for s in record.steps:
        if s.step == step:
            return
        if s.status == "pending":
            s.status = "skipped"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    job = None
    try:
        args = parse_args(argv)
        try:  # on AWS Glue: bookmarks, metrics and the job's lifecycle
            from awsglue.context import GlueContext
            from awsglue.job import Job
            from pyspark.context import SparkContext
        except ImportError:
            pass
        else:
            job = Job(GlueContext(SparkContext.getOrCreate()))
            job.init(args.get("JOB_NAME") or "purchases", args)
        summary = run(args)
    except TransientError as exc:
        print(f"purchases glue job: transient failure (retry): {exc}", file=sys.stderr)
        return EXIT_TRANSIENT
    except CommitConflict as exc:
        print(f"purchases glue job: lost the commit race every time it planned again; the "
              f"files stay pending for the next sweep: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    except PurchasesError as exc:
        print(f"purchases glue job: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if job is not None:
        job.commit()
    print(json.dumps(summary, default=str, sort_keys=True))
    return EXIT_OK


if __name__ == "__main__":  # python -m purchases.aws.glue_job, or spark-submit glue_job.py
    sys.exit(main())


__all__ = ["commit_or_plan_again", "derived_run_id", "lake_path", "main", "parse_args",
           "resolve_step", "run", "with_empty_values"]
