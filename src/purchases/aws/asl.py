"""Amazon States Language: the Step Functions state machine rendered from pipeline.PIPELINE.

The definition is deployed as written by `purchases aws render` / `purchases aws package`
(`statemachine.asl.json`): CloudFormation's `DefinitionSubstitutions` fill in the Glue job
names and Lambda ARNs (`${BronzeToSilverJobName}`, ..., `${RecordFailureFunctionArn}`; see
`substitutions()`), so the file itself names no account, region or stack.

Shape::

    file_or_sweep (Choice): $.s3_path non-empty --> the first step
       \\--a sweep (no file)--> find_pending (Lambda Task: counts at $.pending)
                                   --> anything_pending (Choice, pipeline.SWEEP.routes):
                                         files > 0   --> bronze_to_silver
                                         batches > 0 --> gold_to_staging
                                         otherwise   --> nothing_pending (Succeed)

and for each declared task `<step>` in order (find_pending too)::

    <step> (Task, Retry per Task.aws_retries, TimeoutSeconds) --Next--> the next step | End
       \\--Catch States.ALL, error at $.error--> <step>_failed (Pass: $.failed_step = "<step>")
                                                   --> record_failure (Lambda Task) --> run_failed

Every step receives the execution input unchanged (`ResultPath: null`; the sweep's check adds
its counts beside it); the execution name is every step's run id (`$$.Execution.Name`), which
ties the steps of one execution together in the lake's run history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from purchases.pipeline import (
    ALL_ERRORS,
    FAILURE_STATE,
    PIPELINE,
    RECORD_FAILURE,
    RESOURCES,
    SWEEP,
    Retry,
    Task,
    task,
)

DEFINITION_FILE = "statemachine.asl.json"
"""The file name `purchases aws render --out` and `purchases aws package` write."""

RUN_ID = "$$.Execution.Name"
"""Every step's run id: the execution's name, which the trigger derives from the file."""
RECORD_FAILURE_KIND = "lambda"
"""record_failure is a Lambda function, like every handler of `aws.lambdas`."""

FILE_OR_SWEEP = "file_or_sweep"
"""The first state: an execution with a file runs the pipeline, a sweep checks first."""
SWEEP_ROUTE = "anything_pending"
"""The Choice after the sweep's check: the step to start at, or NOTHING_PENDING."""
NOTHING_PENDING = "nothing_pending"
"""Where an idle sweep ends (Succeed): no Glue job started, no run record written."""


def function_name(step: str) -> str:
    """The Lambda handler (`aws.lambdas.<name>`) or Glue job step a state invokes."""
    return SWEEP.function if step == SWEEP.check.name else step


def placeholder(step: str) -> str:
    """The DefinitionSubstitutions key of a state's Glue job name or Lambda ARN, e.g.
    `BronzeToSilverJobName`, `UpsertFunctionArn`, `RecordFailureFunctionArn`,
    `PendingFunctionArn` (the sweep's check, named after its function)."""
    kind = RECORD_FAILURE_KIND if step == RECORD_FAILURE else task(step).resource
    camel = "".join(word.capitalize() for word in function_name(step).split("_"))
    return camel + ("JobName" if kind == "glue" else "FunctionArn")


def substitutions() -> dict[str, str]:
    """Every placeholder the definition uses, with the state it stands for (for the template's
    DefinitionSubstitutions, which must supply exactly these)."""
    states = (*(t.name for t in PIPELINE), SWEEP.check.name, RECORD_FAILURE)
    return {placeholder(s): s for s in states}


def to_asl(
    *,
    resources: Mapping[str, str] | None = None,
    comment: str = "purchases: bronze -> silver -> gold -> staging -> upsert (a sweep checks "
                   "what is pending first)",
) -> dict[str, Any]:
    """Render PIPELINE as an Amazon States Language state machine (a JSON-ready dict).

    Args:
        resources: a step's (or record_failure's) Glue job name or Lambda ARN, replacing its
            `${...}` placeholder (tests that run the definition without CloudFormation).
        comment: the definition's Comment.

    Returns:
        The definition: an execution with a file starts at the first step, a sweep runs
        `pipeline.SWEEP.check` and starts where `SWEEP.routes` say (or ends). Glue tasks run
        `glue:startJobRun.sync` with their Parameters as `--<name>` string job arguments,
        Lambda tasks `lambda:invoke` with them in the payload; each retries per
        `Task.aws_retries` and catches every error to its `<step>_failed` state, then
        `record_failure`, then the Fail state.
    """
    resources = resources or {}

    def target(step: str) -> str:
        return resources.get(step, "${" + placeholder(step) + "}")

    states: dict[str, Any] = {FILE_OR_SWEEP: _file_or_sweep()}
    check = SWEEP.check
    states[check.name] = {**_task_state(check, target(check.name)),
                          "Comment": "a sweep: count the pending files and unserved batches",
                          # Only the counts: the run input stays as it was, beside them.
                          "ResultSelector": {f"{r.count}.$": f"$.Payload.{r.count}"
                                             for r in SWEEP.routes},
                          "ResultPath": f"$.{SWEEP.result}",
                          "Next": SWEEP_ROUTE}
    states[f"{check.name}_failed"] = _failed_state(check.name)
    states[SWEEP_ROUTE] = _sweep_route()
    states[NOTHING_PENDING] = {"Type": "Succeed",
                               "Comment": "a sweep that found nothing to do"}
    for i, t in enumerate(PIPELINE):
        state = _task_state(t, target(t.name))
        if i + 1 < len(PIPELINE):
            state["Next"] = PIPELINE[i + 1].name
        else:
            state["End"] = True
        states[t.name] = state
        states[f"{t.name}_failed"] = _failed_state(t.name)
    lam = RESOURCES[RECORD_FAILURE_KIND]
    states[RECORD_FAILURE] = {
        "Type": "Task",
        "Comment": "record the failed step and its error in the lake's run history",
        "Resource": lam.integration,
        "Parameters": {
            "FunctionName": target(RECORD_FAILURE),
            "Payload": {"run_id.$": RUN_ID, "step.$": "$.failed_step", "input.$": "$",
                        "error.$": "$.error"},
        },
        "TimeoutSeconds": lam.timeout_seconds,
        "ResultPath": None,
        "Retry": [_retrier(r) for r in lam.retries],
        # Not recorded after all: the execution fails anyway, its history holds the error.
        "Catch": [{"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.record_failure_error",
                   "Next": FAILURE_STATE}],
        "Next": FAILURE_STATE,
    }
    states[FAILURE_STATE] = {
        "Type": "Fail",
        "Error": "Purchases.RunFailed",
        "Cause": "a pipeline step failed: `purchases runs` and the execution's $.error say "
                 "which and why",
    }
    return {"Comment": comment, "StartAt": FILE_OR_SWEEP, "States": states}


def render(definition: Mapping[str, Any]) -> str:
    """The definition as the deployed file: JSON, sorted keys, two-space indent, final newline
    (byte-identical for the same declaration)."""
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _file_or_sweep() -> dict[str, Any]:
    # The run input is always strings (pipeline.RUN_PARAMETERS): "" means no file.
    return {
        "Type": "Choice",
        "Comment": "an execution for one file runs the pipeline; a sweep (no file) checks first",
        "Choices": [{"Variable": f"$.{SWEEP.file_parameter}", "StringEquals": "",
                     "Next": SWEEP.check.name}],
        "Default": PIPELINE[0].name,
    }


def _sweep_route() -> dict[str, Any]:
    return {
        "Type": "Choice",
        "Comment": "start at the first step that has work; none: the sweep is done",
        "Choices": [{"Variable": f"$.{SWEEP.result}.{r.count}", "NumericGreaterThan": 0,
                     "Next": r.step} for r in SWEEP.routes],
        "Default": NOTHING_PENDING,
    }


def _failed_state(step: str) -> dict[str, Any]:
    return {
        "Type": "Pass",
        "Comment": f"{step} failed: name the step for record_failure",
        "Result": step,
        "ResultPath": "$.failed_step",
        "Next": RECORD_FAILURE,
    }


def _task_state(t: Task, target: str) -> dict[str, Any]:
    kind = RESOURCES[t.resource]
    if t.resource == "glue":
        parameters: dict[str, Any] = {
            "JobName": target,
            # Glue takes a map of strings: every value is a string path or a literal.
            "Arguments": {
                **{f"--{p}.$": f"$.{p}" for p in t.parameters},
                # One run id for every step of an execution: they share staging and history.
                "--run_id.$": RUN_ID,
                "--step": t.name,
            },
        }
    elif t.resource == "lambda":
        parameters = {
            "FunctionName": target,
            "Payload": {**{f"{p}.$": f"$.{p}" for p in t.parameters},
                        "run_id.$": RUN_ID, "step": t.name},
        }
    else:  # pragma: no cover - RESOURCES has no other kind
        raise ValueError(f"task {t.name}: unknown resource {t.resource!r}")
    return {
        "Type": "Task",
        "Resource": kind.integration,
        "Parameters": parameters,
        "TimeoutSeconds": kind.timeout_seconds,
        # A step's output is dropped: every step receives the execution input.
        "ResultPath": None,
        "Retry": [_retrier(r) for r in t.aws_retries],
        "Catch": [{"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error",
                   "Next": f"{t.name}_failed"}],
    }


def _retrier(r: Retry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ErrorEquals": list(r.error_equals),
        "IntervalSeconds": r.interval_seconds,
        "BackoffRate": r.backoff_rate,
        "MaxAttempts": r.max_attempts,
    }
    if r.max_delay_seconds is not None:
        out["MaxDelaySeconds"] = r.max_delay_seconds
    if r.jitter:
        out["JitterStrategy"] = "FULL"
    return out

