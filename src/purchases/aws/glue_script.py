"""The script AWS Glue runs: every Glue job's ScriptLocation (`glue_job.py` in the artifacts).

`purchases aws package` copies this file as `glue_job.py`. Glue 5.0 installs the project
wheel first (`--additional-python-modules`), so the script only hands Glue's command line to
`purchases.aws.glue_job.main`, which reads it with awsglue's getResolvedOptions when present.
It runs the same anywhere: ``python glue_job.py --step bronze_to_silver --lake ...``.

It is a script, not a module: nothing imports it, and it runs on being loaded, without an
``if __name__ == "__main__"`` guard, so that no launcher's choice of module name can turn a
job run into a silent no-op.
"""

import sys

from purchases.aws.glue_job import main

status = main(sys.argv)
# Success returns normally (no SystemExit(0) through Glue's launcher); any other status
# must fail the job run, which Step Functions then sees as FAILED.
if status:
    sys.exit(status)
