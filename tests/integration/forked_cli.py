"""Run the `purchases` CLI in a fresh process forked from one that has imported it already.

The orchestration tests (crash, race, S3, reprocess, I/O faults) start hundreds of CLI
processes, and each spent about half its CPU importing the same libraries. Here a forkserver
(multiprocessing's: a clean process, started once per test worker, with no threads) imports
them once and forks a new process for each call. That process is as real as a
`subprocess.run` of the console script: its own environment, working directory, stdout and
stderr files and exit code, and a fault point's os._exit (kill -9) kills it for real. Only
the interpreter start and the imports are shared. The console script itself is exercised by
test_cli*.py, which start the installed binary.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PURCHASES = str(Path(sys.executable).with_name("purchases"))

# What a CLI process imports, minus the modules that read the environment when imported
# (purchases.cli and its siblings build their rich Consoles, which read COLUMNS, at import).
_PRELOAD = [
    "lakecheck",
    "purchases.orchestrator",
    "purchases.steps",
    "purchases.insights",
    "purchases.engines.duckdb_engine",
    "purchases.serving.dialects.sqlite",
    "purchases.migrations",
    "alembic.command",
    "boto3",
    "psycopg",
    "pymysql",
    "typer",
    "rich.console",
]

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(_PRELOAD)


def _child(args: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """The body of one CLI process: what `sys.exit(main())` does in the console script."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    # As Python sets them up for a process whose stdout and stderr are not a terminal.
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                      buffering=1, closefd=False)
    sys.argv = [PURCHASES, *args]
    from purchases.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([purchases, *args], capture_output=True, text=True, env=env,
    timeout=timeout)`, in a forked process."""
    command = [PURCHASES, *args]
    with tempfile.TemporaryDirectory(prefix="cli-") as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = _CONTEXT.Process(target=_child, args=(list(args), env, os.getcwd(), out, err))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(
            command, process.exitcode,
            Path(out).read_text(encoding="utf-8"), Path(err).read_text(encoding="utf-8"))
