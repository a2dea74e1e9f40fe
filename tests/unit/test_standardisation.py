"""Control characters in standardisation (DESIGN §3): names and email lose them, transaction
fields keep them (and so fail their rule), and the fast path still sees every dirty row."""

from __future__ import annotations

import duckdb
import pytest

from conftest import HEADER
from purchases import gold, silver
from purchases.contract import GOLD_COLUMNS, INPUT_COLUMNS, Reason

CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0x85),
                             *range(0x86, 0xA0))]
WHITESPACE_CONTROLS = ["\t", "\n", "\x0b", "\x0c", "\r", "\x85"]


def standardise(**fields: str | None) -> dict:
    """One raw row through silver.standardised_sql on DuckDB."""
    row = {c: fields.get(c, "1") for c in INPUT_COLUMNS}
    con = duckdb.connect()
    cols = ", ".join(f"?::VARCHAR AS {c}" for c in INPUT_COLUMNS)
    con.execute(f"CREATE TABLE raw_rows AS SELECT 1 AS row_id, 'f.csv' AS source_file, "
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
