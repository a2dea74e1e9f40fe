"""`purchases report` as a person sees it: a real lake from the demo data plus hostile names,
the page opened in headless Chromium (Debian's /usr/bin/chromium through Playwright), and
every number on it checked against `purchases runs/rejects/top --format json`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import HEADER, require

PURCHASES = str(Path(sys.executable).with_name("purchases"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "bench" / "out"
HOSTILE = "<script>alert(1)</script>"
RTL = "\u202eevil\u202c Name"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A home with four demo days (bad rows included) and a day of hostile names on top."""
    root = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env.update(PURCHASES_HOME=str(root / "home"), COLUMNS="200")

    def cli(*args: str) -> str:
        proc = subprocess.run([PURCHASES, *args], capture_output=True, text=True, env=env,
                              cwd=root, timeout=600)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    cli("demo", "--days", "4", "--rows", "800", "--bad-ratio", "0.05")
    hostile = root / "in" / f"{HOSTILE.replace('/', '_')} \u202e.csv"
    hostile.parent.mkdir()
    hostile.write_text(
        HEADER
        + f'900001,"{HOSTILE}",Smith,x@example.com,990001,2024-01-18,900000.00,AUD\n'
        + f"900002,{RTL},Jones,rtl@example.com,990002,2024-01-18,800000.00,AUD\n"
        + "900003,Ann,Lee,ann@example.com,990003,2024-01-18,-5,AUD\n",
        encoding="utf-8",
    )
    cli("ingest", str(hostile.parent), "--date", "2024-01-19")
    cli("run")
    out = root / "out" / "report.html"
    printed = cli("report", "--out", str(out))
    assert str(out) in printed
    return {
        "root": root,
        "html": out,
        "runs": json.loads(cli("runs", "--format", "json")),
        "rejects": json.loads(cli("rejects", "--limit", "0", "--format", "json")),
        "top": json.loads(cli("top", "--format", "json")),
        "home": root / "home",
    }


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (run .ci/install-browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (dev extra)")
        raise
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_report(browser, html: Path, width: int, height: int):
    """The page with what it asked the network for, said on its console and raised."""
    page = browser.new_page(viewport={"width": width, "height": height})
    seen = {"requests": [], "console": [], "errors": [], "dialogs": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    return page, seen


def cells(page, selector: str) -> list[dict]:
    """Rows of a table as {field: (data-value, shown text)}."""
    return page.eval_on_selector_all(selector, """rows => rows.map(r => Object.fromEntries(
        [...r.querySelectorAll('td[data-field]')].map(
            td => [td.dataset.field, [td.dataset.value, td.textContent]])))""")


def test_the_report_shows_what_the_cli_shows(lake: dict, browser, tmp_path: Path) -> None:
    page, seen = open_report(browser, lake["html"], 1280, 900)

    # Self-contained and clean: the file itself is the only request, nothing on the console.
    assert seen["requests"] == [lake["html"].as_uri()]
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert page.evaluate("document.scripts.length") == 0

    # Every run: each field of `purchases runs --format json`, exactly (shown and data-value).
    shown = {r["run_id"][0]: r for r in cells(page, "#runs tr[data-run-id]")}
    assert sorted(shown) == sorted(r["run_id"] for r in lake["runs"])
    assert len(lake["runs"]) == 5
    for run in lake["runs"]:
        row = shown[run["run_id"]]
        assert set(row) == set(run)
        for field, value in run.items():
            data_value, text = row[field]
            assert data_value == ("" if value is None else str(value)), (field, row[field])
            if isinstance(value, int):
                assert text.replace(",", "") == str(value), (field, text)
        assert row["run_id"][1] == run["run_id"]  # the whole id, never cut
        assert row["status"][1] == run["status"] == "succeeded"

    # Reject counts per ingestion date and reason: the rows `purchases rejects` lists, counted.
    expected = Counter((r["ingestion_date"], r["reason"]) for r in lake["rejects"])
    on_page = {
        (c["date"], c["reason"]): int(c["value"])
        for c in page.eval_on_selector_all(
            "#rejects-by-reason td[data-reason]",
            "tds => tds.map(td => ({date: td.dataset.date, reason: td.dataset.reason, "
            "value: td.dataset.value, text: td.textContent}))")
    }
    assert {k: v for k, v in on_page.items() if v} == dict(expected)
    assert sum(expected.values()) > 40 and ("2024-01-19", "negative_amount") in expected
    rejected_tile = page.text_content("#tile-rejected .v")
    assert rejected_tile.replace(",", "") == str(len(lake["rejects"]))

    # The top 5: `purchases top --format json`, hostile names shown literally, not run.
    top = cells(page, "#top-customers tr[data-rank]")
    assert len(top) == len(lake["top"]) == 5
    for row, customer in zip(top, lake["top"], strict=True):
        for field, value in customer.items():
            assert row[field][0] == ("" if value is None else str(value)), (field, row)
        # Shown literally: a bidi override is a visible escape, so text reads as stored.
        shown_name = (customer["full_name"] or "").replace("\u202e", "\\u202e")
        assert row["full_name"][1] == shown_name.replace("\u202c", "\\u202c")
        assert Decimal(row["total_spent_aud"][1].replace(",", "")) == Decimal(
            customer["total_spent_aud"])
    assert [c["full_name"] for c in lake["top"][:2]] == [f"{HOSTILE} Smith", f"{RTL} Jones"]
    assert page.locator("bdi", has_text=HOSTILE).count() >= 1
    assert "\u202e" not in page.text_content("body")
    assert "\\u202eevil\\u202c Name Jones" in page.text_content("#top-customers")

    # The total served is the serving table's own sum.
    from purchases import serving
    from purchases.config import load_settings

    with serving.connect(load_settings(home=lake["home"])) as db:
        summary = db.summary()
    total = sum((r["total_spent_aud"] for r in summary), Decimal(0))
    assert page.get_attribute("#total-served", "data-value") == f"{total:.2f}"
    assert page.text_content("#tile-customers .v").replace(",", "") == str(len(summary))
    assert "applied every committed batch (5)" in page.text_content("#ledger-check")

    # Screenshots: a laptop and a phone; kept in bench/out for people to look at.
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in {"report": (1280, 900), "report-narrow": (390, 844)}.items():
        shot, seen = open_report(browser, lake["html"], width, height)
        assert seen["requests"] == [lake["html"].as_uri()] and seen["console"] == []
        for folder in (tmp_path, SHOTS):
            shot.screenshot(path=str(folder / f"{name}.png"))
        shot.screenshot(path=str(tmp_path / f"{name}-full.png"), full_page=True)
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        # Nothing but the tables scrolls sideways on a narrow screen.
        assert shot.evaluate("document.documentElement.scrollWidth") <= width
        shot.close()
    page.close()


def test_report_of_an_empty_home_and_careless_flags(tmp_path: Path, browser) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURCHASES_")}
    env["PURCHASES_HOME"] = str(tmp_path / "home")

    def cli(*args: str, expect: int = 0, lake: str | None = None) -> subprocess.CompletedProcess:
        options = ["--lake", lake] if lake else []
        proc = subprocess.run([PURCHASES, *options, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == expect, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    (tmp_path / "home").mkdir()  # a home not there at all is a mistyped one (test_cli_errors)
    cli("report")
    html = tmp_path / "home" / "report.html"
    assert not (tmp_path / "home" / "purchases.db").exists()  # a reader creates no database
    assert not (tmp_path / "home" / "lake").exists()  # nor a lake (reprocess would use it)
    err = cli("report", "--out", str(tmp_path / "r.html"), expect=1, lake="typo").stderr
    assert err.strip() == ("Error: lake typo does not exist: nothing was ingested there (check "
                           "--home / PURCHASES_HOME, or --lake / PURCHASES_LAKE)"), err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "r.html").exists()
    page, seen = open_report(browser, html, 1280, 900)
    assert seen["console"] == [] and seen["requests"] == [html.as_uri()]
    assert "No runs yet" in page.text_content("#runs-section")
    assert page.locator("#top-customers").count() == 0
    page.close()

    (tmp_path / "a-folder").mkdir()
    err = cli("report", "--out", str(tmp_path / "a-folder"), expect=2).stderr
    assert "--out" in err
    assert "--runs" in cli("report", "--runs", "-1", expect=2).stderr
    nested = tmp_path / "new" / "deeper" / "r.html"
    cli("report", "--out", str(nested))
    assert nested.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # A FIFO (or a device) is refused, not replaced by a regular file.
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    err = cli("report", "--out", str(fifo), expect=1).stderr
    assert err.strip() == (f"Error: cannot write the report to {fifo}: it is not a regular file "
                           "(give --out a file in a folder you can write)"), err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # A file where a folder is meant: mkdir said only "File exists".
    (tmp_path / "a-file").write_text("")
    err = cli("report", "--out", str(tmp_path / "a-file" / "r.html"), expect=1).stderr
    assert err.strip() == (f"Error: cannot write the report to {tmp_path / 'a-file' / 'r.html'}: "
                           f"{tmp_path / 'a-file'} is a file, not a folder (give --out a file in "
                           "a folder you can write)"), err
