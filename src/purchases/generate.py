"""Deterministic sample purchase CSV files: realistic good rows plus every kind of bad row."""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path

from purchases.contract import INPUT_COLUMNS as HEADER

CID, FIRST, LAST, EMAIL, PID, PDATE, AMOUNT, CURRENCY = range(8)

SAME_DAY_BAD_KINDS: tuple[str, ...] = (
    "malformed_row",
    "missing_customer_id",
    "invalid_customer_id",
    "missing_purchase_id",
    "invalid_purchase_id",
    "missing_purchase_date",
    "invalid_purchase_date",
    "future_purchase_date",
    "missing_amount",
    "invalid_amount",
    "negative_amount",
    "amount_too_large",
    "missing_currency",
    "unknown_currency",
    "invalid_email",
    "exact_duplicate",
    "conflicting_duplicate",
)
CROSS_DAY_BAD_KINDS: tuple[str, ...] = (
    "cross_day_exact_duplicate",
    "cross_day_conflicting_duplicate",
)
BAD_KINDS: tuple[str, ...] = SAME_DAY_BAD_KINDS + CROSS_DAY_BAD_KINDS
"""Every kind of bad row, in round-robin order (cross-day kinds only from the second day)."""

CURRENCIES: tuple[str, ...] = ("AUD", "USD", "EUR", "GBP", "NZD", "JPY", "CAD", "SGD")
WHOLE_UNIT_CURRENCIES = frozenset({"JPY"})

_CURRENCY_WEIGHTS = (60, 12, 8, 6, 6, 3, 3, 2)  # percent, aligned with CURRENCIES
_CURRENCY_TABLE: tuple[str, ...] = tuple(
    c for c, weight in zip(CURRENCIES, _CURRENCY_WEIGHTS, strict=True) for _ in range(weight)
)

_FIRST_NAMES: tuple[str, ...] = (
    "Olivia", "Jack", "Charlotte", "Noah", "Amelia", "William", "Isla", "Oliver", "Mia",
    "Thomas", "Ava", "James", "Grace", "Lucas", "Chloe", "Henry", "Zoe", "Leo", "Ruby",
    "Ethan", "Sophie", "Liam", "Emily", "Samuel", "Ella", "Daniel", "Harper", "Mason",
    "Matilda", "Lachlan", "Sienna", "Hamish", "Evie", "Cooper", "Willow", "Angus", "José",
    "María", "Zoë", "Chloé", "Søren", "Björn", "Aoife", "Siobhán", "Priya", "Arjun", "Mei",
    "Wei", "Hiroshi", "Yuki", "Aroha", "Tane", "Fatima", "Omar", "Mary Ann", "Jean Luc",
    "Anne-Marie", "D'Arcy", "Nguyen", "Kwame",
)  # fmt: skip
_LAST_NAMES: tuple[str, ...] = (
    "Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Johnson", "White", "Martin",
    "Anderson", "Thompson", "Nguyen", "Thomas", "Walker", "Harris", "Lee", "Ryan",
    "Robinson", "Kelly", "King", "McDonald", "MacKenzie", "O'Brien", "O'Connor",
    "van der Berg", "van Dijk", "de la Cruz", "Da Silva", "García", "Müller", "Schröder",
    "Nørgaard", "Ng", "Chen", "Wang", "Li", "Zhang", "Tanaka", "Sato", "Kim", "Park",
    "Singh", "Patel", "Kaur", "Sharma", "Ahmed", "Ali", "Khan", "Ngata", "Te Whata",
    "Papadopoulos", "Rossi", "Russo", "Dubois", "Lefèvre", "Kowalski", "Novak",
    "Smith-Jones", "St. John", "Fitzgerald",
)  # fmt: skip
_DOMAINS: tuple[str, ...] = (
    "gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com", "bigpond.com",
    "optusnet.com.au", "proton.me", "example.com", "example.com.au", "xtra.co.nz",
    "live.co.uk",
)  # fmt: skip

_INVALID_CUSTOMER_IDS = ("abc", "4.0", "0", "-3")
_INVALID_PURCHASE_IDS = ("x12", "1e3")
_INVALID_DATES = ("2024-02-30", "2024-1-5", "15/01/2024")
_INVALID_AMOUNTS = ("$5.00", "1,000.00", "1e3", "1.23456", ".5")
_INVALID_EMAILS = ("not-an-email", "jane.doe@example", "@example.com", "a b@example.com")

_LOOKBACK_DAYS = 30
_FUTURE_DAYS = 5  # how far ahead a future_purchase_date row is dated

_NOISE_RATIO = 0.03
_CHANGE_PERCENT = 3  # of customers change email from some day on, as many their last name
_POOL_SIZE = 256  # recent good rows kept as duplicate sources: memory stays bounded
_HISTORY_SIZE = 1024
_MASK64 = (1 << 64) - 1


def days_problem(start: date, days: int) -> str | None:
    """Why `days` ingestion days from `start` cannot be generated (None when they can): the
    purchase dates of a day reach _LOOKBACK_DAYS before it and _FUTURE_DAYS after it."""
    first = date.min + timedelta(days=_LOOKBACK_DAYS)
    last = date.max - timedelta(days=_FUTURE_DAYS)
    if start < first:
        return (f"the first day must be {first} or later (purchases are dated up to "
                f"{_LOOKBACK_DAYS} days before it)")
    if (last - start).days < days - 1:
        return f"{days} day(s) from {start} run past {last}"
    return None


@dataclass(frozen=True)
class GeneratedFile:
    """One CSV file written by the generator."""

    path: Path  # the CSV file written
    ingestion_date: date  # the day it is meant to be landed
    rows: int  # number of CSV records written (data rows, header excluded)


def generate(
    out_dir: Path,
    *,
    rows: int = 15_000,
    days: int = 7,
    seed: int = 42,
    bad_ratio: float = 0.02,
    start: date = date(2024, 1, 15),
    files_per_day: int = 1,
    customers: int | None = None,
) -> list[GeneratedFile]:
    """Write `days` days of purchase CSV files, `rows` records per day in total, into out_dir.

    Day ``d`` lands on ``start + d`` as ``purchases_<YYYY-MM-DD>_<k>.csv`` (k = 1..files_per_day,
    the day's rows split evenly). A share ``bad_ratio`` of each day's rows are bad, cycling
    through :data:`BAD_KINDS`. The same arguments always produce byte-identical files.
    Returns the files ordered by ingestion date (then k).
    """
    _check_args(rows, bad_ratio, customers)
    if days < 1:
        raise ValueError("days must be >= 1")
    if files_per_day < 1:
        raise ValueError("files_per_day must be >= 1")
    pool = customers if customers is not None else max(50, rows * days // 8)
    # Ids of a day start at day_index * stride, so days never collide unless deliberately.
    stride = max(10_000_000, 10 ** len(str(rows)))
    gen = _Generator(seed=seed, customers=pool, days=days, stride=stride)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = iter(file_paths(out_dir, days=days, start=start, files_per_day=files_per_day))
    written: list[GeneratedFile] = []
    for day_index in range(days):
        ingestion = start + timedelta(days=day_index)
        stream = gen.day_rows(day_index, ingestion, rows, bad_ratio)
        for k in range(1, files_per_day + 1):
            count = rows // files_per_day + (1 if k <= rows % files_per_day else 0)
            path = next(paths)
            _write_csv(path, islice(stream, count))
            written.append(GeneratedFile(path=path, ingestion_date=ingestion, rows=count))
    return written


def file_paths(
    out_dir: Path, *, days: int, start: date, files_per_day: int = 1
) -> list[Path]:
    """The files `generate` writes (replacing any already there), in the order it writes them."""
    return [Path(out_dir) / f"purchases_{(start + timedelta(days=d)).isoformat()}_{k}.csv"
            for d in range(days) for k in range(1, files_per_day + 1)]


def write_single_file(
    path: Path,
    *,
    rows: int,
    seed: int = 42,
    bad_ratio: float = 0.0,
    ingestion_date: date = date(2024, 1, 15),
    customers: int | None = None,
) -> GeneratedFile:
    """Stream one large purchase CSV file (``.csv`` or ``.csv.gz``) of `rows` records to `path`.

    Rows are produced lazily and written as they come, so memory does not grow with `rows`.
    Purchase ids run from 1; the customer pool defaults to ``max(50, rows // 8)``.
    """
    _check_args(rows, bad_ratio, customers)
    pool = customers if customers is not None else max(50, rows // 8)
    gen = _Generator(seed=seed, customers=pool, days=1, stride=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(path, gen.day_rows(0, ingestion_date, rows, bad_ratio))
    return GeneratedFile(path=path, ingestion_date=ingestion_date, rows=rows)


def _check_args(rows: int, bad_ratio: float, customers: int | None) -> None:
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if not 0.0 <= bad_ratio <= 1.0:
        raise ValueError("bad_ratio must be within [0, 1]")
    if customers is not None and customers < 1:
        raise ValueError("customers must be >= 1")


def _write_csv(path: Path, rows: Iterable[list[str]]) -> None:
    # Written under a hidden temporary name, then renamed: a watcher of the folder never
    # sees a half-written .csv.
    part = path.with_name(f".{path.name}.part")
    try:
        if path.name.endswith(".gz"):
            # mtime=0 and no embedded name keep .gz output byte-identical across runs.
            with (
                part.open("wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
                io.TextIOWrapper(gz, encoding="utf-8", newline="") as text,
            ):
                _write_rows(text, rows)
        else:
            with part.open("w", encoding="utf-8", newline="") as text:
                _write_rows(text, rows)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _write_rows(text: io.TextIOBase, rows: Iterable[list[str]]) -> None:
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)  # consumes the generator lazily: one row in memory at a time


_NO_DECOMPOSITION = str.maketrans({"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae"})


def _email_local(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name.translate(_NO_DECOMPOSITION))
    ascii_name = plain.encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


_FIRST_LOCAL = tuple(_email_local(n) for n in _FIRST_NAMES)
_LAST_LOCAL = tuple(_email_local(n) for n in _LAST_NAMES)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a stable, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _email(first_i: int, last_i: int, style: int, domain_i: int, number: int) -> str:
    f, last = _FIRST_LOCAL[first_i], _LAST_LOCAL[last_i]
    if style == 0:
        local = f"{f}.{last}{number}"
    elif style == 1:
        local = f"{f[0]}{last}{number}"
    elif style == 2:
        local = f"{f}_{last}.{number}"
    else:
        local = f"{last}.{f}{number}"
    return f"{local}@{_DOMAINS[domain_i % len(_DOMAINS)]}"


def _restyle(rng: random.Random, row: list[str]) -> list[str]:
    """A copy of `row` written differently but identical after standardisation."""
    dup = list(row)
    style = rng.randrange(4)
    if style == 0:
        dup[EMAIL] = dup[EMAIL].upper()
    elif style == 1:
        dup[CURRENCY] = f" {dup[CURRENCY].strip().lower()}"
    elif style == 2:
        amount = dup[AMOUNT].strip()
        if "." not in amount:
            dup[AMOUNT] = f"{amount}.0"
        elif amount.endswith("0"):
            dup[AMOUNT] = amount[:-1]
        else:
            dup[AMOUNT] = f" {amount} "
    else:
        dup[FIRST] = f"  {dup[FIRST]} "
    return dup


def _conflicting(row: list[str]) -> list[str]:
    """A copy of `row` with the same purchase_id and a different amount."""
    dup = list(row)
    amount = Decimal(row[AMOUNT].strip())
    step = Decimal(100) if "." not in row[AMOUNT] else Decimal("1.25")
    dup[AMOUNT] = str(amount + step)
    return dup


def _take(rng: random.Random, pool: list[list[str]]) -> list[str]:
    """Remove and return a random row, so one source row feeds at most one deliberate copy."""
    i = rng.randrange(len(pool))
    row = pool[i]
    pool[i] = pool[-1]
    pool.pop()
    return row


class _Generator:
    """All state of one generation: the rng, the customer pool and the duplicate sources."""

    def __init__(self, *, seed: int, customers: int, days: int, stride: int) -> None:
        self.rng = random.Random(seed)
        self.customers = customers
        self.regulars = max(1, customers // 20)
        self.days = days
        self.stride = stride
        self.salt = _mix64(seed & _MASK64)
        self.day_pool: list[list[str]] = []
        self.history: list[list[str]] = []

    def customer(self, idx: int, day_index: int) -> tuple[str, str, str, str, str]:
        """(customer_id, first_name, last_name, email, home currency) of customer `idx`.

        Attributes are derived from a hash of the index, so the pool costs no memory and each
        customer is stable; a few change email or last name from a later day on.
        """
        h = _mix64(idx ^ self.salt)
        first_i = h % len(_FIRST_NAMES)
        last_i = (h >> 8) % len(_LAST_NAMES)
        style = (h >> 16) & 3
        domain_i = (h >> 20) % len(_DOMAINS)
        home = _CURRENCY_TABLE[(h >> 28) % len(_CURRENCY_TABLE)]
        number = idx + 1
        email_i = last_i
        if self.days > 1:
            change = (h >> 36) % 100
            change_day = 1 + (h >> 44) % (self.days - 1)
            if day_index >= change_day:
                if change < _CHANGE_PERCENT:
                    domain_i += 1 + (h >> 52) % (len(_DOMAINS) - 1)
                    style = (style + 1) & 3
                elif change < 2 * _CHANGE_PERCENT:
                    # A new surname (e.g. marriage); the email address is kept.
                    last_i = (last_i + 1 + (h >> 52) % (len(_LAST_NAMES) - 1)) % len(_LAST_NAMES)
        email = _email(first_i, email_i, style, domain_i, number)
        return str(number), _FIRST_NAMES[first_i], _LAST_NAMES[last_i], email, home

    def day_rows(
        self, day_index: int, ingestion: date, rows: int, bad_ratio: float
    ) -> Iterator[list[str]]:
        """Yield the day's `rows` records lazily, bad ones evenly spread among the good."""
        rng = self.rng
        rnd, randrange = rng.random, rng.randrange
        if self.day_pool:
            self.history.extend(self.day_pool)
            del self.history[:-_HISTORY_SIZE]
        self.day_pool = []
        day_pool = self.day_pool
        kinds = BAD_KINDS if day_index > 0 else SAME_DAY_BAD_KINDS
        n_bad = min(rows, round(rows * bad_ratio))
        # Evenly spaced positions, each in the middle of its slice of the day.
        bad_positions = iter([(2 * j + 1) * rows // (2 * n_bad) for j in range(n_bad)])
        next_bad = next(bad_positions, -1)
        bad_seen = 0
        dates = [(ingestion - timedelta(days=d)).isoformat() for d in range(_LOOKBACK_DAYS)]
        base = day_index * self.stride
        customers, regulars, customer = self.customers, self.regulars, self.customer
        table, n_table = _CURRENCY_TABLE, len(_CURRENCY_TABLE)
        for p in range(rows):
            idx = randrange(regulars) if rnd() < 0.2 else randrange(customers)
            cid, first, last, email, currency = customer(idx, day_index)
            if rnd() >= 0.9:
                currency = table[randrange(n_table)]
            units = randrange(500, 50_001) if rnd() < 0.92 else randrange(50_001, 500_001)
            # Integer cents (or whole yen) formatted as text: no float ever touches an amount.
            if currency in WHOLE_UNIT_CURRENCIES:
                amount = str(units)
            else:
                amount = f"{units // 100}.{units % 100:02d}"
            pdate = dates[randrange(_LOOKBACK_DAYS)]
            row = [cid, first, last, email, str(base + p + 1), pdate, amount, currency]
            if p == next_bad:
                kind = kinds[bad_seen % len(kinds)]
                bad_seen += 1
                next_bad = next(bad_positions, -1)
                yield self._bad_row(kind, row, ingestion)
                continue
            if rnd() < _NOISE_RATIO:
                self._add_noise(row)
            if len(day_pool) < _POOL_SIZE:
                day_pool.append(row)
            else:
                day_pool[p % _POOL_SIZE] = row
            yield row

    def _bad_row(self, kind: str, row: list[str], ingestion: date) -> list[str]:
        """Turn a fresh valid row into one of `kind`; only the field at fault is changed."""
        rng = self.rng
        if kind in ("exact_duplicate", "conflicting_duplicate") and not self.day_pool:
            kind = "invalid_amount"  # nothing to copy yet (tiny files)
        if kind.startswith("cross_day") and not self.history:
            kind = "unknown_currency"
        if kind == "malformed_row":
            return row[:5]
        if kind == "missing_customer_id":
            row[CID] = ""
        elif kind == "invalid_customer_id":
            row[CID] = rng.choice(_INVALID_CUSTOMER_IDS)
        elif kind == "missing_purchase_id":
            row[PID] = ""
        elif kind == "invalid_purchase_id":
            row[PID] = rng.choice(_INVALID_PURCHASE_IDS)
        elif kind == "missing_purchase_date":
            row[PDATE] = ""
        elif kind == "invalid_purchase_date":
            row[PDATE] = rng.choice(_INVALID_DATES)
        elif kind == "future_purchase_date":
            row[PDATE] = (ingestion + timedelta(days=_FUTURE_DAYS)).isoformat()
        elif kind == "missing_amount":
            row[AMOUNT] = ""
        elif kind == "invalid_amount":
            row[AMOUNT] = rng.choice(_INVALID_AMOUNTS)
        elif kind == "negative_amount":
            row[AMOUNT] = "-12.50"
        elif kind == "amount_too_large":
            row[AMOUNT] = "2000000.00"
        elif kind == "missing_currency":
            row[CURRENCY] = ""
        elif kind == "unknown_currency":
            row[CURRENCY] = "XYZ"
        elif kind == "invalid_email":
            row[EMAIL] = rng.choice(_INVALID_EMAILS)
        elif kind == "exact_duplicate":
            return _restyle(rng, _take(rng, self.day_pool))
        elif kind == "conflicting_duplicate":
            return _conflicting(_take(rng, self.day_pool))
        elif kind == "cross_day_exact_duplicate":
            return _restyle(rng, _take(rng, self.history))
        elif kind == "cross_day_conflicting_duplicate":
            return _conflicting(_take(rng, self.history))
        else:  # pragma: no cover - guarded by BAD_KINDS
            raise ValueError(f"unknown bad row kind {kind!r}")
        return row

    def _add_noise(self, row: list[str]) -> None:
        """Formatting noise that standardisation must undo (trim, collapse, case)."""
        style = self.rng.randrange(5)
        if style == 0:
            row[FIRST] = f" {row[FIRST]}  "
        elif style == 1:
            name = row[LAST]
            row[LAST] = name.replace(" ", "  ", 1) if " " in name else f"  {name}"
        elif style == 2:
            row[CURRENCY] = row[CURRENCY].lower()
        elif style == 3:
            row[EMAIL] = row[EMAIL].title()
        else:
            row[AMOUNT] = f" {row[AMOUNT]} "
