"""DESIGN §3 record_too_large: a record over PURCHASES_MAX_RECORD_BYTES is quarantined with a
bounded prefix of its text, once, and the rest of its file is processed as usual."""

from __future__ import annotations

import random
from datetime import date

import pytest

from conftest import HEADER
from purchases import bronze
from purchases.config import load_settings
from purchases.contract import DEFAULT_MAX_RECORD_BYTES, RAW_PREFIX_BYTES, Reason
from purchases.storage import Lake


def row(customer: int, purchase: int, first_name: str = "Ann") -> str:
    return f"{customer},{first_name},Lee,a{customer}@x.io,{purchase},2024-01-10,10.00,AUD"


def conserved(f: dict) -> bool:
    return f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]


@pytest.fixture
def bound(harness, monkeypatch):
    """A harness whose settings come from PURCHASES_MAX_RECORD_BYTES=1000 (cheap inputs)."""
    monkeypatch.setenv("PURCHASES_MAX_RECORD_BYTES", "1000")
    harness.settings = load_settings(home=harness.settings.home)
    assert harness.settings.max_record_bytes == 1000
    return harness


@pytest.mark.slow  # 50 MB through the whole pipeline: several seconds
def test_a_50_million_character_name_is_quarantined_not_lost(harness) -> None:
    huge = "A" * 50_000_000
    harness.land("big.csv", HEADER + row(1, 100, huge) + "\n" + row(2, 101) + "\n"
                 + row(3, 102) + "\n")
    record = harness.run()
    assert record.status == "succeeded"
    [f] = record.files
    assert (f["rows_in"], f["accepted"], f["rejected"]) == (3, 2, {"record_too_large": 1})
    [q] = harness.quarantine()
    assert q["reason"] == Reason.RECORD_TOO_LARGE
    assert q["raw_line"] == ("1," + huge)[:RAW_PREFIX_BYTES]
    assert q["line_number"] == 2
    assert q["source_file"] == "bronze/year=2024/month=01/day=15/big.csv"
    assert [r["purchase_id"] for r in harness.silver()] == [101, 102]
    assert harness.lake.list_files("_runs") == []  # the sanitised copy went with staging


def test_a_3_mb_field_is_too_large_not_malformed(harness) -> None:
    harness.land("mid.csv", HEADER + row(2, 101) + "\n" + row(1, 100, "B" * 3_000_000) + "\n")
    [f] = harness.run().files
    assert f["rejected"] == {"record_too_large": 1} and f["accepted"] == 1
    [q] = harness.quarantine()
    assert (q["line_number"], len(q["raw_line"])) == (3, RAW_PREFIX_BYTES)


def test_the_bound_is_the_setting_and_counts_bytes_without_the_line_break(bound) -> None:
    base = len(row(1, 100, ""))
    exact = row(1, 100, "é" * ((1000 - base) // 2) + "x" * ((1000 - base) % 2))
    over = row(2, 101, "x" * (1001 - base))
    assert (len(exact.encode()), len(over.encode())) == (1000, 1001)
    bound.land("edge.csv", HEADER.replace("\n", "\r\n") + exact + "\r\n" + over + "\r\n"
               + row(3, 102) + "\r\n")
    [f] = bound.run().files
    assert f["rejected"] == {"record_too_large": 1} and f["accepted"] == 2
    assert [r["purchase_id"] for r in bound.silver()] == [100, 102]
    assert bound.silver()[0]["first_name"] == exact.split(",")[1]
    [q] = bound.quarantine()
    assert (q["raw_line"], q["line_number"]) == (over, 3)


def test_the_prefix_keeps_whole_characters(harness) -> None:
    text = row(1, 100, "€" * 400_000)  # 3 bytes each: 4096 bytes would cut one in two
    harness.land("utf8.csv", HEADER + text + "\n")
    harness.run()
    [q] = harness.quarantine()
    assert text.startswith(q["raw_line"])
    assert RAW_PREFIX_BYTES - 3 < len(q["raw_line"].encode()) <= RAW_PREFIX_BYTES


def test_a_quoted_field_of_many_short_lines_is_one_record(bound) -> None:
    note = '"' + "\n".join(f"line {i:03}, with a comma" for i in range(60)) + '"'
    body = (HEADER + row(1, 100) + "\n" + row(2, 101, note) + "\n" + row(3, 102) + "\n"
            + '4,"Multi\nLine",Lee,d@x.io,103,2024-01-10,1.00,AUD\n' + row(5, 104) + "\n")
    bound.land("notes.csv", body)
    [f] = bound.run().files
    assert conserved(f) and f["rows_in"] == 5
    assert f["rejected"] == {"record_too_large": 1}
    assert [r["purchase_id"] for r in bound.silver()] == [100, 102, 103, 104]
    assert bound.silver()[2]["first_name"] == "Multi Line"  # quoting after the cut intact
    [q] = bound.quarantine()
    assert q["line_number"] == 3 and q["raw_line"].startswith('2,"line 000')


def test_gzip_file_with_a_long_line(harness) -> None:
    harness.land("day.csv.gz", HEADER + row(1, 100) + "\n" + row(2, 101, "Z" * 5_000_000)
                 + "\n" + row(3, 102) + "\n")
    [f] = harness.run().files
    assert (f["rows_in"], f["accepted"], f["rejected"]) == (3, 2, {"record_too_large": 1})
    assert harness.quarantine()[0]["line_number"] == 3


def test_conservation_per_file_with_every_kind_of_row(bound) -> None:
    big = "x" * 1200
    bound.land("a.csv", "\n" + HEADER + row(1, 100) + "\n" + row(2, 101, big) + "\n"
               + "1,short\n" + row(1, 100) + "\n" + row(3, 102, big))  # no final line break
    bound.land("b.csv", HEADER + row(4, 103, big) + "\n" + row(4, 104) + "\n"
               + row(5, 105).replace("10.00", "-1") + "\n")
    bound.land("c.csv", HEADER + row(6, 106) + "\n")
    record = bound.run()
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in record.files}
    assert all(conserved(f) for f in record.files)
    a, b, c = by_name["a.csv"], by_name["b.csv"], by_name["c.csv"]
    assert (a["rows_in"], a["accepted"], a["duplicates"]) == (5, 1, 1)
    assert a["rejected"] == {"record_too_large": 2, "malformed_row": 1}
    assert (b["rows_in"], b["accepted"]) == (3, 1)
    assert b["rejected"] == {"record_too_large": 1, "negative_amount": 1}
    assert (c["rows_in"], c["accepted"]) == (1, 1)
    lines = sorted((q["source_file"][-5:], q["line_number"]) for q in bound.quarantine()
                   if q["reason"] == Reason.RECORD_TOO_LARGE)
    assert lines == [("a.csv", 4), ("a.csv", 7), ("b.csv", 2)]


def test_a_stray_quote_does_not_cut_a_file(bound) -> None:
    # A quote inside an unquoted field is a literal character: the rows after it stay rows.
    rows = [row(1, 100, '5" screen')] + [row(i, 100 + i) for i in range(2, 60)]
    bound.land("stray.csv", HEADER + "\n".join(rows) + "\n")
    [f] = bound.run().files
    assert (f["rows_in"], f["accepted"], f["rejected"]) == (59, 59, {})


def test_a_clean_file_is_read_in_place(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    src = tmp_path / "clean.csv"
    src.write_text(HEADER + "".join(row(i, i) + "\n" for i in range(1, 5000)))
    bronze.land(lake, [src], date(2024, 1, 15))
    [obj] = lake.list_bronze()
    f = bronze.inspect(lake, obj, max_record_bytes=1000, scratch="_runs/t/bronze")
    assert (f.read_path, f.oversized, f.compressed) == (obj.path, (), False)
    assert not lake.exists("_runs/t/bronze")


def _records(rng: random.Random) -> list[str]:
    def field() -> str:
        if rng.random() < 0.4:
            parts = ["a", ",", '""', "\n", "\r\n", "é", " "]
            return '"' + "".join(rng.choice(parts) for _ in range(rng.randint(0, 12))) + '"'
        return "".join(rng.choice("ab é") for _ in range(rng.randint(0, 12)))

    return [",".join(field() for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 9))]


@pytest.mark.parametrize("seed", range(3))
def test_record_splitting_matches_the_csv_grammar(seed: int) -> None:
    """Random RFC 4180 records, any line breaks, fed in pieces of any size: exactly the
    records over the bound are cut, the rest is kept byte for byte, and the fast check
    flags every file that has one."""
    rng = random.Random(seed)
    for _ in range(800):
        records = [r for r in _records(rng) if r]  # an empty record is a blank line
        breaks = [rng.choice(["\n", "\r\n", "\r"]) for _ in records]
        limit = rng.randint(1, 40)
        data = "".join(r + b for r, b in zip(records, breaks, strict=True)).encode()
        kept = "".join(r + b for r, b in zip(records, breaks, strict=True)
                       if len(r.encode()) <= limit).encode()
        too_long = [len(r.encode()) for r in records if len(r.encode()) > limit]
        step = rng.choice([1, 2, 7, len(data) or 1])
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        cutter = bronze._RecordCutter(limit, keep=0)
        out = b"".join(cutter.feed(p) for p in pieces) + cutter.finish()
        assert (out, [c.size for c in cutter.cut]) == (kept, too_long), data
        # Each record here is shorter than RAW_PREFIX_BYTES: its prefix is all of it.
        assert [c.prefix for c in cutter.cut] == [r for r in records if len(r.encode()) > limit]
        check = bronze._LengthCheck(limit)
        for p in pieces:
            check.feed(p)
        assert check.found == bool(too_long), data


def test_the_setting_is_validated(monkeypatch) -> None:
    from purchases.errors import ConfigError

    monkeypatch.setenv("PURCHASES_MAX_RECORD_BYTES", "10")
    with pytest.raises(ConfigError, match="PURCHASES_MAX_RECORD_BYTES"):
        load_settings()
    monkeypatch.delenv("PURCHASES_MAX_RECORD_BYTES")
    assert load_settings().max_record_bytes == DEFAULT_MAX_RECORD_BYTES


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ("x" * 3_000_000, "cannot read its header: field larger than field limit"),
        (HEADER.rstrip("\n") + "," + ",".join(f"c{i}" for i in range(250)) + "\n" + row(1, 1)
         + "\n", "header row is 1"),
    ],
    ids=["one-3-mb-line", "header-over-the-bound"],
)
def test_a_file_whose_header_is_too_long_is_rejected_whole(bound, content, detail) -> None:
    # Before: the first stopped every run in bronze_to_silver (csv's field limit), for good.
    bound.land("wide.csv", content)
    bound.land("good.csv", HEADER + row(1, 100) + "\n")
    record = bound.run()
    assert record.status == "succeeded"
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in record.files}
    assert by_name["wide.csv"]["file_rejection"] == "unreadable"
    assert detail in by_name["wide.csv"]["detail"]
    assert by_name["good.csv"]["accepted"] == 1
    assert bound.run().files == []  # processed: not retried
