"""`purchases reprocess` (issue 8, defect 10): quarantined rows re-validated after their cause
is fixed leave quarantine exactly when they enter silver, once; again changes nothing; a
killed reprocess is rolled forward or discarded like a killed run."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lakecheck import assert_clean_lake, end_state, purchases

from conftest import HEADER, Harness, write_file
from purchases import bronze, commit_log, history
from purchases.config import load_settings
from purchases.errors import InputError
from purchases.faults import KILLED_EXIT_CODE
from purchases.orchestrator import reprocess_pipeline, run_pipeline
from purchases.storage import Lake

FX_BASE = "currency,rate_to_aud,valid_from\nAUD,1.00000000,1970-01-01\nUSD,1.50000000,1970-01-01\n"
XYZ_RATE = Decimal("0.12345678")
HALF_RATE = Decimal("0.50000000")
FX_FIXED = FX_BASE + f"XYZ,{XYZ_RATE},1970-01-01\nABC,{HALF_RATE},1970-01-01\n"


def row(pid: int, cid: int = 1, amount: str = "10.00", currency: str = "XYZ",
        day: str = "2024-01-10", first: str = "Ann") -> str:
    return f"{cid},{first},Lee,ann@x.io,{pid},{day},{amount},{currency}"


def csv(*rows: str) -> str:
    return HEADER + "\n".join(rows) + "\n"


def aud(amount: str, rate: Decimal = XYZ_RATE) -> Decimal:
    """The oracle: amount x rate, rounded half-up to the cent, in Decimal."""
    return (Decimal(amount) * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.fixture
def h(settings, tmp_path: Path) -> Harness:
    fx = write_file(tmp_path / "fx.csv", FX_BASE)
    settings.fx_rates = fx
    return Harness(settings, tmp_path)


def fix_rates(h: Harness, text: str = FX_FIXED) -> None:
    write_file(h.settings.fx_rates, text)


def current(h: Harness, layer: str) -> list[dict]:
    """A layer's rows as readers must see them: the published files less superseded ones."""
    lake = h.lake
    rows: list[dict] = []
    for rel in commit_log.published_files(commit_log.load_commits(lake), layer):
        rows.extend(pq.read_table(lake.full(rel)).to_pylist())
    return rows


def reasons(h: Harness) -> Counter:
    """(purchase_id, reason) of the rows in quarantine (the raw purchase_id, as an int)."""
    return Counter((int(q["purchase_id"]) if q["purchase_id"] else None, q["reason"])
                   for q in current(h, "quarantine"))


def silver(h: Harness) -> dict[int, dict]:
    rows = current(h, "silver")
    assert len(rows) == len({r["purchase_id"] for r in rows}), "a purchase is in silver twice"
    return {r["purchase_id"]: r for r in rows}


def test_rows_rejected_for_a_missing_rate_are_accepted_once_it_is_added(h: Harness) -> None:
    a = h.land("a.csv", csv(
        row(1, amount="10.00", currency="AUD"),
        row(2, amount="12.3456"),                  # XYZ: no rate yet
        row(3, cid=2, amount="0.0100", currency="ABC"),  # x 0.5 = 0.005: half-up -> 0.01
        row(4, cid=3, currency="QQQ"),             # stays unknown
        row(5, cid=3, amount="1e3"),               # another reason
        "1,too,many,fields,6,2024-01-10,1,AUD,x",  # malformed: no fields, never selected
    ))
    h.run()
    assert reasons(h) == Counter({(2, "unknown_currency"): 1, (3, "unknown_currency"): 1,
                                  (4, "unknown_currency"): 1, (5, "invalid_amount"): 1,
                                  (None, "malformed_row"): 1})
    assert h.summary()[1]["total_spent_aud"] == Decimal("10.00")

    fix_rates(h)
    record = reprocess_pipeline(h.settings, ["unknown_currency"])
    assert record.trigger == "reprocess" and record.status == "succeeded"
    counts = record.counts()
    assert (counts["selected"], counts["accepted"], counts["rejected"], counts["duplicates"]) \
        == (3, 2, 1, 0)
    [f] = record.files
    assert f["path"] == "reprocess:bronze/year=2024/month=01/day=15/a.csv"
    assert f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]

    got = silver(h)
    assert sorted(got) == [1, 2, 3]
    assert got[2]["amount_aud"] == aud("12.3456") == Decimal("1.52")
    assert got[3]["amount_aud"] == aud("0.0100", HALF_RATE) == Decimal("0.01")
    assert got[2]["rate_to_aud"] == XYZ_RATE
    for pid in (2, 3):  # the original file and ingestion date are kept
        assert got[pid]["source_file"] == "bronze/year=2024/month=01/day=15/a.csv"
        assert got[pid]["ingestion_date"] == date(2024, 1, 15)
    assert reasons(h) == Counter({(4, "unknown_currency"): 1, (5, "invalid_amount"): 1,
                                  (None, "malformed_row"): 1})
    malformed = [q for q in current(h, "quarantine") if q["reason"] == "malformed_row"]
    assert malformed[0]["raw_line"] == "1,too,many,fields,6,2024-01-10,1,AUD,x"
    summary = h.summary()
    assert summary[1]["total_spent_aud"] == Decimal("10.00") + aud("12.3456")
    assert summary[1]["purchase_count"] == 2
    assert summary[2]["total_spent_aud"] == Decimal("0.01")
    assert 3 not in summary
    # the bronze file is still processed once: a run finds nothing pending
    assert h.run().files == []
    assert a.exists()

    # Again: nothing changes, and no batch is committed.
    before = (commit_log.load_commits(h.lake), silver(h), reasons(h), h.summary())
    again = reprocess_pipeline(h.settings, ["unknown_currency"])
    assert again.status == "succeeded"
    assert (again.counts()["selected"], again.counts()["rejected"]) == (1, 1)
    assert again.counts()["quarantine_files_replaced"] == 0
    assert (commit_log.load_commits(h.lake), silver(h), reasons(h), h.summary()) == before

    runs = [r for r in history.load_all(h.lake) if r.trigger == "reprocess"]
    assert [r.counts()["accepted"] for r in runs] == [2, 0]


def test_the_lake_views_show_each_row_once(h: Harness) -> None:
    lake_query = pytest.importorskip("purchases.engines.duckdb_lake").lake_query
    h.land("a.csv", csv(row(1), row(2, currency="QQQ"), row(3, amount="-1")))
    h.run()
    fix_rates(h)
    reprocess_pipeline(h.settings)
    q = lake_query(h.lake, "SELECT purchase_id, reason FROM quarantine ORDER BY purchase_id")
    assert q == [{"purchase_id": "2", "reason": "unknown_currency"},
                 {"purchase_id": "3", "reason": "negative_amount"}]
    s = lake_query(h.lake, "SELECT purchase_id, amount_aud FROM silver")
    assert s == [{"purchase_id": 1, "amount_aud": aud("10.00")}]


def test_date_selects_and_a_row_still_bad_keeps_its_new_reason(h: Harness) -> None:
    h.land("a.csv", csv(row(1), row(2, cid=2, amount="500")), day="2024-01-15")
    h.land("b.csv", csv(row(3), row(4, cid=2, amount="7.77")), day="2024-01-16")
    h.run()
    fix_rates(h)
    record = reprocess_pipeline(h.settings, day=date(2024, 1, 16))
    assert record.counts()["selected"] == 2
    assert sorted(silver(h)) == [3, 4]
    assert reasons(h) == Counter({(1, "unknown_currency"): 1, (2, "unknown_currency"): 1})

    # Now the rate exists but the maximum was lowered: row 2 fails another rule instead.
    h.settings.max_amount = Decimal("100")
    record = reprocess_pipeline(h.settings, ["unknown_currency"], date(2024, 1, 15))
    assert (record.counts()["accepted"], record.counts()["rejected"]) == (1, 1)
    assert record.files[0]["rejected"] == {"amount_too_large": 1}
    assert sorted(silver(h)) == [1, 3, 4]
    assert reasons(h) == Counter({(2, "amount_too_large"): 1})
    assert h.summary()[1]["total_spent_aud"] == aud("10.00") * 2
    assert h.summary()[2]["total_spent_aud"] == aud("7.77")
    # amount_too_large is not selected by --reason unknown_currency; by its own code it is
    assert reprocess_pipeline(h.settings, ["unknown_currency"]).counts()["selected"] == 0
    h.settings.max_amount = Decimal("1000")
    reprocess_pipeline(h.settings, ["amount_too_large"])
    assert sorted(silver(h)) == [1, 2, 3, 4] and reasons(h) == Counter()
    assert h.summary()[2]["total_spent_aud"] == aud("7.77") + aud("500")


def test_a_purchase_accepted_meanwhile_makes_the_reprocessed_row_a_duplicate(h: Harness) -> None:
    h.land("a.csv", csv(row(10), row(11), row(12, cid=2, amount="7"), row(20, cid=3),
                        row(20, cid=3, amount="10.0")), day="2024-01-15")
    h.run()
    assert sum(reasons(h).values()) == 5
    fix_rates(h)
    # The same purchase 10 arrives again (identical), 11 arrives with another amount.
    h.land("b.csv", csv(row(10), row(11, amount="20.00")), day="2024-01-16")
    h.run()
    record = reprocess_pipeline(h.settings, ["unknown_currency"])
    c = record.counts()
    assert (c["selected"], c["accepted"], c["rejected"], c["duplicates"]) == (5, 2, 1, 2)
    assert record.files[0]["rejected"] == {"conflicting_duplicate": 1}
    got = silver(h)
    assert sorted(got) == [10, 11, 12, 20]
    assert got[10]["source_file"].endswith("b.csv")  # the earlier row stands
    assert got[11]["amount"] == Decimal("20.0000")
    assert got[20]["source_file"].endswith("a.csv")  # identical copies: one kept
    assert reasons(h) == Counter({(11, "conflicting_duplicate"): 1})
    summary = h.summary()
    assert summary[1]["total_spent_aud"] == aud("10.00") + aud("20.00")
    assert summary[2]["total_spent_aud"] == aud("7")
    assert summary[3]["total_spent_aud"] == aud("10.00")
    # The conflict stays a conflict however often it is reprocessed.
    again = reprocess_pipeline(h.settings)
    assert again.counts()["quarantine_files_replaced"] == 0
    assert reasons(h) == Counter({(11, "conflicting_duplicate"): 1})


def test_cli_reprocess_prints_the_batch_and_runs_shows_it(h: Harness, tmp_path: Path) -> None:
    h.land("a.csv", csv(row(1), row(2, currency="QQQ")))
    h.run()
    fix_rates(h)
    home, fx = h.settings.home, str(h.settings.fx_rates)
    done = purchases(home, "reprocess", "--reason", "unknown_currency", PURCHASES_FX_RATES=fx)
    assert done.returncode == 0, done.stderr
    assert "reprocess:bronze/year=2024/month=01/day=15/a.csv" in done.stdout
    assert "accepted=1" in done.stdout and "1 quarantine file(s) replaced" in done.stdout
    runs = json.loads(purchases(home, "runs", "--format", "json").stdout)
    assert [(r["trigger"], r["accepted"], r["rejected"]) for r in runs][-1] == (
        "reprocess", 1, 1)
    again = purchases(home, "reprocess", PURCHASES_FX_RATES=fx)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    for args, word in ((["--reason", "malformed_row"], "no fields"),
                       (["--reason", "nope"], "unknown_currency"),
                       (["--date", "2024-13-45"], "YYYY-MM-DD")):
        bad = purchases(home, "reprocess", *args)
        assert bad.returncode == 2 and word in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


# --- crash safety ----------------------------------------------------------------------------

# Where the reprocess is killed, and what the user runs next: `purchases run` (which rolls a
# committed batch forward and serves it, or discards the staging) and then reprocess again, or
# straight away reprocess again.
FAULTS = [
    ("after_run_start", "run"), ("after_silver_write", "run"),
    ("after_quarantine_write", "reprocess"), ("after_bronze_to_silver", "run"),
    ("after_state_write", "reprocess"), ("after_commit_record", "run"),
    ("after_commit_record", "reprocess"), ("mid_publication:3", "run"),
    ("after_publication", "reprocess"), ("after_staging_load", "run"),
    ("inside_upsert", "reprocess"),
]


@pytest.fixture(scope="module")
def crash_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A home with unknown_currency rows in quarantine and the rate now added, and the same
    home after one uninterrupted reprocess."""
    root = tmp_path_factory.mktemp("reprocess-crash")
    fx = write_file(root / "fx.csv", FX_BASE)
    start = root / "start"
    settings = load_settings(home=start, fx_rates=fx)
    lake = Lake(settings.lake_uri)
    for day, name, rows in (
        ("2024-01-15", "a.csv", [row(1), row(2, cid=2, amount="3.3333"), row(3, amount="x")]),
        ("2024-01-16", "b.csv", [row(4, cid=3), row(5, currency="QQQ"), row(6, currency="AUD")]),
    ):
        path = write_file(root / "in" / name, csv(*rows))
        bronze.land(lake, [path], date.fromisoformat(day))
    run_pipeline(settings)
    write_file(fx, FX_FIXED)
    reference = root / "reference"
    shutil.copytree(start, reference)
    done = purchases(reference, "reprocess", "--reason", "unknown_currency",
                     PURCHASES_FX_RATES=str(fx))
    assert done.returncode == 0, done.stderr
    return {"start": start, "reference": reference, "fx": fx}


def _state(home: Path) -> dict:
    settings = load_settings(home=home)
    h = Harness(settings, home.parent / "inbox-unused")
    return {**end_state(home), "current_silver": silver(h), "current_quarantine": reasons(h)}


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "then"), FAULTS)
def test_killed_reprocess_then_next_commands_equal_an_unkilled_one(
    crash_template: dict[str, Path], tmp_path: Path, fault: str, then: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(crash_template["start"], home)
    fx = str(crash_template["fx"])
    args = ("reprocess", "--reason", "unknown_currency")
    killed = purchases(home, *args, PURCHASES_FX_RATES=fx, PURCHASES_FAULT=fault)
    assert killed.returncode == KILLED_EXIT_CODE, f"{fault} not reached: {killed.stderr}"
    if then == "run":
        assert purchases(home, "run", PURCHASES_FX_RATES=fx).returncode == 0
    again = purchases(home, *args, PURCHASES_FX_RATES=fx)
    assert again.returncode == 0, again.stderr
    assert _state(home) == _state(crash_template["reference"])
    assert_clean_lake(home)
    runs = json.loads(purchases(home, "runs", "--format", "json").stdout)
    assert runs[-1]["status"] == "succeeded"
    assert [r["status"] for r in runs].count("interrupted") == 1


def test_rows_without_fields_are_never_selected(h: Harness) -> None:
    with pytest.raises(InputError, match="no fields"):
        reprocess_pipeline(h.settings, ["record_too_large"])
    with pytest.raises(InputError, match="not a reason code"):
        reprocess_pipeline(h.settings, ["unknown"])
    assert history.load_all(h.lake) == []  # refused before any run started
