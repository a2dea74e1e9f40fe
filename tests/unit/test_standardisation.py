"""Control characters in standardisation (DESIGN §3): names and email lose them, transaction
fields keep them (and so fail their rule), and the fast path still sees every dirty row."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HEADER
from purchases import gold, silver
from purchases.contract import DEFAULT_MAX_AMOUNT, GOLD_COLUMNS, INPUT_COLUMNS, Reason

CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0x85),
                             *range(0x86, 0xA0))]
WHITESPACE_CONTROLS = ["\t", "\n", "\x0b", "\x0c", "\r", "\x85"]


def standardise(**fields: str | None) -> dict:
    """One raw row through silver.standardised_sql on DuckDB."""
    row = {c: fields.get(c, "1") for c in INPUT_COLUMNS}
    con = duckdb.connect()
    cols = ", ".join(f"?::VARCHAR AS {c}" for c in INPUT_COLUMNS)
    con.execute(f"CREATE TABLE records AS SELECT 1 AS row_id, 0 AS file_no, "
                f"DATE '2024-01-15' AS ingestion_date, {cols}", list(row.values()))
    cur = con.execute(silver.standardised_sql())
    return dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))


@pytest.mark.parametrize("ch", CONTROLS, ids=lambda ch: f"U+{ord(ch):04X}")
def test_every_control_character_leaves_names_and_email(ch: str) -> None:
    out = standardise(first_name=f"{ch}Jo{ch}hn{ch}", last_name=f"Doe {ch} Jr",
                      email=f"JO{ch}HN@example.com{ch}")
    assert (out["s_first_name"], out["s_last_name"], out["s_email"]) == (
        "John", "Doe Jr", "john@example.com")


@pytest.mark.parametrize("ch", WHITESPACE_CONTROLS, ids=lambda ch: f"U+{ord(ch):04X}")
def test_whitespace_controls_are_whitespace(ch: str) -> None:
    out = standardise(first_name=f"{ch}Jo{ch}{ch}hn{ch}")
    assert out["s_first_name"] == "Jo hn"


def test_a_name_of_control_characters_only_is_null() -> None:
    assert standardise(first_name="\x00\x01\x7f")["s_first_name"] is None


@pytest.mark.parametrize("ch", [*CONTROLS, "|", " ", "  "], ids=repr)
def test_the_fast_path_flags_every_row_that_needs_cleaning(ch: str) -> None:
    """No control character (nor the field separator trick) lets a dirty row skip cleaning."""
    con = duckdb.connect()
    for row in ([f"a{ch}b", "x"], [f"{ch}", "x"], ["x", f"b{ch}"]):
        joined = silver._FIELD_SEPARATOR.join(row)
        flagged = con.execute("SELECT regexp_matches(?, ?)",
                              [joined, silver._NEEDS_CLEANING]).fetchone()[0]
        needed = any(v != " ".join(v.split()) or any(c in v for c in CONTROLS) for v in row)
        assert flagged or not needed, row


def test_a_clean_row_does_no_regex_work() -> None:
    con = duckdb.connect()
    clean = silver._FIELD_SEPARATOR.join(["1", "Mary Ann", "van der Berg", "m@x.io", "7",
                                          "2024-01-01", "1.00", "AUD"])
    assert con.execute("SELECT regexp_matches(?, ?)",
                       [clean, silver._NEEDS_CLEANING]).fetchone()[0] is False


def test_transaction_fields_keep_control_characters_and_are_rejected(harness) -> None:
    rows = [
        "1,A,A,a@x.io,1,2024-01-10,12\x003,AUD",
        "1\x002,B,B,b@x.io,2,2024-01-10,1.00,AUD",
        "3,C,C,c@x.io,3\x01,2024-01-10,1.00,AUD",
        "4,D,D,d@x.io,4,2024-01-10,1.00,AU\x7fD",
        "5,E\x00,E,e@x.io,5,2024-01-10,1.00,AUD",
    ]
    harness.land("t.csv", HEADER + "\n".join(rows) + "\n")
    harness.run()
    reasons = {r["purchase_id"] or r["customer_id"]: r["reason"] for r in harness.quarantine()}
    assert reasons == {
        "1": Reason.INVALID_AMOUNT, "2": Reason.INVALID_CUSTOMER_ID,
        "3\x01": Reason.INVALID_PURCHASE_ID, "4": Reason.UNKNOWN_CURRENCY,
    }
    assert [(r["purchase_id"], r["full_name"]) for r in harness.silver()] == [(5, "E E")]


def test_gold_strips_control_characters_a_legacy_silver_may_hold() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE changed AS SELECT 1::BIGINT AS customer_id, "
                "'Ann' || chr(0) || 'e ' || repeat('é', 300) AS full_name, "
                "chr(0) || chr(127) AS email, 1.00::DECIMAL(18,2) AS total_spent_aud, "
                "DATE '2024-01-01' AS first_purchase_date, DATE '2024-01-01' AS "
                "last_purchase_date, 1::BIGINT AS purchase_count, 1::BIGINT AS batch_id")
    cur = con.execute(gold.gold_sql("changed"))
    row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    assert list(row) == list(GOLD_COLUMNS)
    assert row["full_name"] == ("Anne " + "é" * 300)[:255]
    assert row["email"] is None


# --- the fast path (one expression per clean, valid record) ------------------------------------

# Values on the rules' edges per column, and the characters that make a value need cleaning
# (every kind of whitespace, controls, the separator the fast path joins fields with).
_VALUES = {
    "customer_id": ["1", "42", "007", "+42", "-3", "0", "9223372036854775807",
                    "9223372036854775808", "4.0", ""],
    "first_name": ["Mary Ann", "Zoë", "O'Brien", "İlker", "", "a|b"],
    "last_name": ["van der Berg", "Lee", "", "Ng"],
    "email": ["a@b.co", "A@B.CO", "j.doe@x.io", "a@b", "a b@c.d", "@x.io", ""],
    "purchase_id": ["100", "+7", "0100", "-1", "x12", ""],
    "purchase_date": ["2024-01-10", "2024-02-30", "2024-01-16", "2024-01-17", "2024-1-5", ""],
    "amount": ["12.5", "100", "-0", "-12.50", "2000000.00", "1.2345", "0.00001", ".5", ""],
    "currency": ["AUD", "usd", "XYZ", "A B", ""],
}
_EDGE_CHARS = " \t\n\r\x0b\x0c\x85\xa0\u2003\u3000\x00\x01\x7f\x9f|@"


def _perturbed(value: str, how: str, ch: str) -> str:
    middle = len(value) // 2
    return {"as is": value, "before": ch + value, "after": value + ch,
            "inside": value[:middle] + ch + value[middle:],
            "spaces": value.replace(" ", "  ") if " " in value else " " + value}[how]


_HOWS = ("before", "after", "inside", "spaces")


@st.composite
def _row(draw: st.DrawFn) -> tuple[str, ...]:
    """A record of edge values, one or two of them perturbed."""
    row = [draw(st.sampled_from(_VALUES[c])) for c in INPUT_COLUMNS]
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(row) - 1))
        row[i] = _perturbed(row[i], draw(st.sampled_from(_HOWS)),
                            draw(st.sampled_from(_EDGE_CHARS)))
    return tuple(row)


_ROW = _row()
_BASE = ("1", "Mary Ann", "van der Berg", "a@b.co", "100", "2024-01-10", "12.5", "AUD")


def _checked(rows: list[tuple[str, ...]], *, fast_path: bool) -> list[tuple]:
    from purchases.fx import load_fx_rates

    con = duckdb.connect()
    cols = ", ".join(f"{c} VARCHAR" for c in INPUT_COLUMNS)
    con.execute(f"CREATE TABLE records (row_id BIGINT, file_no INTEGER, ingestion_date DATE, "
                f"{cols})")
    con.executemany(f"INSERT INTO records VALUES (?, 0, DATE '2024-01-15', "
                    f"{', '.join('?' for _ in INPUT_COLUMNS)})",
                    [(i, *(v or None for v in row)) for i, row in enumerate(rows)])
    con.execute("CREATE TABLE fx_rates (currency VARCHAR, rate_to_aud DECIMAL(18,8), "
                "valid_from DATE)")
    con.executemany("INSERT INTO fx_rates VALUES (?, ?, ?)",
                    [(r.currency, str(r.rate_to_aud), r.valid_from) for r in load_fx_rates()])
    con.execute(f"CREATE TABLE fx_ranges AS {silver.fx_ranges_sql()}")
    sql = silver.checked_sql("records", "fx_ranges", max_amount=DEFAULT_MAX_AMOUNT,
                             fast_path=fast_path)
    return sorted(con.execute(f"SELECT * FROM ({sql}) ORDER BY row_id").fetchall(), key=repr)


def test_the_fast_path_changes_no_outcome_of_any_single_edge() -> None:
    """Every edge value of every column, and every edge character before, after or inside
    a clean value (or spaces doubled), in an otherwise clean record: every stored value,
    reason and raw field is what the per-field rules give."""
    rows = {_BASE}
    for i, column in enumerate(INPUT_COLUMNS):
        for value in {_BASE[i], *_VALUES[column]}:
            for how in ("as is", *_HOWS):
                for ch in _EDGE_CHARS:
                    rows.add(_BASE[:i] + (_perturbed(value, how, ch),) + _BASE[i + 1:])
    assert _checked(sorted(rows), fast_path=True) == _checked(sorted(rows), fast_path=False)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_ROW, min_size=1, max_size=30))
def test_the_fast_path_changes_no_outcome(rows: list[tuple[str, ...]]) -> None:
    """The same for records with several edges at once."""
    assert _checked(rows, fast_path=True) == _checked(rows, fast_path=False)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_ROW)
def test_a_record_on_the_fast_path_needs_no_cleaning(row: tuple[str, ...]) -> None:
    con = duckdb.connect()
    joined = silver._FIELD_SEPARATOR.join(row)
    fast, dirty = con.execute("SELECT regexp_matches(?, ?), regexp_matches(?, ?)",
                              [joined, silver._CLEAN_AND_VALID,
                               joined, silver._NEEDS_CLEANING]).fetchone()
    assert not (fast and dirty), row


def test_clean_valid_records_take_the_fast_path() -> None:
    con = duckdb.connect()
    for row in (["1", "Mary Ann", "van der Berg", "m@x.io", "7", "2024-01-01", "1.00", "AUD"],
                ["1", "", "Zoë", "", "7", "2024-01-01", "-12.5", "usd"]):
        joined = silver._FIELD_SEPARATOR.join(row)
        assert con.execute("SELECT regexp_matches(?, ?)",
                           [joined, silver._CLEAN_AND_VALID]).fetchone()[0] is True, row
