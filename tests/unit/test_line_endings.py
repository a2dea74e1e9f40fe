"""Mixed line endings (DESIGN §2: LF or CRLF): a stray one never stops the pipeline.

DuckDB's strict parser takes a file's first line break as the file's and failed the whole
read ("The CSV Parser state machine reached an invalid state") on a bare CR or an LF-only
record in a CRLF file; the file stayed pending, so every later run failed too. Such a file
is now read from a copy whose line breaks are all LF: records end at LF, CRLF or a bare CR
outside quotes, and the pieces that do not make a record are malformed_row.
"""

from __future__ import annotations

import random
from datetime import date

import pytest

from conftest import HEADER, write_file
from purchases import bronze
from purchases.engines.duckdb_lake import lake_query
from purchases.storage import Lake

H = HEADER.rstrip("\n")


def good(pid: int) -> str:
    return f"7,Ann,Lee,ann@x.io,{pid},2024-01-10,10.00,USD"


@pytest.mark.parametrize(
    ("body", "accepted", "malformed"),
    [
        # A bare CR inside an unquoted field ends the record there: two broken pieces.
        (f"{H}\n{good(1)}\n1,2\r,3,4,5,6,7,8\n{good(2)}\n", [1, 2], [(3, "1,2"),
                                                                  (4, ",3,4,5,6,7,8")]),
        # An LF-only record in a CRLF file is an ordinary record.
        (f"{H}\r\n{good(1)}\r\n{good(3)}\n{good(2)}\r\n", [1, 2, 3], []),
        # Each line its own ending (concatenated files), a blank LF line in a CRLF file.
        (f"{H}\n{good(1)}\r\n\n{good(2)}\r{good(3)}\r\n", [1, 2, 3], []),
        # A bare-CR header in an otherwise LF file.
        (f"{H}\r{good(1)}\n{good(2)}\n", [1, 2], []),
    ],
    ids=["cr-in-field", "lf-record-in-crlf-file", "every-kind", "cr-header"],
)
def test_mixed_line_endings_are_records_not_a_failed_run(
    harness, body: str, accepted: list[int], malformed: list[tuple[int, str]]
) -> None:
    harness.land("mixed.csv", body)
    harness.land("later.csv", HEADER + good(9) + "\n")  # a file after it still goes through
    record = harness.run()
    assert record.status == "succeeded", record.error
    by_name = {f["path"].rsplit("/", 1)[-1]: f for f in record.files}
    f = by_name["mixed.csv"]
    assert f["file_rejection"] is None
    assert f["rows_in"] == f["accepted"] + sum(f["rejected"].values()) + f["duplicates"]
    assert (f["accepted"], f["rejected"]) == (len(accepted), {"malformed_row": len(malformed)}
                                              if malformed else {})
    assert by_name["later.csv"]["accepted"] == 1
    assert [r["purchase_id"] for r in harness.silver()] == sorted([*accepted, 9])
    # Line numbers and raw text as in the file (a bare CR counts as a line break).
    got = sorted((q["line_number"], q["raw_line"]) for q in harness.quarantine())
    assert got == malformed
    assert harness.run().files == []  # processed: nothing pending, nothing stuck


def test_quoted_line_breaks_in_a_mixed_gzip_file_stay_in_their_field(harness) -> None:
    body = (f'{H}\r\n7,"Ann\r\nMarie",Lee,ann@x.io,1,2024-01-10,10.00,USD\n'
            f'7,"Bo\rB",Lee,bo@x.io,2,2024-01-10,1.00,AUD\r\n')
    harness.land("mixed.csv.gz", body)
    record = harness.run()
    [f] = record.files
    assert (f["rows_in"], f["accepted"]) == (2, 2), f
    assert [r["first_name"] for r in harness.silver()] == ["Ann Marie", "Bo B"]


@pytest.mark.parametrize("body", [f"{H}\n{good(1)}\n", f"{H}\r\n{good(1)}\r\n",
                                  f'{H}\r\n7,"a\r\nb",Lee,x@y.io,1,2024-01-10,1,AUD\r\n',
                                  f"{H}\r{good(1)}\r"])
def test_a_file_with_one_kind_of_line_break_is_read_in_place(tmp_path, body: str) -> None:
    lake = Lake(str(tmp_path / "lake"))
    bronze.land(lake, [write_file(tmp_path / "x.csv", body)], date(2024, 1, 15))
    [obj] = lake.list_bronze()
    f = bronze.inspect(lake, obj, scratch="_runs/t/bronze")
    assert (f.rejection, f.read_path) == (None, obj.path)
    assert not lake.exists("_runs/t/bronze")


def test_line_ending_check_matches_a_whole_file_count() -> None:
    """Fed in pieces of any size (a CRLF split between two pieces included), the check says
    `mixed` exactly when more than one of LF, CRLF and bare CR occurs."""
    rng = random.Random(7)
    for _ in range(2000):
        data = "".join(rng.choice(["a", ",", '"', "\n", "\r\n", "\r", "é"])
                       for _ in range(rng.randint(0, 30))).encode()
        crlf = data.count(b"\r\n")
        kinds = ((data.count(b"\r") > crlf) + (data.count(b"\n") > crlf) + (crlf > 0))
        step = rng.choice([1, 2, 3, 7, len(data) or 1])
        check = bronze._LineEndings()
        for i in range(0, len(data), step):
            check.feed(data[i : i + step])
        assert check.mixed == (kinds > 1), data


@pytest.mark.parametrize("seed", range(3))
def test_the_normalised_copy_has_only_lf_and_the_same_records(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        fields = [rng.choice(["a", '"x\r\ny"', '"p\rq"', '"m\nn"', "", "é"])
                  for _ in range(rng.randint(1, 12))]
        records = [",".join(fields[i : i + 3]) for i in range(0, len(fields), 3)]
        records = [r for r in records if r]  # a blank line after a CR would make a CRLF
        breaks = [rng.choice(["\n", "\r\n", "\r"]) for _ in records]
        data = "".join(r + b for r, b in zip(records, breaks, strict=True)).encode()
        step = rng.choice([1, 2, 5, len(data) or 1])
        cutter = bronze._RecordCutter(10**6, keep=0, normalise=True)
        out = b"".join(cutter.feed(data[i : i + step]) for i in range(0, len(data), step))
        out += cutter.finish()
        want = "".join(r.replace("\r\n", "\n").replace("\r", "\n") + "\n" for r in records)
        assert out == want.encode(), data


def test_the_bronze_view_leaves_out_a_pending_mixed_file_and_writes_nothing(
    harness, caplog
) -> None:
    harness.land("mixed.csv", f"{H}\n{good(1)}\n1,2\r,3,4,5,6,7,8\n")
    harness.land("fine.csv", HEADER + good(2) + "\n")
    rows = lake_query(harness.lake, "SELECT purchase_id FROM bronze")
    assert [r["purchase_id"] for r in rows] == ["2"]
    assert "leaves out bronze/year=2024/month=01/day=15/mixed.csv" in caplog.text
    assert not harness.lake.exists("_runs/.inspect")  # a read-only query writes no copy
