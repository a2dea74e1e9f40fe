"""Tests of the deterministic sample-data generator."""

from __future__ import annotations

import csv
import gzip
import re
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from purchases.generate import (
    BAD_KINDS,
    CROSS_DAY_BAD_KINDS,
    CURRENCIES,
    HEADER,
    GeneratedFile,
    generate,
    write_single_file,
)

INT_RE = re.compile(r"^[+-]?[0-9]+$")
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
AMOUNT_RE = re.compile(r"^[+-]?[0-9]+(\.[0-9]{1,4})?$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_ID = 2**63 - 1
MAX_AMOUNT = Decimal("1000000")


def read_records(path: Path) -> list[list[str]]:
    """Every CSV record of a file, header included."""
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def data_records(path: Path) -> list[list[str]]:
    records = read_records(path)
    assert tuple(records[0]) == HEADER
    return records[1:]


def file_bytes(files: list[GeneratedFile]) -> list[bytes]:
    return [f.path.read_bytes() for f in files]


# --- a small reference of DESIGN §3, enough to tell which rule each generated row hits ---


def _valid_int(value: str) -> bool:
    return bool(INT_RE.match(value)) and 1 <= int(value) <= MAX_ID


def _valid_date(value: str) -> bool:
    if not DATE_RE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def row_reason(record: list[str], ingestion: date) -> str | None:
    """The first failing §3 row rule before duplicate detection, or None."""
    if len(record) != len(HEADER):
        return "malformed_row"
    cid, _, _, _, pid, pdate, amount, currency = (v.strip() for v in record)
    for name, value in (("customer_id", cid), ("purchase_id", pid)):
        if not value:
            return f"missing_{name}"
        if not _valid_int(value):
            return f"invalid_{name}"
    if not pdate:
        return "missing_purchase_date"
    if not _valid_date(pdate):
        return "invalid_purchase_date"
    if date.fromisoformat(pdate) > ingestion + timedelta(days=1):
        return "future_purchase_date"
    if not amount:
        return "missing_amount"
    if not AMOUNT_RE.match(amount):
        return "invalid_amount"
    if Decimal(amount) < 0:
        return "negative_amount"
    if Decimal(amount) > MAX_AMOUNT:
        return "amount_too_large"
    if not currency:
        return "missing_currency"
    if currency.upper() not in CURRENCIES:
        return "unknown_currency"
    return None


def standardised(record: list[str]) -> tuple[object, ...]:
    cid, first, last, email, pid, pdate, amount, currency = (v.strip() for v in record)
    email = email.lower()
    return (
        int(cid),
        " ".join(first.split()),
        " ".join(last.split()),
        email if EMAIL_RE.match(email) else None,
        int(pid),
        date.fromisoformat(pdate),
        Decimal(amount),
        currency.upper(),
    )


@dataclass
class DayOutcome:
    reasons: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    duplicates: int = 0
    cross_day_duplicates: int = 0
    cross_day_conflicts: int = 0
    invalid_emails: int = 0


def classify(files: list[GeneratedFile]) -> dict[date, DayOutcome]:
    """Apply the §3 rules day by day, one run per ingestion date, silver carried over."""
    silver: dict[int, tuple[object, ...]] = {}
    by_day: dict[date, list[list[str]]] = defaultdict(list)
    for f in files:
        by_day[f.ingestion_date].extend(data_records(f.path))
    outcomes: dict[date, DayOutcome] = {}
    for ingestion in sorted(by_day):
        out = outcomes[ingestion] = DayOutcome()
        passed: dict[int, list[tuple[object, ...]]] = defaultdict(list)
        for record in by_day[ingestion]:
            reason = row_reason(record, ingestion)
            if reason:
                out.reasons[reason] += 1
            else:
                std = standardised(record)
                passed[std[4]].append(std)  # type: ignore[index]
        for pid, rows in passed.items():
            if len(set(rows)) > 1:
                out.reasons["conflicting_duplicate"] += len(rows)
                continue
            out.duplicates += len(rows) - 1
            if pid in silver:
                if silver[pid] == rows[0]:
                    out.duplicates += 1
                    out.cross_day_duplicates += 1
                else:
                    out.reasons["conflicting_duplicate"] += 1
                    out.cross_day_conflicts += 1
                continue
            silver[pid] = rows[0]
            out.accepted += 1
            out.invalid_emails += rows[0][3] is None
    return outcomes


# --- tests ----------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", rows=2500, days=3, seed=7, bad_ratio=0.05, files_per_day=2)
    b = generate(tmp_path / "b", rows=2500, days=3, seed=7, bad_ratio=0.05, files_per_day=2)
    c = generate(tmp_path / "c", rows=2500, days=3, seed=8, bad_ratio=0.05, files_per_day=2)
    assert [f.path.name for f in a] == [f.path.name for f in b]
    assert file_bytes(a) == file_bytes(b)
    assert all(x != y for x, y in zip(file_bytes(a), file_bytes(c), strict=True))


def test_files_names_order_and_row_counts(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=1000, days=3, files_per_day=3, start=date(2024, 2, 28))
    assert [f.path.name for f in files] == [
        f"purchases_{d}_{k}.csv"
        for d in ("2024-02-28", "2024-02-29", "2024-03-01")
        for k in (1, 2, 3)
    ]
    assert [f.ingestion_date for f in files] == sorted(f.ingestion_date for f in files)
    assert [f.rows for f in files] == [334, 333, 333] * 3
    # Nothing else (no temporary file) is left in the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.path.name for f in files)
    for f in files:
        assert f.path.parent == tmp_path
        raw = f.path.read_bytes()
        assert b"\r" not in raw
        assert raw.startswith(b"customer_id,first_name,last_name,email,purchase_id,")
        assert len(data_records(f.path)) == f.rows


def test_header_matches_the_contract() -> None:
    contract = pytest.importorskip("purchases.contract")
    assert tuple(contract.INPUT_COLUMNS) == HEADER


def test_every_bad_kind_occurs(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=3000, days=3, bad_ratio=0.05)
    days = [data_records(f.path) for f in files]
    all_rows = [r for day in days for r in day]
    full = [r for r in all_rows if len(r) == 8]

    assert any(len(r) < 8 for r in all_rows)
    assert "" in {r[0] for r in full}
    assert {"abc", "4.0", "0", "-3"} & {r[0] for r in full}
    assert "" in {r[4] for r in full}
    assert {"x12", "1e3"} & {r[4] for r in full}
    assert "" in {r[5] for r in full}
    assert {"2024-02-30", "2024-1-5", "15/01/2024"} & {r[5] for r in full}
    assert {"$5.00", "1,000.00", "1e3", "1.23456", ".5"} & {r[6] for r in full}
    assert {"-12.50", "2000000.00", ""} <= {r[6] for r in full}
    assert {"XYZ", ""} <= {r[7] for r in full}
    assert any(not EMAIL_RE.match(r[3].strip().lower()) for r in full)
    for f, day in zip(files, days, strict=True):
        future = (f.ingestion_date + timedelta(days=5)).isoformat()
        assert any(len(r) == 8 and r[5] == future for r in day)
        by_pid: dict[str, list[list[str]]] = defaultdict(list)
        for r in day:
            if len(r) == 8 and r[4]:
                by_pid[r[4]].append(r)
        repeated = [rs for rs in by_pid.values() if len(rs) > 1]
        amounts = [{Decimal(r[6].strip()) for r in rs} for rs in repeated]
        assert any(len(a) > 1 for a in amounts), "no in-day conflicting duplicate"
        assert any(len(a) == 1 for a in amounts), "no in-day exact duplicate"
    day1_ids = {r[4] for r in days[0] if len(r) == 8}
    assert day1_ids & {r[4] for r in days[1] if len(r) == 8}, "no cross-day reuse"


def test_each_day_produces_every_reason_code(tmp_path: Path) -> None:
    rows, bad_ratio = 3000, 0.05
    files = generate(tmp_path, rows=rows, days=3, bad_ratio=bad_ratio)
    outcomes = classify(files)
    expected = {
        "malformed_row", "missing_customer_id", "invalid_customer_id", "missing_purchase_id",
        "invalid_purchase_id", "missing_purchase_date", "invalid_purchase_date",
        "future_purchase_date", "missing_amount", "invalid_amount", "negative_amount",
        "amount_too_large", "missing_currency", "unknown_currency", "conflicting_duplicate",
    }  # fmt: skip
    for i, (_ingestion, out) in enumerate(sorted(outcomes.items())):
        assert set(out.reasons) == expected
        assert out.duplicates >= 1
        assert out.invalid_emails >= 1
        assert out.accepted + sum(out.reasons.values()) + out.duplicates == rows
        if i == 0:
            assert out.cross_day_duplicates == out.cross_day_conflicts == 0
        else:
            assert out.cross_day_duplicates >= 1
            assert out.cross_day_conflicts >= 1
        # Nothing bad by accident: the bad slots, plus the earlier row each in-day conflict
        # drags down with it, account for every rejection, duplicate and email warning.
        in_day_conflicts = out.reasons["conflicting_duplicate"] - out.cross_day_conflicts
        bad = sum(out.reasons.values()) + out.duplicates + out.invalid_emails
        assert bad == round(rows * bad_ratio) + in_day_conflicts // 2


def test_every_kind_per_day_at_the_documented_minimum(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=2000, days=2, bad_ratio=0.01)
    outcomes = classify(files)
    day1, day2 = (outcomes[d] for d in sorted(outcomes))
    assert len(day1.reasons) == len(day2.reasons) == 15
    assert day1.invalid_emails and day2.invalid_emails and day1.duplicates
    assert day2.cross_day_duplicates and day2.cross_day_conflicts
    assert len(BAD_KINDS) == 19 and set(CROSS_DAY_BAD_KINDS) < set(BAD_KINDS)


def test_amounts_never_use_an_exponent(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=3000, days=2, bad_ratio=0.05)
    amounts = {r[6] for f in files for r in data_records(f.path) if len(r) == 8}
    # "1e3" is the one deliberate invalid_amount written with an exponent.
    assert {a for a in amounts if "e" in a.lower()} <= {"1e3"}
    clean = generate(tmp_path / "clean", rows=3000, days=2, bad_ratio=0.0)
    assert not any("e" in r[6].lower() for f in clean for r in data_records(f.path))


def test_clean_output_is_entirely_valid(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=2000, days=4, bad_ratio=0.0, files_per_day=2)
    seen: set[int] = set()
    last_day_max = 0
    currencies: Counter[str] = Counter()
    for f in files:
        day_ids = []
        for r in data_records(f.path):
            assert len(r) == 8
            cid, first, last, email, pid, pdate, amount, currency = (v.strip() for v in r)
            assert int(cid) >= 1 and int(pid) >= 1 and cid.isdigit() and pid.isdigit()
            assert first and last
            assert EMAIL_RE.match(email.lower())
            assert DATE_RE.match(pdate)
            purchase_date = date.fromisoformat(pdate)
            assert f.ingestion_date - timedelta(days=30) < purchase_date <= f.ingestion_date
            cur = currency.upper()
            assert cur in CURRENCIES
            pattern = r"^\d+$" if cur == "JPY" else r"^\d+\.\d{2}$"
            assert re.match(pattern, amount), (amount, cur)
            assert Decimal(amount) > 0
            assert int(pid) not in seen
            seen.add(int(pid))
            day_ids.append(int(pid))
            currencies[cur] += 1
        assert day_ids == sorted(day_ids)
        assert min(day_ids) > last_day_max
        last_day_max = max(day_ids)
    assert len(seen) == 2000 * 4
    assert currencies.most_common(1)[0][0] == "AUD"
    assert set(currencies) == set(CURRENCIES)
    outcomes = classify(files)
    assert all(
        not o.reasons and not o.duplicates and not o.invalid_emails for o in outcomes.values()
    )


def test_clean_output_has_formatting_noise_and_tricky_names(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=5000, days=1, bad_ratio=0.0)
    rows = data_records(files[0].path)
    assert any(r[1] != r[1].strip() for r in rows)
    assert any("  " in r[2].strip() for r in rows)
    assert any(r[7] != r[7].upper() for r in rows)
    assert any(r[3] != r[3].lower() for r in rows)
    names = {r[2].strip() for r in rows} | {r[1].strip() for r in rows}
    assert {"McDonald", "van der Berg", "O'Brien", "José"} <= names


def test_customers_are_stable_and_a_few_change_later(tmp_path: Path) -> None:
    files = generate(tmp_path, rows=3000, days=5, bad_ratio=0.0, customers=300)
    history: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for day, f in enumerate(files):
        for r in data_records(f.path):
            cid, first, last, email = (" ".join(v.split()) for v in r[:4])
            history[cid].append((day, first, last, email.lower()))
    assert len(history) > 250
    changed_email = changed_last = 0
    for seen in history.values():
        assert len({first for _, first, _, _ in seen}) == 1
        values = sorted({(day, last, email) for day, _, last, email in seen})
        # A change happens once, from some day on: never back to the old value.
        lasts = [last for _, last, _ in values]
        emails = [email for _, _, email in values]
        assert len(set(lasts)) <= 2 and len(set(emails)) <= 2
        assert lasts == sorted(lasts, key=lasts.index)
        changed_last += len(set(lasts)) == 2
        changed_email += len(set(emails)) == 2
        assert len(set(lasts)) + len(set(emails)) <= 3
        for a, b in zip(values, values[1:], strict=False):
            if a[1] != b[1] or a[2] != b[2]:
                assert b[0] > a[0]
    assert changed_last >= 1 and changed_email >= 1


def test_write_single_file_streams_a_deterministic_file(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        result = write_single_file(tmp_path / "big" / "p.csv", rows=20_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 20k rows held in a list would take several MB; streaming stays far below.
    assert peak < 1_000_000
    assert result == GeneratedFile(tmp_path / "big" / "p.csv", date(2024, 1, 15), 20_000)
    records = data_records(result.path)
    assert [int(r[4]) for r in records] == list(range(1, 20_001))
    again = write_single_file(tmp_path / "again.csv", rows=20_000)
    assert again.path.read_bytes() == result.path.read_bytes()


def test_write_single_file_gzip_and_bad_rows(tmp_path: Path) -> None:
    a = write_single_file(tmp_path / "a.csv.gz", rows=3000, bad_ratio=0.02, seed=3)
    b = write_single_file(tmp_path / "b.csv.gz", rows=3000, bad_ratio=0.02, seed=3)
    assert a.path.read_bytes() == b.path.read_bytes()
    text = gzip.decompress(a.path.read_bytes()).decode("utf-8")
    records = list(csv.reader(text.splitlines()))
    assert tuple(records[0]) == HEADER and len(records) == 3001
    plain = write_single_file(tmp_path / "c.csv", rows=3000, bad_ratio=0.02, seed=3)
    assert plain.path.read_text(encoding="utf-8") == text
    outcome = next(iter(classify([plain]).values()))
    assert len(outcome.reasons) == 15


def test_tiny_and_empty_outputs(tmp_path: Path) -> None:
    empty = generate(tmp_path / "e", rows=0, days=2)
    assert [f.rows for f in empty] == [0, 0]
    assert all(read_records(f.path) == [list(HEADER)] for f in empty)
    tiny = generate(tmp_path / "t", rows=10, days=2, bad_ratio=0.5, files_per_day=3)
    assert [f.rows for f in tiny] == [4, 3, 3] * 2
    assert sum(len(data_records(f.path)) for f in tiny) == 20


@pytest.mark.parametrize(
    "kwargs",
    [{"rows": -1}, {"days": 0}, {"files_per_day": 0}, {"bad_ratio": 1.5}, {"customers": 0}],
)
def test_rejects_nonsense_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]
