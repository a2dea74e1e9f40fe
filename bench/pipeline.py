"""Benchmark: the product (`ingest` + `run`, embedded default) against the floor and two peers.

For each size (default 1M and 5M rows of the generator's default mix, 1% bad rows), each
measurement runs in a fresh process, and the kinds alternate within every repeat so that a
busy machine slows them alike:

  * floor:        DuckDB's bare `COPY (SELECT * FROM read_csv(...)) TO '...parquet'`
  * polars-seed:  Polars doing only the seed's transform (FX join, full_name, per-customer
                  group-by; no validation, no dedup), silver and gold written as Parquet
  * duckdb-seed:  the same transform in DuckDB SQL
  * product:      `purchases ingest` + `purchases run` (DuckDB + SQLite) in a fresh home

It prints the medians of `--repeat` runs (wall seconds, rows/s, peak RSS of the process from
wait4), the product's step times, and the ratios against the goals of issue 11. It asserts
nothing: figures are for reading. Inputs are generated once into bench/out/ (gitignored) and
kept for the next run (`--clean` removes them afterwards).

    python bench/pipeline.py [--rows 1000000 5000000] [--repeat 3] [--clean]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
KINDS = ("floor", "polars-seed", "duckdb-seed", "product")
INGESTION = date(2024, 1, 15)

# Goals of issue 11 (ratios measured in one run).
FLOOR_RATIO_GOAL = {5_000_000: 3.0, 1_000_000: 2.5}
LINEAR_GOAL = 5.5  # product at 5M / product at 1M
MOONSHOT_GOAL = 1.5  # product / polars seed
RSS_GOAL_MIB = 1024


# --- what runs in the child processes ---------------------------------------------------------


def _csv_options() -> str:
    return "header=true, all_varchar=true"


def child_floor(csv_path: str, work: str) -> dict:
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{csv_path}', {_csv_options()})) "
        f"TO '{work}/floor.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )
    return {"seconds": time.perf_counter() - started}


def _fx_rates() -> list[tuple[str, str]]:
    """The shipped FX table's latest rate per currency (the seed knows one rate per currency)."""
    from purchases.fx import load_fx_rates

    latest: dict[str, tuple[date, str]] = {}
    for r in load_fx_rates(None):
        if r.currency not in latest or r.valid_from > latest[r.currency][0]:
            latest[r.currency] = (r.valid_from, str(r.rate_to_aud))
    return [(c, rate) for c, (_, rate) in sorted(latest.items())]


def child_polars_seed(csv_path: str, work: str) -> dict:
    """The seed's transform as a hand-written Polars script would do it (exact decimals)."""
    import polars as pl

    started = time.perf_counter()
    fx = pl.DataFrame(_fx_rates(), schema=["currency", "rate_to_aud"], orient="row").lazy()
    fx = fx.with_columns(pl.col("rate_to_aud").cast(pl.Decimal(18, 8)))
    silver = (
        pl.scan_csv(csv_path, infer_schema=False, truncate_ragged_lines=True)
        .with_columns(
            pl.col("customer_id").str.strip_chars().cast(pl.Int64, strict=False),
            pl.col("purchase_id").str.strip_chars().cast(pl.Int64, strict=False),
            pl.col("purchase_date").str.strip_chars().str.to_date(strict=False),
            pl.col("amount").str.strip_chars().cast(pl.Decimal(18, 4), strict=False),
            pl.col("currency").str.strip_chars().str.to_uppercase(),
        )
        .join(fx, on="currency", how="left")
        .with_columns(
            (pl.col("amount") * pl.col("rate_to_aud")).round(2).cast(pl.Decimal(18, 2))
            .alias("amount_aud"),
            pl.concat_str(["first_name", "last_name"], separator=" ").alias("full_name"),
        )
    )
    silver.sink_parquet(f"{work}/polars_silver.parquet", compression="zstd")
    gold = (
        pl.scan_parquet(f"{work}/polars_silver.parquet")
        .group_by("customer_id")
        .agg(
            pl.col("amount_aud").sum().alias("total_spent_aud"),
            pl.col("purchase_date").min().alias("first_purchase_date"),
            pl.col("purchase_date").max().alias("last_purchase_date"),
            pl.col("full_name").last(),
            pl.col("email").last(),
        )
    )
    gold.sink_parquet(f"{work}/polars_gold.parquet", compression="zstd")
    return {"seconds": time.perf_counter() - started}


def child_duckdb_seed(csv_path: str, work: str) -> dict:
    """The seed's transform in DuckDB SQL (exact decimals)."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("CREATE TABLE fx (currency VARCHAR, rate_to_aud DECIMAL(18,8))")
    con.executemany("INSERT INTO fx VALUES (?, ?)", _fx_rates())
    con.execute(f"""
COPY (
  SELECT TRY_CAST(trim(customer_id) AS BIGINT) AS customer_id,
    TRY_CAST(trim(purchase_id) AS BIGINT) AS purchase_id,
    first_name || ' ' || last_name AS full_name, email,
    TRY_CAST(trim(purchase_date) AS DATE) AS purchase_date,
    TRY_CAST(trim(amount) AS DECIMAL(18,4)) AS amount, upper(trim(r.currency)) AS currency,
    CAST(ROUND(TRY_CAST(trim(amount) AS DECIMAL(38,4)) * CAST(fx.rate_to_aud AS DECIMAL(38,8)),
      2) AS DECIMAL(18,2)) AS amount_aud
  FROM read_csv('{csv_path}', {_csv_options()}, null_padding=true) r
  LEFT JOIN fx ON fx.currency = upper(trim(r.currency))
) TO '{work}/duckdb_silver.parquet' (FORMAT parquet, COMPRESSION zstd)""")
    con.execute(f"""
COPY (
  SELECT customer_id, SUM(amount_aud) AS total_spent_aud,
    MIN(purchase_date) AS first_purchase_date, MAX(purchase_date) AS last_purchase_date,
    arg_max(full_name, purchase_date) AS full_name, arg_max(email, purchase_date) AS email
  FROM '{work}/duckdb_silver.parquet' GROUP BY customer_id
) TO '{work}/duckdb_gold.parquet' (FORMAT parquet, COMPRESSION zstd)""")
    return {"seconds": time.perf_counter() - started}


def child_product(csv_path: str, work: str) -> dict:
    from purchases.bronze import land
    from purchases.config import load_settings
    from purchases.orchestrator import run_pipeline
    from purchases.storage import Lake

    settings = load_settings(home=Path(work) / "home")
    started = time.perf_counter()
    land(Lake(settings.lake_uri), [Path(csv_path)], INGESTION)
    ingested = time.perf_counter()
    record = run_pipeline(settings, trigger="bench")
    done = time.perf_counter()
    if record.status != "succeeded":
        raise SystemExit(f"the run did not succeed: {record.status}")
    counts = record.counts()
    return {
        "seconds": done - started,
        "steps": {"ingest": ingested - started, **{s.step: s.seconds for s in record.steps}},
        "accepted": counts.get("accepted"),
        "rejected": counts.get("rejected"),
        "duplicates": counts.get("duplicates"),
        "customers": counts.get("customers_changed"),
        "memory_limit": settings.memory_limit,
    }


CHILDREN = {
    "floor": child_floor,
    "polars-seed": child_polars_seed,
    "duckdb-seed": child_duckdb_seed,
    "product": child_product,
}


# --- the parent ---------------------------------------------------------------------------------


def measure(kind: str, csv_path: Path) -> dict:
    """Run one measurement in a fresh process; its peak RSS comes from wait4 (exact, per child)."""
    work = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, __file__, "--child", kind, str(csv_path), str(work)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # wait4 before communicate: pipes are small (one JSON line, stderr on failure).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
        if proc.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{stderr[-3000:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
        result["peak_rss_mib"] = usage.ru_maxrss / 1024
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def input_file(rows: int) -> Path:
    from purchases.generate import write_single_file

    path = OUT / f"purchases_{rows}.csv"
    if not path.exists():
        t0 = time.perf_counter()
        # Under a name of its own, then renamed: a second bench at once never reads half a file.
        part = OUT / f"purchases_{rows}.{os.getpid()}.csv"
        write_single_file(part, rows=rows, seed=1, bad_ratio=0.01, ingestion_date=INGESTION)
        os.replace(part, path)
        print(f"(generated {path.name}: {path.stat().st_size / 2**20:.0f} MiB "
              f"in {time.perf_counter() - t0:.0f}s)", flush=True)
    return path


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _step_medians(runs: list[dict]) -> dict[str, float]:
    names = list(runs[0]["steps"])
    return {n: statistics.median(r["steps"].get(n, 0.0) for r in runs) for n in names}


def report(
    results: dict[tuple[int, str], list[dict]], sizes: list[int], kinds: list[str], repeat: int
) -> None:
    header = (f"{'rows':>9} {'what':<11} {'median s':>8} {'runs (s)':<17} {'rows/s':>9} "
              f"{'RSS MiB':>8} {'x floor':>7}")
    print(f"\nmedians of {repeat} alternating run(s); cores: {os.cpu_count()}")
    print(header)
    print("-" * len(header))
    wrap = textwrap.TextWrapper(width=len(header), initial_indent=" " * 10,
                                subsequent_indent=" " * 12)
    for rows in sizes:
        floor = _median(results[(rows, "floor")], "seconds")
        for kind in kinds:
            runs = results[(rows, kind)]
            s = _median(runs, "seconds")
            each = " ".join(f"{r['seconds']:.1f}" for r in runs)
            print(f"{rows:>9,} {kind:<11} {s:>8.2f} {each:<17} {rows / s:>9,.0f} "
                  f"{_median(runs, 'peak_rss_mib'):>8,.0f} {s / floor:>7.2f}")
        if "product" not in kinds:
            continue
        product = results[(rows, "product")]
        steps = ", ".join(f"{k} {v:.2f}" for k, v in _step_medians(product).items())
        last = product[-1]
        print(wrap.fill(f"product steps (median s): {steps}"))
        print(wrap.fill(f"product counts: accepted {last['accepted']:,}, rejected "
                        f"{last['rejected']:,}, duplicates {last['duplicates']:,}, customers "
                        f"{last['customers']:,}; PURCHASES_MEMORY_LIMIT {last['memory_limit']}"))
    if "product" not in kinds:
        return
    print("\ngoals (issue 11):")
    med = {(r, k): _median(v, "seconds") for (r, k), v in results.items()}
    for rows, goal in FLOOR_RATIO_GOAL.items():
        if rows in sizes:
            ratio = med[(rows, "product")] / med[(rows, "floor")]
            print(f"  1. product / floor at {rows:,}: {ratio:.2f}x (goal <= {goal}x): "
                  f"{'met' if ratio <= goal else 'NOT met'}")
    if 1_000_000 in sizes and 5_000_000 in sizes:
        ratio = med[(5_000_000, "product")] / med[(1_000_000, "product")]
        print(f"  1. product 5M / product 1M: {ratio:.2f}x (goal <= {LINEAR_GOAL}x): "
              f"{'met' if ratio <= LINEAR_GOAL else 'NOT met'}")
    top = max(sizes)
    if "polars-seed" in kinds:
        ratio = med[(top, "product")] / med[(top, "polars-seed")]
        print(f"  1. moonshot, product / polars seed at {top:,}: {ratio:.2f}x "
              f"(goal <= {MOONSHOT_GOAL}x): {'met' if ratio <= MOONSHOT_GOAL else 'NOT met'}")
    rss = max(r["peak_rss_mib"] for rows in sizes for r in results[(rows, "product")])
    print(f"  2. product peak RSS (largest of all runs): {rss:,.0f} MiB (goal <= "
          f"{RSS_GOAL_MIB} MiB): {'met' if rss <= RSS_GOAL_MIB else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per measurement")
    parser.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS),
                        help="measure only these kinds (the floor is always measured)")
    parser.add_argument("--clean", action="store_true", help="remove the generated inputs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, csv_path, work = args.child
        print(json.dumps(CHILDREN[kind](csv_path, work)))
        return
    if args.repeat < 1 or any(r < 1 for r in args.rows):
        parser.error("--repeat and --rows must be at least 1")

    OUT.mkdir(exist_ok=True)
    sizes = sorted(set(args.rows))
    kinds = [k for k in KINDS if k == "floor" or k in args.only]
    print(f"python {sys.version.split()[0]}; cores: {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    inputs = {rows: input_file(rows) for rows in sizes}
    results: dict[tuple[int, str], list[dict]] = {(r, k): [] for r in sizes for k in kinds}
    try:
        for i in range(args.repeat):
            for rows in sizes:
                for kind in kinds:
                    r = measure(kind, inputs[rows])
                    results[(rows, kind)].append(r)
                    print(f"  run {i + 1}/{args.repeat} {rows:>10,} {kind:<12} "
                          f"{r['seconds']:7.2f}s {r['peak_rss_mib']:7,.0f} MiB", flush=True)
    finally:
        if args.clean:
            for path in inputs.values():
                path.unlink(missing_ok=True)
    report(results, sizes, kinds, args.repeat)


if __name__ == "__main__":
    main()
