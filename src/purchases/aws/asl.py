"""Amazon States Language: the Step Functions state machine rendered from pipeline.PIPELINE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from purchases.pipeline import ALL_ERRORS, PIPELINE


def to_asl(
    *,
    name_prefix: str = "purchases",
    resources: Mapping[str, str] | None = None,
    comment: str = "purchases: bronze -> silver -> gold -> staging -> upsert",
) -> dict[str, Any]:
    """Render PIPELINE as an Amazon States Language state machine (a JSON-ready dict).

    Glue tasks run `glue:startJobRun.sync` with job `<name_prefix>-<task>` and receive their
    Parameters as `--<name>` job arguments; Lambda tasks run `lambda:invoke` with function
    `<name_prefix>-<task>` and receive them in the payload. `resources` overrides a task's
    job or function name (e.g. with an ARN). Every task retries per its Retry and catches
    every error to the failure state, keeping the error under `$.error`.
    """
    resources = resources or {}
    states: dict[str, Any] = {}
    for i, t in enumerate(PIPELINE):
        target = resources.get(t.name, f"{name_prefix}-{t.name}")
        if t.resource == "glue":
            state: dict[str, Any] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::glue:startJobRun.sync",
                "Parameters": {
                    "JobName": target,
                    "Arguments": {
                        **{f"--{p}.$": f"$.{p}" for p in t.parameters},
                        # One run id for every step of an execution: they share staging.
                        "--run_id.$": "$$.Execution.Name",
                        "--step": t.name,
                    },
                },
            }
        elif t.resource == "lambda":
            state = {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": target,
                    "Payload": {
                        **{f"{p}.$": f"$.{p}" for p in t.parameters},
                        "run_id.$": "$$.Execution.Name",
                        "step": t.name,
                    },
                },
            }
        else:  # pragma: no cover - guarded by the declaration above
            raise ValueError(f"task {t.name}: unknown resource {t.resource!r}")
        # Each step's output is discarded so every task receives the run's own input.
        state["ResultPath"] = None
        state["Retry"] = [{
            "ErrorEquals": list(t.retry.error_equals),
            "IntervalSeconds": t.retry.interval_seconds,
            "BackoffRate": t.retry.backoff_rate,
            "MaxAttempts": t.retry.max_attempts,
        }]
        state["Catch"] = [{"ErrorEquals": [ALL_ERRORS], "ResultPath": "$.error",
                           "Next": t.catch_to}]
        if i + 1 < len(PIPELINE):
            state["Next"] = PIPELINE[i + 1].name
        else:
            state["End"] = True
        states[t.name] = state
    for target in sorted({t.catch_to for t in PIPELINE}):
        states[target] = {
            "Type": "Fail",
            "Error": "Purchases.RunFailed",
            "Cause": "a pipeline step failed; the execution input and $.error say which",
        }
    return {"Comment": comment, "StartAt": PIPELINE[0].name, "States": states}
