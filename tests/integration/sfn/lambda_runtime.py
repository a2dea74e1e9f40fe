"""One Lambda invocation the way the Python runtime makes it, for run_execution.mjs.

    python lambda_runtime.py purchases.aws.lambdas.upsert < payload.json

Imports the handler (module.function, as the template's Handler names it), calls it with the
payload from stdin and a context object, and prints the response as the last stdout line:
``{"result": <return value>}``, or the runtime's error document ``{"errorType": <the
exception's class name>, "errorMessage", "stackTrace"}`` (the name Step Functions matches
Retry and Catch on). Logs go to stderr, as to CloudWatch.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
import uuid
from dataclasses import dataclass, field


@dataclass
class LambdaContext:
    """The attributes of the runtime's context object a handler may read."""

    function_name: str = field(default_factory=lambda: os.environ.get(
        "AWS_LAMBDA_FUNCTION_NAME", "function"))
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def main(handler: str) -> int:
    # The runtime's root handler: WARNING and up unless the function lowers it.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    module, _, name = handler.rpartition(".")
    payload = json.loads(sys.stdin.read() or "null")
    try:
        result = getattr(importlib.import_module(module), name)(payload, LambdaContext())
        response = {"result": result}
    except Exception as exc:  # noqa: BLE001 - reported as the Lambda runtime reports it
        response = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                    "stackTrace": traceback.format_tb(exc.__traceback__)}
    print(json.dumps(response, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
