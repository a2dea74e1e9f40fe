"""Exact money to the cent against a Decimal oracle; every input row accounted for."""

from __future__ import annotations

import csv
import sqlite3
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from purchases.fx import load_fx_rates
from purchases.generate import generate


def oracle(files) -> dict[int, Decimal]:
    """Per-customer AUD totals computed with decimal.Decimal straight from the CSV files."""
    rates = {r.currency: r.rate_to_aud for r in load_fx_rates()}
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for f in files:
        with f.path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                amount = Decimal(row["amount"].strip())
                aud = (amount * rates[row["currency"].strip().upper()]).quantize(
                    Decimal("0.01"), rounding=ROUND_HALF_UP
                )
                totals[int(row["customer_id"])] += aud
    return dict(totals)


def test_totals_equal_a_decimal_oracle_to_the_cent(harness, tmp_path) -> None:
    files = generate(tmp_path / "gen", rows=3000, days=3, seed=11, bad_ratio=0.0)
    for f in files:
        harness.land(f.path.name, f.path.read_bytes(), day=str(f.ingestion_date))
        harness.run()
    expected = oracle(files)
    summary = harness.summary()
    assert len(summary) == len(expected) > 100
    assert {cid: s["total_spent_aud"] for cid, s in summary.items()} == expected
    currencies = {r["currency"] for r in harness.silver()}
    assert {"AUD", "USD", "EUR", "JPY"} <= currencies
    for s in summary.values():
        assert isinstance(s["total_spent_aud"], Decimal)
        assert s["total_spent_aud"].as_tuple().exponent == -2


def test_no_float_column_for_money_in_any_parquet_file(harness, tmp_path) -> None:
    files = generate(tmp_path / "gen", rows=500, days=2, seed=5, bad_ratio=0.05)
    for f in files:
        harness.land(f.path.name, f.path.read_bytes(), day=str(f.ingestion_date))
    harness.run()
    checked = 0
    for rel in harness.lake.list_files(""):
        if not rel.endswith(".parquet") or rel.startswith("quarantine/"):  # raw text kept
            continue
        schema = pq.read_schema(harness.lake.full(rel))
        for field in schema:
            assert not pa.types.is_floating(field.type), f"{rel}: {field.name} is {field.type}"
            if field.name in ("amount", "rate_to_aud", "amount_aud", "total_spent_aud"):
                assert pa.types.is_decimal(field.type), f"{rel}: {field.name} is {field.type}"
                checked += 1
    assert checked >= 4


def test_sqlite_keeps_money_exact_and_sorts_numerically(harness) -> None:
    from conftest import HEADER

    rows = [
        "1,A,A,a@x.io,1,2024-01-10,9.99,AUD",
        "2,B,B,b@x.io,2,2024-01-10,100.01,AUD",
        "3,C,C,c@x.io,3,2024-01-10,0.10,AUD",
        "3,C,C,c@x.io,4,2024-01-10,0.20,AUD",
        "4,D,D,d@x.io,5,2024-01-10,999999.99,JPY",
    ]
    harness.land("m.csv", HEADER + "\n".join(rows) + "\n")
    harness.run()
    top = [(r["customer_id"], r["total_spent_aud"]) for r in _top(harness)]
    assert top == [
        (4, Decimal("10200.00")),
        (2, Decimal("100.01")),
        (1, Decimal("9.99")),
        (3, Decimal("0.30")),
    ]
    db = harness.settings.home / "purchases.db"
    with sqlite3.connect(db) as con:
        raw = con.execute(
            "SELECT customer_id, total_spent_aud, typeof(total_spent_aud), "
            "typeof(total_spent_aud_cents) FROM customer_purchase_summary "
            "ORDER BY total_spent_aud DESC"
        ).fetchall()
    # The business query, raw: AUD amounts in numeric order (REAL, computed from the cents).
    assert [(cid, Decimal(repr(aud))) for cid, aud, _, _ in raw] == top
    assert {(t, c) for _, _, t, c in raw} == {("real", "integer")}  # exact cents beside


def _top(harness):
    from purchases import serving

    with serving.connect(harness.settings) as db:
        return db.top(5)


def test_every_row_is_accounted_for_per_file(harness, tmp_path) -> None:
    files = generate(tmp_path / "gen", rows=3000, days=3, seed=7, bad_ratio=0.05, files_per_day=2)
    records = []
    for day in sorted({f.ingestion_date for f in files}):  # day by day, as they arrive
        for f in files:
            if f.ingestion_date == day:
                harness.land(f.path.name, f.path.read_bytes(), day=str(day))
        records.append(harness.run())
    day_one = [f for f in files if f.ingestion_date == files[0].ingestion_date]
    for f in day_one:  # the whole first day replayed under another date: nothing new
        harness.land(f.path.name, f.path.read_bytes(), day="2024-02-01")
    records.append(harness.run())
    per_file = {f["path"]: f for r in records for f in r.files}
    assert len(per_file) == len(files) + len(day_one)
    silver = Counter(r["source_file"] for r in harness.silver())
    quarantine = Counter(q["source_file"] for q in harness.quarantine())
    reasons = Counter(q["reason"] for q in harness.quarantine())
    rows_by_name = {f.path.name: f.rows for f in files}
    for path, f in per_file.items():
        assert f["rows_in"] == rows_by_name[path.rsplit("/", 1)[-1]]
        assert f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]
        assert silver[path] == f["accepted"]
        assert quarantine[path] == sum(f["rejected"].values())
    replays = [f for p, f in per_file.items() if "/month=02/day=01/" in p]
    originals = [f for p, f in per_file.items() if "/month=01/day=15/" in p]
    # Replayed later, only the rows that were "in the future" at first landing are new.
    became_valid = sum(f["rejected"].get("future_purchase_date", 0) for f in originals)
    assert became_valid > 0
    assert sum(f["accepted"] for f in replays) == became_valid
    # the generator plants every kind of bad row but megabyte records (sample data stays
    # small; tests/unit/test_record_too_large.py covers those); each must show up
    from purchases.contract import Reason

    assert set(reasons) == {r.value for r in Reason} - {Reason.RECORD_TOO_LARGE}
    assert sum(f["invalid_emails"] for f in per_file.values()) > 0
    assert sum(f["duplicates"] for f in per_file.values()) > 0


def test_aud_amount_is_exact_on_both_sides_of_the_narrow_form() -> None:
    """The narrow (64-bit) multiply takes |amount| < 10^5 and |rate| < 10, the wide one the
    rest: each pair must round like Decimal, half away from zero, with no overflow error."""
    import itertools

    import duckdb

    from purchases.contract import AMOUNT_TYPE, RATE_TYPE
    from purchases.silver import aud_amount_sql

    amounts = ["0", "0.0001", "0.0050", "1.0050", "12.3450", "99999.9999", "100000",
               "100000.0001", "999999.9999", "1000000", "99999999999.9999"]
    rates = ["0.00000001", "0.5", "1", "1.5", "9.99999999", "10", "10.00000001", "1234.5678",
             "99999.99999999"]
    pairs = [(Decimal(a), Decimal(r)) for a, r in itertools.product(amounts, rates)
             if Decimal(a) * Decimal(r) < Decimal("1e15")]  # AUD_TYPE holds < 10^16
    pairs += [(Decimal("0.0125"), Decimal("10")), (Decimal("0.0125"), Decimal("1")),
              (Decimal("3.3333"), Decimal("0.15"))]  # exact half cents: 0.125, 0.0125, 0.499995
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (amount {AMOUNT_TYPE}, rate {RATE_TYPE})")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(str(a), str(r)) for a, r in pairs])
    got = con.execute(
        f"SELECT amount, rate, {aud_amount_sql('amount', 'rate')} FROM t").fetchall()
    assert len(got) == len(pairs) > 90
    for amount, rate, aud in got:
        assert aud == (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), (
            amount, rate)
