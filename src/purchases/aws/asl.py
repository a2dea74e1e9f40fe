"""Amazon States Language: the Step Functions state machine rendered from pipeline.PIPELINE.

The definition is deployed as written by `purchases aws render` / `purchases aws package`
(`statemachine.asl.json`): CloudFormation's `DefinitionSubstitutions` fill in the Glue job
names and Lambda ARNs (`${BronzeToSilverJobName}`, ..., `${RecordFailureFunctionArn}`; see
`substitutions()`), so the file itself names no account, region or stack.

Shape, for each declared task `<step>` in order::

    <step> (Task, Retry per Task.aws_retries, TimeoutSeconds) --Next--> the next step | End
       \\--Catch States.ALL, error at $.error--> <step>_failed (Pass: $.failed_step = "<step>")
                                                   --> record_failure (Lambda Task) --> run_failed

Every step receives the execution input unchanged (`ResultPath: null`); the execution name is
every step's run id (`$$.Execution.Name`), which ties the steps of one execution together in
the lake's run history.
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


def placeholder(step: str) -> str:
    """The DefinitionSubstitutions key of a step's Glue job name or Lambda ARN, e.g.
    `BronzeToSilverJobName`, `UpsertFunctionArn`, `RecordFailureFunctionArn`."""
    kind = RECORD_FAILURE_KIND if step == RECORD_FAILURE else task(step).resource
    camel = "".join(word.capitalize() for word in step.split("_"))
    return camel + ("JobName" if kind == "glue" else "FunctionArn")


def substitutions() -> dict[str, str]:
    """Every placeholder the definition uses, with the step it stands for (for the template's
    DefinitionSubstitutions, which must supply exactly these)."""
    return {placeholder(s): s for s in (*(t.name for t in PIPELINE), RECORD_FAILURE)}


def to_asl(
    *,
    resources: Mapping[str, str] | None = None,
    comment: str = "purchases: bronze -> silver -> gold -> staging -> upsert",
) -> dict[str, Any]:
    """Render PIPELINE as an Amazon States Language state machine (a JSON-ready dict).

    Args:
        resources: a step's (or record_failure's) Glue job name or Lambda ARN, replacing its
            `${...}` placeholder (tests that run the definition without CloudFormation).
        comment: the definition's Comment.

    Returns:
        The definition: Glue tasks run `glue:startJobRun.sync` with their Parameters as
        `--<name>` string job arguments, Lambda tasks `lambda:invoke` with them in the
        payload; each retries per `Task.aws_retries` and catches every error to its
        `<step>_failed` state, then `record_failure`, then the Fail state.
    """
    resources = resources or {}

    def target(step: str) -> str:
        return resources.get(step, "${" + placeholder(step) + "}")

    states: dict[str, Any] = {}
    for i, t in enumerate(PIPELINE):
        state = _task_state(t, target(t.name))
        if i + 1 < len(PIPELINE):
            state["Next"] = PIPELINE[i + 1].name
        else:
            state["End"] = True
        states[t.name] = state
        states[f"{t.name}_failed"] = {
            "Type": "Pass",
            "Comment": f"{t.name} failed: name the step for record_failure",
            "Result": t.name,
            "ResultPath": "$.failed_step",
            "Next": RECORD_FAILURE,
        }
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
    return {"Comment": comment, "StartAt": PIPELINE[0].name, "States": states}


def render(definition: Mapping[str, Any]) -> str:
    """The definition as the deployed file: JSON, sorted keys, two-space indent, final newline
    (byte-identical for the same declaration)."""
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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

