"""DESIGN §2: whole-file rejections, CSV dialect edge cases, landing layout."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from conftest import HEADER
from purchases.storage import parse_bronze_path

GOOD = "1,John,Doe,john@example.com,100,2024-01-10,100.00,USD\n"


@pytest.mark.parametrize(
    ("content", "rejection", "detail"),
    [
        (b"", "empty", "no header"),
        (b"\xef\xbb\xbf\n\r\n\n", "empty", "no header"),
        (
            b"customer_id,first_name,email\n1,a,b\n",
            "missing_columns",
            "last_name, purchase_id, purchase_date, amount, currency",
        ),
        (HEADER.encode("utf-16"), "not_utf8", "not UTF-8"),
        (
            (HEADER + "1,Jos\xe9,D,j@x.io,5,2024-01-10,1.00,AUD\n").encode("latin-1"),
            "not_utf8",
            "not UTF-8",
        ),
        (bytes(range(256)) * 20, "not_utf8", "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not_utf8", "not UTF-8"),
    ],
    ids=[
        "zero-bytes",
        "bom-and-blank-lines",
        "missing-columns",
        "utf16",
        "latin1",
        "binary",
        "png",
    ],
)
def test_bad_file_is_rejected_whole_and_others_still_land(harness, content, rejection, detail):
    harness.land("bad.csv", content)
    harness.land("good.csv", HEADER + GOOD)
    record = harness.run()
    assert record.status == "succeeded"
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in record.files}
    bad = by_name["bad.csv"]
    assert bad["file_rejection"] == rejection
    assert detail in bad["detail"]
    assert bad["rows_in"] == 0 and bad["accepted"] == 0
    assert by_name["good.csv"]["accepted"] == 1
    assert [r["purchase_id"] for r in harness.silver()] == [100]
    # a rejected file is processed: it is not retried on every run
    assert harness.run().files == []


def test_corrupt_gzip_is_rejected_whole(harness) -> None:
    good = harness.write("x.csv.gz", HEADER + GOOD).read_bytes()
    harness.lake.write_bytes("bronze/year=2024/month=01/day=15/bad.csv.gz", good[:-12])
    record = harness.run()
    assert record.files[0]["file_rejection"] == "unreadable"


def test_header_only_file_is_valid_with_zero_rows(harness) -> None:
    harness.land("empty.csv", HEADER)
    record = harness.run()
    [f] = record.files
    assert f["file_rejection"] is None and f["rows_in"] == 0


def test_csv_dialect_edge_cases(harness) -> None:
    body = (
        "\ufeffAmount , CURRENCY,customer_id,first_name,last_name,email,purchase_id,"
        "purchase_date,Notes,amount\r\n"
        '12.50,AUD,1,"Smith, Jr","O""Brien",a@x.io,1,2024-01-10,"multi\r\nline note",999\r\n'
        "\r\n"
        '3.00,usd,2,"Line\nBreak",Doe,b@x.io,2,2024-01-10,,\r\n'
    )
    harness.land("edge.csv", body)
    record = harness.run()
    [f] = record.files
    assert (f["rows_in"], f["accepted"]) == (2, 2)  # the blank line is not a row
    silver = {r["purchase_id"]: r for r in harness.silver()}
    assert silver[1]["first_name"] == "Smith, Jr"
    assert silver[1]["last_name"] == 'O"Brien'
    assert silver[1]["amount"] == Decimal("12.5000")  # repeated header: the first wins
    assert silver[2]["first_name"] == "Line Break"  # a quoted newline is whitespace
    assert silver[2]["amount_aud"] == Decimal("4.50")


def test_gzip_file(harness) -> None:
    harness.land("day.csv.gz", HEADER + GOOD)
    record = harness.run()
    assert record.files[0]["accepted"] == 1
    assert harness.silver()[0]["amount_aud"] == Decimal("150.00")


def test_leading_blank_lines_before_header(harness) -> None:
    harness.land("lead.csv", "\n\n" + HEADER + GOOD)
    record = harness.run()
    assert record.files[0]["accepted"] == 1


def test_unterminated_quote_is_malformed_not_fatal(harness) -> None:
    harness.land("q.csv", HEADER + GOOD + '2,"Ann,Lee,a@x.io,101,2024-01-10,1.00,AUD\n')
    record = harness.run()
    [f] = record.files
    assert f["accepted"] == 1
    assert f["rejected"] == {"malformed_row": 1}
    assert f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("bronze/year=2024/month=01/day=15/a.csv", (date(2024, 1, 15), "a.csv")),
        ("bronze/2024/01/15/a.csv", (date(2024, 1, 15), "a.csv")),  # the original AWS layout
        ("datalake/bronze/2024/02/29/b.csv.gz", (date(2024, 2, 29), "b.csv.gz")),
        ("bronze/2023/02/29/b.csv", None),
        ("silver/year=2024/month=01/day=15/a.csv", None),
    ],
)
def test_bronze_layouts(path, expected) -> None:
    assert parse_bronze_path(path) == expected


def test_original_layout_files_are_processed(harness) -> None:
    target = harness.lake.full("bronze/2024/01/15")
    harness.lake.fs.makedirs(target, exist_ok=True)
    harness.lake.write_bytes("bronze/2024/01/15/orig.csv", (HEADER + GOOD).encode())
    record = harness.run()
    assert record.files[0]["ingestion_date"] == "2024-01-15"
    assert harness.silver()[0]["ingestion_date"] == date(2024, 1, 15)


def test_a_file_landed_for_a_year_before_1000_is_found_and_run(harness) -> None:
    """strftime's %Y wrote year 999 as "999": the file landed where no listing looked, and
    `run` said "no pending files" for ever."""
    from purchases.orchestrator import run_input

    harness.land("old.csv", HEADER + GOOD, day="0999-12-31")
    assert harness.lake.list_files("bronze") == ["bronze/year=0999/month=12/day=31/old.csv"]
    record = harness.run()
    assert [(f["path"], f["rows_in"]) for f in record.files] == [
        ("bronze/year=0999/month=12/day=31/old.csv", 1)]
    assert run_input(["bronze/year=0999/month=12/day=31/old.csv"])["year"] == "0999"


def test_landing_is_atomic_and_idempotent(harness) -> None:
    from purchases.bronze import land

    src = harness.write("x.csv", HEADER + GOOD)
    first = land(harness.lake, [src], date(2024, 1, 15))
    again = land(harness.lake, [src], date(2024, 1, 15))
    assert [f.skipped for f in first + again] == [False, True]
    names = harness.lake.list_files("bronze")
    assert names == ["bronze/year=2024/month=01/day=15/x.csv"]  # no temp file left behind


@pytest.mark.parametrize("home", ["home", "ho[m]e*?", "back\\slash"],
                         ids=["plain-home", "glob-home", "backslash-home"])
def test_file_names_with_glob_characters_are_read_as_written(tmp_path, monkeypatch, home) -> None:
    """DuckDB expanded globs in the paths it was given: `sales[1].csv` read `sales1.csv` a
    second time (its own row counted a duplicate, $4.00 lost) and `s*.csv` every match."""
    from conftest import Harness
    from purchases.config import load_settings
    from purchases.engines.duckdb_lake import lake_query

    for key in [k for k in __import__("os").environ if k.startswith("PURCHASES_DATABASE")]:
        monkeypatch.delenv(key)
    harness = Harness(load_settings(home=tmp_path / home), tmp_path)
    # A backslash with a glob character anywhere in the path: DuckDB's glob took it for a
    # separator and never found the file; every run failed on it for good.
    names = ["sales1.csv", "sales[1].csv", "s*.csv", "s?les1.csv", "b{c,d}.csv", "a*\\b.csv",
             "back\\slash.csv"]
    for pid, name in enumerate(names, start=100):
        harness.land(name, HEADER + f"{pid},A,B,a@x.io,{pid},2024-01-10,4.00,AUD\n")
    record = harness.run()
    assert sorted((f["path"].rsplit("/", 1)[1], f["rows_in"], f["accepted"], f["duplicates"])
                  for f in record.files) == sorted((n, 1, 1, 0) for n in names)
    assert {r["purchase_id"]: r["source_file"].rsplit("/", 1)[1] for r in harness.silver()} == {
        pid: name for pid, name in enumerate(names, start=100)}
    assert sum(r["total_spent_aud"] for r in harness.summary().values()) == Decimal("28.00")
    # The query command's views read the same files the same way; a backslash name it
    # cannot read (in the home with glob characters) is left out with its reason.
    files = {r["path"].rsplit("/", 1)[1]: r for r in lake_query(
        harness.lake, "SELECT path, in_bronze_view, read_error FROM bronze_files")}
    unread = {n for n, r in files.items() if not r["in_bronze_view"]}
    globbed = {n for n in names if set(harness.lake.url(n)) & set("*?[")}
    assert unread == ({n for n in globbed if "\\" in harness.lake.url(n)})
    assert all("backslash" in files[n]["read_error"] for n in unread)
    [bronze] = lake_query(harness.lake, "SELECT count(*) AS n, sum(CAST(amount AS DECIMAL(18,2)))"
                          " AS total FROM bronze")
    assert (bronze["n"], bronze["total"]) == (7 - len(unread), Decimal(4 * (7 - len(unread))))
    [gold] = lake_query(harness.lake, "SELECT count(*) AS n FROM gold")
    assert gold["n"] == 7


def test_a_data_file_name_that_cannot_be_landed_stops_a_folder_ingest(tmp_path) -> None:
    """A dangling x.csv symlink (or a FIFO named x.csv) in a folder was skipped quietly."""
    import os

    from purchases.bronze import source_files
    from purchases.errors import InputError

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text(HEADER)
    (folder / "dir.csv").mkdir()  # a folder so named is walked, not refused
    (folder / "sub" / "b.csv").symlink_to(tmp_path / "gone.csv")
    with pytest.raises(InputError) as caught:
        source_files([folder])
    assert str(caught.value) == (
        f"{folder / 'sub' / 'b.csv'}: a symbolic link to {tmp_path / 'gone.csv'}, which does "
        "not exist")
    (folder / "sub" / "b.csv").unlink()
    os.mkfifo(folder / "sub" / "f.csv")
    with pytest.raises(InputError, match="f.csv: not a regular file$"):
        source_files([folder])
    (folder / "sub" / "f.csv").unlink()
    (folder / "sub" / "ok.csv").symlink_to(folder / "a.csv")  # a link to a file is taken
    assert source_files([folder]) == [folder / "a.csv", folder / "sub" / "ok.csv"]


def test_a_source_that_cannot_be_read_is_named(harness, tmp_path) -> None:
    """/proc/self/mem behind a .csv link: "Input/output error", naming no file, after the
    files before it had landed."""
    from purchases.bronze import land
    from purchases.errors import InputError

    first = harness.write("a.csv", HEADER + GOOD)
    unreadable = harness.inbox / "mem.csv"
    unreadable.symlink_to("/proc/self/mem")
    with pytest.raises(InputError) as caught:
        land(harness.lake, [first, unreadable], date(2024, 1, 15))
    assert str(caught.value) == (
        f"{unreadable}: cannot read it: Input/output error (1 file(s) before it landed; the "
        "same command lands the rest once it can be read)")
    assert [p.rsplit("/", 1)[1] for p in harness.lake.list_files("bronze")] == ["a.csv"]


def test_a_fifo_put_in_bronze_by_hand_is_not_a_bronze_file(harness) -> None:
    """Opening it hung every run and every query of the bronze views."""
    import os

    from purchases.engines.duckdb_lake import lake_query

    harness.land("a.csv", HEADER + GOOD)
    day = harness.lake.full("bronze/year=2024/month=01/day=15")
    os.mkfifo(f"{day}/fifo.csv")
    record = harness.run()
    assert [f["path"].rsplit("/", 1)[1] for f in record.files] == ["a.csv"]
    assert [r["path"].rsplit("/", 1)[1] for r in lake_query(
        harness.lake, "SELECT path FROM bronze_files")] == ["a.csv"]
