"""Benchmark: the full pipeline on the DuckDB engine vs the Spark engine, same input.

Generates one CSV file (default 1M rows, `purchases.generate.write_single_file`), then runs
`ingest` + the whole pipeline (bronze -> silver -> gold -> SQLite upsert) once per engine,
each in a fresh process with its own home, and prints per engine:

  * wall time of the run (for Spark it includes starting the JVM, as a Glue job would not);
  * peak memory: the largest sum of RSS over the process tree (Python plus, for Spark, the
    JVM it launches), sampled from /proc (or psutil) every 50 ms by this parent process;
  * the step times, the row counts, and whether both engines produced the same summary.

It asserts nothing: the figures are for reading.

    python bench/engines.py [--rows 1000000] [--engines duckdb spark] [--keep]

Spark runs local[*] with PURCHASES_SPARK_DRIVER_MEMORY (default 1g) of heap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def child(engine: str, csv_path: str, home: str) -> dict:
    from purchases import serving
    from purchases.bronze import land
    from purchases.config import load_settings
    from purchases.orchestrator import run_pipeline
    from purchases.storage import Lake

    settings = load_settings(home=Path(home), engine=engine)
    started = time.perf_counter()
    land(Lake(settings.lake_uri), [Path(csv_path)], date(2024, 1, 15))
    record = run_pipeline(settings, trigger="bench")
    seconds = time.perf_counter() - started
    with serving.connect(settings) as db:
        summary = db.summary()
    digest = hashlib.sha256(
        json.dumps(summary, default=str, sort_keys=True).encode()).hexdigest()[:16]
    counts = record.counts()
    return {
        "seconds": seconds,
        "steps": {s.step: round(s.seconds, 1) for s in record.steps},
        "accepted": counts.get("accepted"),
        "rejected": counts.get("rejected"),
        "duplicates": counts.get("duplicates"),
        "customers": counts.get("customers_changed"),
        "summary_digest": digest,
    }


# --- memory of a process tree -------------------------------------------------------------------


def _tree_rss_proc(root: int) -> int:
    """Sum of VmRSS (bytes) of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents[int(entry)] = ppid
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child_pid, ppid in parents.items():
            if ppid == pid and child_pid not in tree:
                tree.add(child_pid)
                frontier.append(child_pid)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def tree_rss(root: int) -> int:
    try:
        import psutil
    except ImportError:
        return _tree_rss_proc(root)
    try:
        proc = psutil.Process(root)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(engine: str, csv_path: Path, home: Path) -> dict:
    """Run one engine in a fresh process; sample its process tree's RSS while it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")
           or k in ("PURCHASES_SPARK_DRIVER_MEMORY", "PURCHASES_SPARK_MASTER",
                    "PURCHASES_SPARK_JAVA_OPTIONS")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", engine, str(csv_path), str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(peak_rss_mib=peak / 2**20, process_seconds=wall)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from purchases.generate import write_single_file

    OUT.mkdir(exist_ok=True)
    csv_path = OUT / f"engines_{args.rows}.csv"
    if not csv_path.exists():
        t0 = time.perf_counter()
        write_single_file(csv_path, rows=args.rows, seed=1, bad_ratio=0.01)
        print(f"(generated {csv_path.name}: {csv_path.stat().st_size / 2**20:.0f} MiB "
              f"in {time.perf_counter() - t0:.1f}s)")
    print(f"input: {args.rows:,} rows, {csv_path.stat().st_size / 2**20:.0f} MiB; "
          f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; Spark driver memory "
          f"{os.environ.get('PURCHASES_SPARK_DRIVER_MEMORY', '1g')}")
    header = (f"{'engine':<8} {'wall s':>8} {'rows/s':>10} {'peak RSS MiB':>13} "
              f"{'summary':>17}  steps (s); counts")
    print(header)
    print("-" * len(header))
    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench-engines-", dir=OUT))
    try:
        for engine in args.engines:
            r = measure(engine, csv_path, work / engine)
            results[engine] = r
            print(f"{engine:<8} {r['seconds']:>8.1f} {args.rows / r['seconds']:>10,.0f} "
                  f"{r['peak_rss_mib']:>13,.0f} {r['summary_digest']:>17}  {r['steps']}; "
                  f"accepted {r['accepted']}, rejected {r['rejected']}, "
                  f"duplicates {r['duplicates']}, customers {r['customers']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            csv_path.unlink(missing_ok=True)
    digests = {r["summary_digest"] for r in results.values()}
    if len(results) > 1:
        print("same customer summary on every engine: " + ("yes" if len(digests) == 1 else "NO"))


if __name__ == "__main__":
    main()
