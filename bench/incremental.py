"""Benchmark: does a day's run cost grow with the lake's history? (DESIGN §4, §6)

Generates HISTORY+1 days of the same size (default 20k rows/day, one fixed pool of customers)
with one generator, so purchase ids, customers and cross-day duplicates evolve as in real
life. History is built as a real lake would be, one run per day. At each measuring point
(default 0, 30 and 180 days of history) the home is copied and the next day is run on the
copy, REPEAT times; the median is printed with its per-step split, plus what the run read.

    python bench/incremental.py [--rows 20000] [--points 0 30 180] [--repeat 3]

It asserts nothing: figures are for reading. Wall time on a shared machine is noisy; the
CPU time and "earlier batches read" are the steadier signals. Writes bench/out/incremental.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per day")
    parser.add_argument("--points", type=int, nargs="+", default=[0, 30, 180],
                        help="days of history to measure at")
    parser.add_argument("--repeat", type=int, default=3, help="runs per point (median)")
    parser.add_argument("--customers", type=int, default=50_000, help="customer pool")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-pruning", action="store_true",
                        help="for comparison: read every earlier batch's purchase keys and "
                        "silver in the duplicate check, as before key ranges were recorded")
    args = parser.parse_args(argv)
    if args.no_pruning:
        from purchases import steps

        steps._batches_to_check = lambda engine, commits: commits

    from purchases import bronze
    from purchases.config import load_settings
    from purchases.generate import generate
    from purchases.orchestrator import run_pipeline
    from purchases.storage import Lake

    points = sorted(set(args.points))
    work = Path(tempfile.mkdtemp(prefix="purchases-bench-incremental-"))
    started = time.perf_counter()
    files = generate(work / "input", rows=args.rows, days=points[-1] + 1,
                     customers=args.customers, seed=11, bad_ratio=0.02)
    print(f"generated {len(files)} days x {args.rows} rows in "
          f"{time.perf_counter() - started:.0f}s", flush=True)

    home = work / "home"
    settings = load_settings(home=home)
    lake = Lake(settings.lake_uri)
    results = []
    built = 0
    for point in points:
        build_started = time.perf_counter()
        while built < point:  # history: one run per day, as a lake in use would have
            f = files[built]
            bronze.land(lake, [f.path], f.ingestion_date)
            run_pipeline(settings, trigger="bench-history")
            built += 1
        if point:
            print(f"built {point} days of history ({time.perf_counter() - build_started:.0f}s)",
                  flush=True)
        day = files[point]
        samples = []
        for i in range(args.repeat):
            copy = work / f"measure-{point}-{i}"
            shutil.copytree(home, copy)
            os.sync()  # the copy's write-back must not land inside the measured run
            # A fresh process per measurement: what one scheduled run costs, nothing carried
            # over from building the history in this one.
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(copy), str(day.path),
                 str(day.ingestion_date), *(["--no-pruning"] if args.no_pruning else [])],
                capture_output=True, text=True, check=True)
            samples.append(json.loads(child.stdout.strip().splitlines()[-1]))
            shutil.rmtree(copy)
        median = sorted(samples, key=lambda s: s["seconds"])[len(samples) // 2]
        result = {"history_days": point, "rows": args.rows,
                  "median_seconds": round(statistics.median(s["seconds"] for s in samples), 3),
                  "min_seconds": round(min(s["seconds"] for s in samples), 3),
                  "median_cpu_seconds": round(
                      statistics.median(s["cpu_seconds"] for s in samples), 3),
                  "all_seconds": [round(s["seconds"], 3) for s in samples],
                  **{k: v for k, v in median.items() if k not in ("seconds", "cpu_seconds")}}
        results.append(result)
        steps = "  ".join(f"{k}={v:.2f}" for k, v in result["steps"].items())
        print(f"history={point:>4} days: one day of {args.rows} rows in "
              f"{result['median_seconds']:.2f}s median, {result['min_seconds']:.2f}s best, "
              f"{result['median_cpu_seconds']:.2f}s CPU (runs {result['all_seconds']})  "
              f"[{steps}]  "
              f"customers in state={result['customers_in_state']}  earlier batches read by "
              f"the duplicate check={result['earlier_batches_read']} of {point}", flush=True)

    OUT.mkdir(exist_ok=True)
    out = OUT / ("incremental-no-pruning.json" if args.no_pruning else "incremental.json")
    out.write_text(json.dumps(results, indent=1))
    print(f"total {time.perf_counter() - started:.0f}s; results in {out}")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def child(home: str, csv_path: str, day: str, no_pruning: bool) -> None:
    """Land one day in a copy of the home and time its run (imports done beforehand)."""
    from datetime import date

    from purchases import bronze, commit_log, steps
    from purchases.config import load_settings
    from purchases.orchestrator import run_pipeline
    from purchases.serving import connect
    from purchases.storage import Lake

    if no_pruning:
        steps._batches_to_check = lambda engine, commits: commits
    settings = load_settings(home=Path(home))
    lake = Lake(settings.lake_uri)
    with connect(settings):
        pass  # driver and migrations imported, as in a process that has run before
    bronze.land(lake, [Path(csv_path)], date.fromisoformat(day))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    record = run_pipeline(settings, trigger="bench")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    commits = commit_log.load_commits(lake)
    print(json.dumps({
        "seconds": seconds,
        # CPU time of all threads: what the run cost, whatever else the machine was doing.
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        "steps": {s.step: s.seconds for s in record.steps},
        "accepted": record.counts().get("accepted"),
        "duplicates": record.counts().get("duplicates"),
        "customers_changed": record.counts().get("customers_changed"),
        "customers_in_state": _rows(lake, commit_log.customer_state_files(commits)),
        "key_files_in_lake": len(commit_log.purchase_key_files(commits)),
        "earlier_batches_read": record.counts().get("earlier_batches_read"),
        "commits": len(commits),
    }))


def _rows(lake, paths: list[str]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for p in paths:
        with lake.open(p) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5], no_pruning="--no-pruning" in sys.argv)
    else:
        sys.exit(main())
