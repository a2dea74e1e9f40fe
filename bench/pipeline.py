"""Benchmark: `ingest` + `run` on the DuckDB engine vs DuckDB's bare CSV->Parquet copy.

Generates one file per size (default 1M and 5M rows), then times, each in a fresh process:
  * floor:    DuckDB `COPY (SELECT * FROM read_csv(...)) TO 'x.parquet'` — the physical floor
  * pipeline: purchases ingest + purchases run (validation, dedup, gold, SQLite upsert)
and prints wall time, rows/s and peak RSS. It asserts nothing: figures are for reading.

    python bench/pipeline.py [--rows 1000000 5000000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def child_floor(csv_path: str, out_dir: str) -> dict:
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{csv_path}', all_varchar=true)) "
        f"TO '{out_dir}/floor.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )
    return {"seconds": time.perf_counter() - started}


def child_pipeline(csv_path: str, home: str) -> dict:
    from purchases.bronze import land
    from purchases.config import load_settings
    from purchases.orchestrator import run_pipeline
    from purchases.storage import Lake

    settings = load_settings(home=Path(home))
    started = time.perf_counter()
    land(Lake(settings.lake_uri), [Path(csv_path)], date(2024, 1, 15))
    ingested = time.perf_counter()
    record = run_pipeline(settings, trigger="bench")
    done = time.perf_counter()
    counts = record.counts()
    return {
        "seconds": done - started,
        "ingest_seconds": ingested - started,
        "steps": {s.step: round(s.seconds, 2) for s in record.steps},
        "accepted": counts.get("accepted"),
        "rejected": counts.get("rejected"),
        "duplicates": counts.get("duplicates"),
        "customers": counts.get("customers_changed"),
    }


def measure(kind: str, *args: str) -> dict:
    """Run one measurement in a fresh process; it reports its own time and peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--keep", action="store_true", help="keep generated files in bench/out")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_floor(*rest) if kind == "floor" else child_pipeline(*rest)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    from purchases.generate import write_single_file

    OUT.mkdir(exist_ok=True)
    print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    header = f"{'rows':>10} {'what':<9} {'seconds':>8} {'rows/s':>11} {'peak RSS MiB':>13}  notes"
    print(header)
    print("-" * len(header))
    for rows in args.rows:
        csv_path = OUT / f"purchases_{rows}.csv"
        if not csv_path.exists():
            t0 = time.perf_counter()
            write_single_file(csv_path, rows=rows, seed=1, bad_ratio=0.01)
            print(f"(generated {csv_path.name}: {csv_path.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - t0:.1f}s)")
        work = Path(tempfile.mkdtemp(prefix="bench-", dir=OUT))
        try:
            floor = measure("floor", str(csv_path), str(work))
            pipe = measure("pipeline", str(csv_path), str(work / "home"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for name, r in (("floor", floor), ("pipeline", pipe)):
            notes = ""
            if name == "pipeline":
                notes = (f"{r['seconds'] / floor['seconds']:.2f}x floor; steps {r['steps']}; "
                         f"accepted {r['accepted']}, rejected {r['rejected']}, "
                         f"duplicates {r['duplicates']}, customers {r['customers']}")
            print(f"{rows:>10} {name:<9} {r['seconds']:>8.2f} {rows / r['seconds']:>11,.0f} "
                  f"{r['peak_rss_mib']:>13,.0f}  {notes}")
        if not args.keep:
            csv_path.unlink()


if __name__ == "__main__":
    main()
