"""Hostile names and emails, end to end (CSV file -> pipeline -> serving) on every backend.

Attribute fields never reject a purchase (DESIGN §3), so whatever a name holds must reach
the serving table of SQLite, PostgreSQL and MariaDB: control characters removed, whitespace
trimmed and collapsed, cut to 255 characters, every other character kept as written.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import HEADER, Harness
from purchases.config import Settings
from purchases.contract import TEXT_WIDTH

CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
WHITESPACE = "".join(
    {"\t", "\n", "\x0b", "\x0c", "\r", " ", "\x85"}
    | {chr(c) for c in range(0x3001) if unicodedata.category(chr(c)).startswith("Z")}
)
WS_RUN = re.compile(f"[{re.escape(WHITESPACE)}]+")

# (first_name, last_name, email) as written in the CSV file.
HOSTILE: list[tuple[str | None, str | None, str | None]] = [
    ("Ann\x00e", "Lee\x00", "ann\x00@example.com"),  # NUL: what PostgreSQL refuses
    ("\x01\x02Bob\x07", "\x1b[31mRed\x1b[0m", "bob@exa\x08mple.com"),  # C0, ANSI escapes
    ("Del\x7f", "C1\x80\x9f\x85Name", "del\x7f@example.com"),  # DEL, C1 (NEL is whitespace)
    ("Unit\x1fSep", "Pipe|Name", "pipe|name@example.com"),  # old field separator, new one
    ("\x00\x01", "Solo", None),  # a name of control characters only becomes NULL
    ("😀 Smile", "𝕏", "smile😀@example.com"),  # 4-byte UTF-8
    ("\u200fRTL", "\u202eevil\u202c", "rtl\u200f@example.com"),  # bidi marks are kept
    ("e\u0301", "Z\u0351\u0336a\u0337\u0358l\u0334g\u0315o\u0322", None),  # combining, Zalgo
    ("👨\u200d👩\u200d👧", "Family", "zwj@example.com"),  # zero-width joiner
    ("é" * 300, "Long", "é" * 300 + "@example.com"),  # over 255 characters
    ("😀" * 300, None, None),  # over 255 four-byte characters
    ('O\'Brien "Q"', "back\\slash\\", "o'brien@example.com"),  # quotes, backslashes
    ("%s %(x)s", "'; DROP TABLE x; --", "x'; drop table y; --@example.com"),  # SQL-ish
    ("  tab\there ", "new\n\r\nline\x0b\x0cvt", "  ZOË\x00@EXAMPLE.COM\t"),  # whitespace
    ("\u00a0nbsp\u3000ideo\u2028", "NULL", "null"),  # Unicode spaces; the word NULL
]


def standardised_name(value: str | None) -> str | None:
    """DESIGN §3 as the test reads it: control characters out, then trim and collapse."""
    if value is None:
        return None
    value = WS_RUN.sub(" ", CONTROL.sub("", value)).strip(WHITESPACE)
    return value or None


def expected_row(first: str | None, last: str | None, email: str | None) -> tuple:
    names = [n for n in (standardised_name(first), standardised_name(last)) if n]
    full = " ".join(names)[:TEXT_WIDTH] or None
    mail = CONTROL.sub("", email).strip(WHITESPACE).lower() if email else None
    # DESIGN's pattern; Python's \s is Unicode whitespace, as the shipped pattern spells out.
    if mail is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", mail):
        mail = None
    return full, (mail[:TEXT_WIDTH] if mail else None)


def csv_text(rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return HEADER + out.getvalue()


@pytest.fixture
def backend_settings(settings: Settings, db_url: str) -> Settings:
    """Settings served by each serving dialect in turn (conftest's db_url)."""
    return settings.model_copy(update={"database_url": db_url})


def test_hostile_strings_reach_every_serving_backend(
    backend_settings: Settings, tmp_path: Path
) -> None:
    harness = Harness(backend_settings, tmp_path)
    rows = [
        [i, first, last, email, 1000 + i, "2024-01-10", f"{i}.{i:02d}", "AUD"]
        for i, (first, last, email) in enumerate(HOSTILE, start=1)
    ]
    harness.land("hostile.csv", csv_text(rows))
    assert harness.run().status == "succeeded"
    assert len(harness.silver()) == len(HOSTILE)  # every purchase accepted
    assert harness.quarantine() == []
    expected = {
        i: (*expected_row(*names), Decimal(f"{i}.{i:02d}"))
        for i, names in enumerate(HOSTILE, start=1)
    }
    got = {cid: (r["full_name"], r["email"], r["total_spent_aud"])
           for cid, r in harness.summary().items()}
    assert got == expected
    assert got[1][:2] == ("Anne Lee", "ann@example.com")  # the oracle itself, spot-checked
    assert got[10][0] == "é" * 255 and got[11][0] == "😀" * 255
    assert got[14][:2] == ("tab here new line vt", "zoë@example.com")

    # The pipeline is not stuck: a later good file reaches the table too.
    later = [[1, "Ann", "Lee", "ann@example.com", 5000, "2024-01-11", "10.00", "AUD"],
             [99, "Good", "Row", "good@example.com", 5001, "2024-01-11", "1.50", "AUD"]]
    harness.land("later.csv", csv_text(later), day="2024-01-16")
    assert harness.run().status == "succeeded"
    after = harness.summary()
    assert (after[1]["full_name"], after[1]["total_spent_aud"]) == ("Ann Lee", Decimal("11.01"))
    assert (after[99]["full_name"], after[99]["total_spent_aud"]) == ("Good Row", Decimal("1.50"))
    assert len(after) == len(HOSTILE) + 1


def test_a_lake_written_before_the_fix_still_serves(
    backend_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silver and customer state holding NUL (as standardisation left them before control
    characters were removed): gold strips them, so the serving load never refuses."""
    from purchases import silver

    harness = Harness(backend_settings, tmp_path)
    with monkeypatch.context() as old_rules:
        old_rules.setattr(silver, "CONTROL_CHARACTERS", r"[^\x{00}-\x{10FFFF}]")  # matches none
        old_rules.setattr(silver, "_NEEDS_CLEANING", r"(?:^|\|) |  | (?:\||$)")
        harness.land("old.csv", csv_text([[1, "Ann\x00e", "Lee", "ann\x00@x.io", 1,
                                           "2024-01-10", "1.00", "AUD"]]))
        assert harness.run().status == "succeeded"
    assert harness.silver()[0]["full_name"] == "Ann\x00e Lee"  # the legacy lake, really
    served = harness.summary()[1]
    assert (served["full_name"], served["email"]) == ("Anne Lee", "ann@x.io")
    harness.land("new.csv", csv_text([[2, "Bo", "Good", None, 2, "2024-01-11", "2.00", "AUD"]]),
                 day="2024-01-16")
    assert harness.run().status == "succeeded"
    assert {c: r["full_name"] for c, r in harness.summary().items()} == {1: "Anne Lee",
                                                                         2: "Bo Good"}
