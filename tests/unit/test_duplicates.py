"""Duplicates within and across runs, replays, and arrival-order independence (DESIGN §3-4)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from conftest import HEADER


def row(pid: int, cid: int = 1, amount: str = "10.00", **kw: str) -> str:
    f = dict(
        customer_id=str(cid),
        first_name=kw.get("first", "Ann"),
        last_name=kw.get("last", "Lee"),
        email=kw.get("email", "ann@x.io"),
        purchase_id=str(pid),
        purchase_date=kw.get("day", "2024-01-10"),
        amount=amount,
        currency=kw.get("currency", "AUD"),
    )
    return ",".join(f.values())


def csv(*rows: str) -> str:
    return HEADER + "\n".join(rows) + "\n"


def test_identical_copies_in_one_run_keep_one(harness) -> None:
    harness.land("a.csv", csv(row(1), row(1, amount="10.0"), row(2)))
    harness.land("b.csv", csv(row(1, email=" ANN@X.IO ")))
    record = harness.run()
    assert [r["purchase_id"] for r in harness.silver()] == [1, 2]
    counts = {f["path"].rsplit("/", 1)[-1]: f for f in record.files}
    assert counts["a.csv"]["duplicates"] == 1 and counts["a.csv"]["accepted"] == 2
    assert counts["b.csv"]["duplicates"] == 1 and counts["b.csv"]["accepted"] == 0
    # the first copy in arrival order (ingestion date, then path) is the one kept
    assert harness.silver()[0]["source_file"].endswith("a.csv")


def test_conflicting_copies_in_one_run_are_all_rejected(harness) -> None:
    harness.land("a.csv", csv(row(1), row(1, amount="11.00"), row(1), row(2)))
    harness.run()
    assert [r["purchase_id"] for r in harness.silver()] == [2]
    reasons = sorted(q["reason"] for q in harness.quarantine())
    assert reasons == ["conflicting_duplicate"] * 3


def test_earlier_purchase_stands_against_later_runs(harness) -> None:
    harness.land("a.csv", csv(row(1), row(2)), day="2024-01-15")
    harness.run()
    harness.land("b.csv", csv(row(1), row(2, amount="99.00"), row(3)), day="2024-01-16")
    record = harness.run()
    [f] = record.files
    assert (f["accepted"], f["duplicates"], f["rejected"]) == (1, 1, {"conflicting_duplicate": 1})
    silver = {r["purchase_id"]: r["amount"] for r in harness.silver()}
    assert silver == {1: Decimal("10.0000"), 2: Decimal("10.0000"), 3: Decimal("10.0000")}
    assert harness.summary()[1]["total_spent_aud"] == Decimal("30.00")


def test_rerun_with_nothing_pending_changes_nothing(harness) -> None:
    harness.land("a.csv", csv(row(1), row(2, cid=2)))
    harness.run()
    before = (harness.silver(), harness.quarantine(), harness.summary())
    record = harness.run()
    assert record.files == [] and record.status == "succeeded"
    assert (harness.silver(), harness.quarantine(), harness.summary()) == before


def test_same_file_again_copy_under_other_name_and_repeats(harness) -> None:
    content = csv(row(1), row(2, cid=2, amount="5.50"))
    harness.land("a.csv", content, day="2024-01-15")
    harness.run()
    summary = harness.summary()
    harness.land("a.csv", content, day="2024-01-15")  # same path, same bytes: a no-op
    assert harness.run().files == []
    harness.land("copy.csv", content, day="2024-01-16")  # same bytes, other name
    record = harness.run()
    assert record.files[0]["duplicates"] == 2 and record.files[0]["accepted"] == 0
    harness.land(
        "repeat.csv", csv(row(2, cid=2, amount="5.5"), row(1, amount="12.00")), day="2024-01-17"
    )
    record = harness.run()
    assert record.files[0]["duplicates"] == 1
    assert record.files[0]["rejected"] == {"conflicting_duplicate": 1}
    assert harness.summary() == summary
    assert len(harness.silver()) == 2


def test_changed_file_under_the_same_name_is_a_new_file(harness) -> None:
    harness.land("a.csv", csv(row(1)))
    harness.run()
    harness.land("a.csv", csv(row(1), row(2)))  # same name, new bytes
    record = harness.run()
    [f] = record.files
    assert (f["accepted"], f["duplicates"]) == (1, 1)
    assert harness.summary()[1]["total_spent_aud"] == Decimal("20.00")


def test_a_changed_file_replaced_in_the_lake_is_processed_again(harness) -> None:
    harness.land("a.csv", csv(row(1)))
    harness.run()
    rel = harness.lake.list_files("bronze")[0]
    harness.lake.write_bytes(rel, csv(row(1), row(3)).encode())  # overwritten in place
    [f] = harness.run().files
    assert f["path"] == rel and (f["accepted"], f["duplicates"]) == (1, 1)


def test_landing_never_overwrites_an_unprocessed_file(harness) -> None:
    harness.land("a.csv", csv(row(1)))
    harness.land("a.csv", csv(row(2)))  # before any run: both versions must survive
    assert len(harness.lake.list_files("bronze")) == 2
    record = harness.run()
    assert sum(f["accepted"] for f in record.files) == 2


def test_latest_name_and_email_win_and_totals_cover_all_days(harness) -> None:
    harness.land(
        "d1.csv",
        csv(
            row(1, day="2024-01-01", email="old@x.io", last="Lee"),
            row(2, day="2024-01-05", email="", last="Lee"),
        ),
        day="2024-01-15",
    )
    harness.run()
    harness.land(
        "d2.csv",
        csv(
            row(3, day="2024-01-03", email="mid@x.io", last="Kim"),
            row(4, day="2024-01-16", email="bad-email", first="", last=""),
        ),
        day="2024-01-16",
    )
    harness.run()
    s = harness.summary()[1]
    # latest non-NULL by (purchase_date, purchase_id): name from #2 (01-05), email from #3
    assert s["full_name"] == "Ann Lee"
    assert s["email"] == "mid@x.io"
    assert s["total_spent_aud"] == Decimal("40.00")
    assert (s["first_purchase_date"], s["last_purchase_date"]) == (
        date(2024, 1, 1),
        date(2024, 1, 16),
    )
    assert s["purchase_count"] == 4


def test_full_name_is_taken_whole_from_the_latest_row_having_one(harness) -> None:
    harness.land(
        "a.csv",
        csv(
            row(1, day="2024-01-01", first="Ann", last="Lee"),
            row(2, day="2024-01-02", first="", last="Smith"),
        ),
    )
    harness.run()
    assert harness.summary()[1]["full_name"] == "Smith"


def _run_in_order(harness_factory, names: list[str], files: dict[str, str]) -> dict:
    h = harness_factory()
    for name in names:
        h.land(name, files[name], day="2024-01-15")
    h.run()
    return h.summary()


def test_arrival_order_does_not_change_the_table(settings, tmp_path) -> None:
    from conftest import Harness

    files = {
        "a.csv": csv(row(1, day="2024-01-02", email="a@x.io"), row(2, cid=2), row(5, cid=3)),
        "b.csv": csv(
            row(3, day="2024-01-01", email="b@x.io"), row(2, cid=2), row(5, cid=3, amount="1.00")
        ),
        "c.csv": csv(row(4, day="2024-01-02", email="c@x.io", amount="3.30", currency="USD")),
    }
    results = []
    for i, order in enumerate((["a.csv", "b.csv", "c.csv"], ["c.csv", "b.csv", "a.csv"])):
        s = settings.model_copy(update={"home": tmp_path / f"home{i}"})
        results.append(_run_in_order(lambda s=s, i=i: Harness(s, tmp_path / f"t{i}"), order, files))
    assert results[0] == results[1]
    assert 3 not in results[0]  # conflicting purchase 5 rejected whichever arrived first
    assert results[0][1]["email"] == "c@x.io"  # purchase 4 beats 1 on purchase_id


def test_day_by_day_runs_in_two_orders_agree(settings, tmp_path) -> None:
    """Files landed and run one by one, in two orders, give the same summary table."""
    from conftest import Harness
    from purchases.generate import generate

    generated = generate(tmp_path / "gen", rows=400, days=3, seed=3, bad_ratio=0.0)
    results = []
    for i, order in enumerate((generated, list(reversed(generated)))):
        h = Harness(settings.model_copy(update={"home": tmp_path / f"o{i}"}), tmp_path / f"t{i}")
        for f in order:
            h.land(f.path.name, f.path.read_bytes(), day=str(f.ingestion_date))
            h.run()
        results.append(h.summary())
    assert results[0] == results[1]
    assert len(results[0]) > 50


def test_overlong_names_are_cut_to_the_serving_width_not_rejected(harness) -> None:
    long_last = "X" * 300
    harness.land("long.csv", csv(row(1, last=long_last)))
    record = harness.run()
    assert record.status == "succeeded"
    [s] = harness.silver()
    assert s["last_name"] == long_last  # silver keeps the value whole
    served = harness.summary()[1]["full_name"]
    assert served == ("Ann " + long_last)[:255]
