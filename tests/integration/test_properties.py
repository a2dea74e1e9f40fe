"""Property-based tests of the whole pipeline (hypothesis): CSV files built from random field
text, quoting, header order, widths, blank lines, BOM, CRLF, encodings and gzip are landed in
bronze and run through every step (DuckDB, Parquet, SQLite), and then:

* no run fails, whatever the input: a file may be rejected whole, with its reason;
* every file conserves its rows (rows_in = accepted + rejected + duplicates), in the run
  record and in the silver and quarantine rows of that file;
* where the file's records are unambiguous, each row ends where the rules say: valid rows
  accepted once, copies counted as duplicates, conflicting copies and single-field mistakes
  rejected with the expected reason code, unparseable records as malformed_row;
* every accepted amount_aud equals amount × rate (the FX table's latest valid_from on the
  purchase date) rounded half-up to the cent, computed here with Decimal;
* the served summary equals the sum of silver amount_aud per customer, to the cent.

Seeded (derandomize) and bounded: the examples are the same on every run. Set
PURCHASES_PROPERTY_EXAMPLES to try more of them locally (e.g. 500), PURCHASES_PROPERTY_SHRINK=1
to shrink a failure (slow: a pipeline run per try), and PURCHASES_PROPERTY_DUMP=<folder> to
keep the files of the latest example there.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from purchases import bronze, serving
from purchases.config import load_settings
from purchases.contract import INPUT_COLUMNS
from purchases.orchestrator import run_pipeline
from purchases.storage import Lake

SHRINK = os.environ.get("PURCHASES_PROPERTY_SHRINK") == "1"
_DUMP_TO = os.environ.get("PURCHASES_PROPERTY_DUMP")
DUMP = Path(_DUMP_TO) if _DUMP_TO else None
EXAMPLES = int(os.environ.get("PURCHASES_PROPERTY_EXAMPLES", "50"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
    # Shrinking costs a pipeline run per try (minutes): only when asked. A failure prints the
    # whole example and its blob (for @reproduce_failure) instead.
    phases=(Phase.explicit, Phase.generate, *((Phase.shrink,) if SHRINK else ())),
)

# Was a known defect (see test_stray_line_ending_does_not_stop_the_pipeline): a CR or LF
# outside quotes that is not the file's own line ending failed the whole run. Fixed (bronze
# reads such a file from a copy with LF line breaks only); True makes the generator write no
# mixed line endings again, to look at another failure on its own.
AVOID_STRAY_LINE_ENDINGS = False

INGESTION_DAY = date(2024, 1, 15)

FX_TABLE = """currency,rate_to_aud,valid_from
AUD,1.00000000,1970-01-01
USD,1.50000000,1970-01-01
USD,1.53456789,2022-06-15
EUR,1.65000000,1970-01-01
JPY,0.01020000,1970-01-01
GBP,1.90000000,1970-01-01
GBP,1.87654321,2023-03-01
KWD,4.98765432,2021-01-01
"""
RATES: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
for _line in FX_TABLE.splitlines()[1:]:
    _cur, _rate, _from = _line.split(",")
    RATES[_cur].append((date.fromisoformat(_from), Decimal(_rate)))


def rate_on(currency: str, day: date) -> Decimal | None:
    """The FX table's rate for the day: the latest valid_from <= day (None: no rate)."""
    valid = [(start, rate) for start, rate in RATES.get(currency, []) if start <= day]
    return max(valid)[1] if valid else None


def to_aud(amount: Decimal, rate: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60  # exact: 18 digits × 18 digits
        return (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- field text ------------------------------------------------------------------------------

# Whitespace the standardisation trims (DESIGN §3: any Unicode whitespace).
PADDING = ["", "", "", " ", "  ", "\t", "\u00a0", "\u2003", "\u3000", "\u202f", "\x0b", "\x0c",
           "\x85", "\u2028"]
NASTY = [
    "\x00", "\x01", "\x07", "\x1b", "\x1f", "\x7f", "\x9c", "\u200b", "\u200f", "\u202e",
    "\ufeff", "\u0301", "\u0308", "e\u0301", "😀", "👩‍👩‍👧", "🇦🇺", "\U0010fffd", '"', '""', ",",
    "\n", "\r", "\r\n", "[/]", "[bold]", "'", "\\", "%s", "NULL", "\u00e9", "中文", "עברית",
]
hostile_text = st.one_of(
    st.text(max_size=12),
    st.lists(st.sampled_from(NASTY + [" ", "a", "Z", "0"]), max_size=16).map("".join),
    st.lists(st.sampled_from(NASTY), max_size=6).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "😀", " ", "\x00", '"']),
              st.integers(1000, 10_000)),  # wide fields, up to ~10 KB (40 KB of UTF-8)
)
short_hostile = st.one_of(st.text(max_size=10), st.sampled_from(NASTY))


@dataclass
class Canonical:
    """The standardised meaning of a valid row: what duplicate detection compares."""

    customer_id: int
    first_name: str
    last_name: str
    email: str
    purchase_id: int
    purchase_date: date
    amount: Decimal
    currency: str

    def key(self) -> tuple[Any, ...]:
        return (self.customer_id, self.first_name, self.last_name, self.email,
                self.purchase_id, self.purchase_date, self.amount, self.currency)


@dataclass
class Record:
    fields: list[str]  # one per header column
    kind: str  # valid | mutant | junk | wrong_count
    canonical: Canonical | None = None
    expected_reason: str | None = None  # mutants: the reason their one mistake gives


def amount_text(amount: Decimal, draw) -> str:
    """How an amount may be written: sign, leading zeros, trailing zeros (up to 4 places)."""
    places = -amount.as_tuple().exponent
    written = draw(st.integers(max(places, 0), 4))
    text = f"{amount:.{written}f}"
    if draw(st.integers(0, 5)) == 0:
        text = "00" + text
    if draw(st.integers(0, 5)) == 0:
        text = "+" + text
    return text


@st.composite
def canonical_rows(draw, purchase_id: int) -> Canonical:
    units = draw(st.one_of(
        st.integers(0, 10_000_000_000),  # 0 .. 1,000,000.0000
        st.sampled_from([1, 5, 15, 49, 50, 51, 150, 10_000_000_000]),  # half-cent edges
    ))
    places = draw(st.integers(0, 4))
    amount = (Decimal(units).scaleb(-4)).quantize(Decimal(1).scaleb(-places),
                                                   rounding=ROUND_HALF_UP)
    if amount > 1_000_000:
        amount = Decimal(1_000_000)
    day = draw(st.dates(date(2019, 1, 1), date(2024, 1, 16)))
    currencies = [c for c in RATES if rate_on(c, day) is not None]
    return Canonical(
        customer_id=draw(st.integers(1, 12)),
        first_name=draw(hostile_text),
        last_name=draw(short_hostile),
        email=draw(st.one_of(st.just(""), st.just("Ann.Lee@Example.COM"), short_hostile)),
        purchase_id=purchase_id,
        purchase_date=day,
        amount=amount,
        currency=draw(st.sampled_from(currencies)),
    )


def render(c: Canonical, draw) -> dict[str, str]:
    """One way of writing a valid row: padded transaction fields, varied case and digits."""

    def pad(text: str) -> str:
        return draw(st.sampled_from(PADDING)) + text + draw(st.sampled_from(PADDING))

    def case(text: str) -> str:
        if not text.isascii():  # Unicode case mapping is not one-to-one: leave it
            return text
        return draw(st.sampled_from([text, text.upper(), text.lower(), text.swapcase()]))

    ident = draw(st.sampled_from(["{}", "+{}", "00{}"]))
    return {
        "customer_id": pad(ident.format(c.customer_id)),
        "first_name": c.first_name,
        "last_name": c.last_name,
        "email": case(c.email),
        "purchase_id": pad(draw(st.sampled_from(["{}", "+{}", "0{}"])).format(c.purchase_id)),
        "purchase_date": pad(c.purchase_date.isoformat()),
        "amount": pad(amount_text(c.amount, draw)),
        "currency": pad(case(c.currency)),
    }


MISTAKES: dict[str, list[tuple[str, str]]] = {
    "customer_id": [("", "missing_customer_id"), ("  ", "missing_customer_id"),
                    ("abc", "invalid_customer_id"), ("4.0", "invalid_customer_id"),
                    ("0", "invalid_customer_id"), ("-5", "invalid_customer_id"),
                    ("9223372036854775808", "invalid_customer_id"),
                    ("1e3", "invalid_customer_id"), ("٣", "invalid_customer_id")],
    "purchase_date": [("", "missing_purchase_date"), ("2024-1-5", "invalid_purchase_date"),
                      ("2023-02-29", "invalid_purchase_date"),
                      ("20240105", "invalid_purchase_date"),
                      ("2024-13-01", "invalid_purchase_date"),
                      ("2024-01-17", "future_purchase_date"),
                      ("2031-05-05", "future_purchase_date")],
    "amount": [("", "missing_amount"), ("1e3", "invalid_amount"), ("$5", "invalid_amount"),
               ("1,000", "invalid_amount"), (".5", "invalid_amount"), ("5.", "invalid_amount"),
               ("1.00000", "invalid_amount"), ("--1", "invalid_amount"),
               ("NaN", "invalid_amount"), ("-0.01", "negative_amount"),
               ("-5", "negative_amount"), ("1000000.0001", "amount_too_large"),
               ("99999999999999", "amount_too_large")],
    "currency": [("", "missing_currency"), ("XXX", "unknown_currency"),
                 ("US D", "unknown_currency"), ("usdd", "unknown_currency")],
}


@dataclass
class CsvFile:
    name: str
    header: list[str]  # rendered header cells
    columns: list[str | None]  # input column (or None: an extra column) of each position
    records: list[Record]
    data: bytes = b""
    text: str = ""  # the text the pipeline should see (BOM stripped)
    ambiguous: bool = False  # a record with stray quotes: record boundaries are the parser's
    expected_rejection: str | None = None


def quote(value: str, draw, force: bool = False) -> str:
    needs = any(ch in value for ch in ',"\r\n')
    if needs or force or draw(st.integers(0, 4)) == 0:
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_files(draw, name: str, next_id: list[int], earlier: list[Canonical]) -> CsvFile:
    """One CSV file: a header in any order, then a mix of valid rows, copies, conflicting
    copies, single mistakes, junk and wrong field counts, rendered in one of many ways."""
    order = list(draw(st.permutations(INPUT_COLUMNS)))
    columns: list[str | None] = list(order)
    for _ in range(draw(st.integers(0, 2))):  # extra columns, anywhere: ignored
        columns.insert(draw(st.integers(0, len(columns))), None)
    missing = draw(st.integers(0, 19)) == 0
    if missing:
        columns.remove(draw(st.sampled_from(INPUT_COLUMNS)))
    header = []
    for i, col in enumerate(columns):
        label = col or f"extra_{i}"
        label = draw(st.sampled_from([label, label.upper(), label.title()]))
        header.append(draw(st.sampled_from(["", " ", "\t"])) + label
                      + draw(st.sampled_from(["", " "])))
    f = CsvFile(name, header, columns, [])
    f.expected_rejection = "missing_columns" if missing else None

    def new_valid() -> Canonical:
        next_id[0] += 1
        return draw(canonical_rows(next_id[0]))

    def as_fields(values: dict[str, str]) -> list[str]:
        return [values[c] if c else draw(short_hostile) for c in columns]

    valid: list[Canonical] = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(
            ["valid"] * 6 + ["copy", "conflict", "resend", "mutant", "mutant", "junk",
                             "wrong_count", "odd_quote"]))
        if kind == "valid" or (kind in ("copy", "conflict") and not valid):
            c = new_valid()
            valid.append(c)
            f.records.append(Record(as_fields(render(c, draw)), "valid", c))
        elif kind == "copy":  # the same purchase written another way: a duplicate
            c = draw(st.sampled_from(valid))
            f.records.append(Record(as_fields(render(c, draw)), "valid", c))
        elif kind == "conflict":  # same purchase_id, another amount: both rejected
            c = draw(st.sampled_from(valid))
            # Another amount that is still within the maximum (else it fails on that first).
            step = Decimal("0.01") if c.amount <= Decimal("999999.99") else Decimal("-0.01")
            other = Canonical(**{**c.__dict__, "amount": c.amount + step})
            f.records.append(Record(as_fields(render(other, draw)), "valid", other))
        elif kind == "resend":  # a purchase an earlier run accepted, again or changed
            if not earlier:
                continue
            c = draw(st.sampled_from(earlier))
            if draw(st.booleans()):
                c = Canonical(**{**c.__dict__, "last_name": c.last_name + "x"})
            f.records.append(Record(as_fields(render(c, draw)), "valid", c))
        elif kind == "mutant":
            c = new_valid()
            values = render(c, draw)
            col = draw(st.sampled_from(sorted(MISTAKES)))
            text, reason = draw(st.sampled_from(MISTAKES[col]))
            values[col] = text
            f.records.append(Record(as_fields(values), "mutant", c, reason))
        elif kind == "junk":
            f.records.append(Record([draw(short_hostile) for _ in columns], "junk"))
        elif kind == "wrong_count":
            n = draw(st.integers(2, len(columns) + 3).filter(lambda k: k != len(columns)))
            f.records.append(Record([draw(short_hostile) for _ in range(n)], "wrong_count",
                                    expected_reason="malformed_row"))
        else:  # stray quotes: how the parser splits records is its own business
            fields = [draw(short_hostile) for _ in columns]
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(
                ['ab"c', '"abc"def', '"unclosed', 'x""', '"']))
            f.records.append(Record(fields, "odd_quote"))
            f.ambiguous = True

    if AVOID_STRAY_LINE_ENDINGS and f.ambiguous:
        # A stray quote flips the parser's quoting state, so a CR or LF written inside quotes
        # may be read as outside them: leave them out of such files while the defect stands.
        for r in f.records:
            r.fields = [v.replace("\r", "").replace("\n", "") for v in r.fields]
    endings = ["\n", "\r\n"] + ([] if AVOID_STRAY_LINE_ENDINGS else ["mixed"])
    eol = draw(st.sampled_from(endings))
    if eol == "mixed":  # each line its own ending: what concatenated files look like
        f.ambiguous = True
    lines = [",".join(quote(h, draw) for h in header)]
    for r in f.records:
        if r.kind == "odd_quote":
            lines.append(",".join(r.fields))
        else:
            lines.append(",".join(quote(v, draw) for v in r.fields))
    def ending() -> str:
        return draw(st.sampled_from(["\n", "\r\n", "\r"])) if eol == "mixed" else eol

    text = "".join(ending() for _ in range(draw(st.integers(0, 2))))
    for i, line in enumerate(lines):
        text += line
        if i + 1 < len(lines) or draw(st.booleans()):
            text += ending()
        if i and draw(st.integers(0, 6)) == 0:
            text += ending() * draw(st.integers(1, 2))  # blank lines between records
    if draw(st.integers(0, 24)) == 0:
        text = draw(st.sampled_from(["", ending() * 3]))  # nothing but (perhaps) blank lines
        f.records, f.expected_rejection, f.ambiguous = [], "empty", False
    f.text = text
    bom = draw(st.integers(0, 4)) == 0
    encoding = draw(st.sampled_from(["utf-8"] * 12 + ["utf-16", "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if bom:
        data = "\ufeff".encode() + data
    if draw(st.integers(0, 14)) == 0 and data:  # a stray non-UTF-8 byte somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                 b"\xe9"])) + data[at:]
    try:
        seen = data.decode("utf-8")
    except UnicodeDecodeError:
        f.expected_rejection = "not_utf8"
    else:
        if seen.removeprefix("\ufeff") != text:
            f.ambiguous = True  # re-encoding changed the text: counts are not ours to know
        if (f.expected_rejection is None and not seen.removeprefix("\ufeff").strip("\r\n")
                and not f.ambiguous):
            f.expected_rejection = "empty"
    if draw(st.integers(0, 3)) == 0:
        f.name += ".gz"
        data = gzip.compress(data, mtime=0)
        if draw(st.integers(0, 14)) == 0:
            data = data[: len(data) // 2]
            f.expected_rejection = "unreadable"
    f.data = data
    return f


@st.composite
def scenarios(draw) -> list[list[CsvFile]]:
    """One or two runs, each over one to three files (sometimes one sent twice)."""
    next_id = [10**9]
    earlier: list[Canonical] = []
    runs: list[list[CsvFile]] = []
    for run in range(draw(st.integers(1, 2))):
        files: list[CsvFile] = []
        for i in range(draw(st.integers(1, 3))):
            if files and draw(st.integers(0, 5)) == 0:  # the same bytes under another name
                same = files[-1]
                copy = CsvFile(f"r{run}f{i}-copy.csv" + (".gz" if same.name.endswith(".gz")
                                                           else ""),
                               same.header, same.columns, same.records, same.data, same.text,
                               same.ambiguous, same.expected_rejection)
                files.append(copy)
                continue
            files.append(draw(csv_files(f"r{run}f{i}.csv", next_id, earlier)))
        for f in files:
            earlier.extend(r.canonical for r in f.records if r.kind == "valid" and r.canonical)
        runs.append(files)
    return runs


# --- the expected outcome, row by row ----------------------------------------------------------


def expected_outcomes(runs: list[list[CsvFile]]) -> list[dict[str, Counter]]:
    """Per run, per file name: Counter of outcomes (accepted, duplicate, <reason>), or None for
    a file whose records are not ours to know. Applies DESIGN §3 to the canonical rows."""
    silver: dict[int, tuple] = {}
    # Purchases of files whose records the parser splits its own way: they may or may not
    # be in silver, so a file holding one of them again is not ours to predict either.
    uncertain: set[int] = set()
    result = []
    for files in runs:
        per_file: dict[str, Counter | None] = {}
        passing: list[tuple[str, Canonical]] = []
        for f in files:
            if f.ambiguous and not f.expected_rejection:
                uncertain.update(r.canonical.purchase_id for r in f.records if r.canonical)
        for f in files:
            pids = {r.canonical.purchase_id for r in f.records if r.canonical}
            if f.expected_rejection or f.ambiguous or pids & uncertain:
                per_file[f.name] = None
                continue
            counts: Counter = Counter()
            for r in f.records:
                if r.kind == "valid":
                    passing.append((f.name, r.canonical))
                elif r.kind == "junk":
                    counts["junk"] += 1
                else:
                    counts[r.expected_reason] += 1
            per_file[f.name] = counts
        by_id: dict[int, list[tuple[str, Canonical]]] = defaultdict(list)
        for name, c in passing:
            by_id[c.purchase_id].append((name, c))
        for pid, rows in by_id.items():
            keys = {c.key() for _, c in rows}
            if pid in silver:
                for name, c in rows:
                    same = c.key() == silver[pid] and len(keys) == 1
                    per_file[name]["duplicate" if same else "conflicting_duplicate"] += 1
            elif len(keys) > 1:
                for name, _ in rows:
                    per_file[name]["conflicting_duplicate"] += 1
            else:
                first, *rest = rows
                per_file[first[0]]["accepted"] += 1
                for name, _ in rest:
                    per_file[name]["duplicate"] += 1
                silver[pid] = first[1].key()
        result.append(per_file)
    return result


# --- driving the pipeline ----------------------------------------------------------------------


def parquet_rows(lake: Lake, layer: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for rel in lake.list_files(layer):
        if rel.endswith(".parquet") and "/." not in rel:
            rows.extend(pq.read_table(lake.full(rel)).to_pylist())
    return rows


@pytest.fixture(scope="module", autouse=True)
def clean_environment():
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PURCHASES_")]:
            mp.delenv(key)
        yield


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(scenarios())
def test_any_input_runs_conserves_rows_and_adds_up_to_the_cent(runs) -> None:
    with tempfile.TemporaryDirectory(prefix="purchases-prop-") as tmp:
        root = Path(tmp)
        (root / "fx.csv").write_text(FX_TABLE)
        cfg = load_settings(home=root / "home", fx_rates=root / "fx.csv")
        lake = Lake(cfg.lake_uri)
        expected = expected_outcomes(runs)
        if DUMP:
            shutil.rmtree(DUMP, ignore_errors=True)
        known: dict[int, Canonical] = {}
        for n, files in enumerate(runs):
            paths = {}
            for f in files:
                src = root / f"in{n}" / f.name
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_bytes(f.data)
                if DUMP:  # keep the inputs of the latest example, to replay a failure by hand
                    (DUMP / f"run{n}").mkdir(parents=True, exist_ok=True)
                    (DUMP / f"run{n}" / f.name).write_bytes(f.data)
                (landed,) = bronze.land(lake, [src], INGESTION_DAY)
                paths[landed.path] = f
            record = run_pipeline(cfg, sleep=lambda _: None)
            assert record.status == "succeeded", record.error
            for o in record.files:  # shown by --hypothesis-show-statistics
                event(f"file: {o['file_rejection'] or 'read'}")
                event(f"accepted rows: {'some' if o['accepted'] else 'none'}")
            check_run(lake, record, paths, expected[n], known)
        check_money_and_summary(cfg, lake, known)


def check_run(lake: Lake, record, paths: dict[str, CsvFile], expected: dict[str, Counter],
              known: dict[int, Canonical]) -> None:
    outcomes = {o["path"]: o for o in record.files}
    silver = parquet_rows(lake, "silver")
    quarantine = parquet_rows(lake, "quarantine")
    for path, f in paths.items():
        o = outcomes[path]
        rejected = o["rejected"] or {}
        # Conservation, in the run record ...
        assert o["rows_in"] == o["accepted"] + sum(rejected.values()) + o["duplicates"], o
        # ... and in the rows the lake holds for that file.
        mine = [r for r in silver if r["source_file"] == path]
        held = Counter(r["reason"] for r in quarantine if r["source_file"] == path)
        assert len(mine) == o["accepted"], (path, o)
        assert held == Counter(rejected), (path, o, held)
        if f.expected_rejection:
            assert o["file_rejection"] == f.expected_rejection, (path, o)
            assert o["rows_in"] == 0 and not mine and not held
            continue
        assert o["file_rejection"] is None, (path, o)
        want = expected.get(f.name)
        if want is None:
            continue
        junk = want.pop("junk", 0)
        assert o["rows_in"] == len(f.records), (path, o, f.text[:500])
        assert o["accepted"] == want.pop("accepted", 0), (path, o, want)
        assert o["duplicates"] == want.pop("duplicate", 0), (path, o, want)
        got = Counter(rejected)
        for reason, n in want.items():
            assert got[reason] >= n, (path, reason, o, want)
        assert sum(got.values()) == sum(want.values()) + junk, (path, o, want)
        for r in mine:
            c = next(rec.canonical for rec in f.records if rec.canonical
                     and rec.kind == "valid" and rec.canonical.purchase_id == r["purchase_id"])
            known[r["purchase_id"]] = c
        for rec in f.records:  # a single mistake gives its own reason code
            if rec.kind == "mutant":
                rows = [q for q in quarantine if q["source_file"] == path
                        and (q["purchase_id"] or "").strip().lstrip("+0")
                        == str(rec.canonical.purchase_id)]
                assert [q["reason"] for q in rows] == [rec.expected_reason], (rec, rows)


def check_money_and_summary(cfg, lake: Lake, known: dict[int, Canonical]) -> None:
    silver = parquet_rows(lake, "silver")
    ids = [r["purchase_id"] for r in silver]
    assert len(ids) == len(set(ids)), "a purchase is in silver twice"
    per_customer: dict[int, list[Decimal]] = defaultdict(list)
    for r in silver:
        rate = rate_on(r["currency"], r["purchase_date"])
        assert rate is not None and r["rate_to_aud"] == rate, r
        assert r["amount_aud"] == to_aud(r["amount"], rate), r
        c = known.get(r["purchase_id"])
        if c is not None:  # what was written, read back exactly
            assert (r["customer_id"], r["purchase_date"], r["amount"], r["currency"]) == (
                c.customer_id, c.purchase_date, c.amount, c.currency), (r, c)
            assert r["amount_aud"] == to_aud(c.amount, rate_on(c.currency, c.purchase_date))
        per_customer[r["customer_id"]].append(r["amount_aud"])
    with serving.connect(cfg) as db:
        served = {s["customer_id"]: s for s in db.summary()}
    assert set(served) == set(per_customer)
    for cid, amounts in per_customer.items():
        assert served[cid]["total_spent_aud"] == sum(amounts, Decimal(0)), cid
        assert served[cid]["purchase_count"] == len(amounts), cid
    assert sum((s["total_spent_aud"] for s in served.values()), Decimal(0)) == sum(
        (r["amount_aud"] for r in silver), Decimal(0))


def test_the_generator_makes_every_kind_of_file() -> None:
    """The strategies reach what they are meant to: valid rows, every mistake, every file
    rejection, gzip, CRLF and BOM (so a property cannot pass by never seeing them)."""
    kinds: Counter = Counter()

    @settings(max_examples=80, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(scenarios())
    def collect(runs) -> None:
        for files in runs:
            for f in files:
                kinds[f"rejection:{f.expected_rejection}"] += 1
                kinds["gz"] += f.name.endswith(".gz")
                kinds["crlf"] += "\r\n" in f.text
                kinds["bom"] += f.data.startswith("\ufeff".encode())
                kinds["ambiguous"] += f.ambiguous
                for r in f.records:
                    kinds[r.kind] += 1
                    kinds[f"reason:{r.expected_reason}"] += 1
                    kinds["wide"] += any(len(v) >= 1000 for v in r.fields)
                    kinds["nul"] += any("\x00" in v for v in r.fields)

    collect()
    for kind in ("valid", "mutant", "junk", "wrong_count", "odd_quote", "gz", "crlf", "bom",
                 "wide", "nul", "ambiguous", "rejection:None", "rejection:not_utf8",
                 "rejection:missing_columns", "rejection:empty", "rejection:unreadable"):
        assert kinds[kind] > 0, (kind, kinds)


# --- regressions found by the properties -------------------------------------------------------

HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency"
GOOD = "7,Ann,Lee,ann@x.io,{pid},2024-01-10,10.00,USD"


def run_one_file(tmp_path: Path, data: bytes, name: str = "f.csv"):
    cfg = load_settings(home=tmp_path / "home")
    src = tmp_path / name
    src.write_bytes(data)
    lake = Lake(cfg.lake_uri)
    bronze.land(lake, [src], INGESTION_DAY)
    return cfg, lake, run_pipeline(cfg, sleep=lambda _: None)


@pytest.mark.parametrize(
    "head_eol, bad, eol",
    [("\n", "1,2\r,3,4,5,6,7,8", "\n"),  # a bare CR inside an unquoted field
     ("\r\n", "1,2\r,3,4,5,6,7,8", "\r\n"),
     ("\r\n", "1,2,3,4,5,6,7,8", "\n")],  # an LF-only record in a CRLF file
    ids=["cr-in-lf-file", "cr-in-crlf-file", "lf-record-in-crlf-file"],
)
def test_stray_line_ending_does_not_stop_the_pipeline(
    tmp_path: Path, head_eol: str, bad: str, eol: str
) -> None:
    """Found by the property test. Minimal inputs: `<header>\\n1,2\\r,3,4,5,6,7,8\\n` and
    `<header>\\r\\n1,2,3,4,5,6,7,8\\n`: DuckDB raised "The CSV Parser state machine reached an
    invalid state", the run failed in bronze_to_silver and, the file staying pending, so did
    every later run: one odd line ending stopped the pipeline for every file after it."""
    body = (HEADER + head_eol + GOOD.format(pid=1) + head_eol + bad + eol
            + GOOD.format(pid=2) + head_eol)
    _, lake, record = run_one_file(tmp_path, body.encode())
    assert record.status == "succeeded"
    (f,) = record.files
    assert f["file_rejection"] is None
    assert f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]
    assert f["accepted"] == 2 and sum(f["rejected"].values()) >= 1
    assert sorted(r["purchase_id"] for r in parquet_rows(lake, "silver")) == [1, 2]
