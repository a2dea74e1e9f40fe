"""The report as one HTML page: sections built from the gathered figures, every value escaped.

Values from data (names, e-mails, file names, error messages) are escaped for HTML, their
control characters shown as visible \\xNN escapes (as in the terminal), and wrapped in <bdi>
so that a right-to-left mark in a name cannot reorder the text around it. The page has no
script; a Content-Security-Policy forbids loading anything, so it stays self-contained even
if a value tried to smuggle in a tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Any

from purchases import insights
from purchases.contract import TOP_CUSTOMERS_COLUMNS, Reason
from purchases.pipeline import PIPELINE
from purchases.render import literal, scalar
from purchases.report import charts
from purchases.report.style import CSS

if TYPE_CHECKING:
    from purchases.history import RunRecord
    from purchases.report import ReportData

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STEP_CHART_RUNS = 30
"""Runs drawn in the step-duration chart (the latest ones); the tables show every run given."""


# --- values --------------------------------------------------------------------------------------


# Explicit bidirectional embeddings, overrides and isolates: in a value they could make text
# read other than it is stored ("Trojan Source"), so they are shown as visible \uXXXX escapes.
# Right-to-left letters (Arabic, Hebrew) and the implicit marks LRM/RLM are shown as they are.
_BIDI_CONTROLS = {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def esc(value: object) -> str:
    """A value as HTML text: controls and bidi overrides as visible escapes, then <, >, &
    and quotes escaped."""
    shown = literal("" if value is None else value).translate(_BIDI_CONTROLS)
    return escape(shown, quote=True)


def data(value: object) -> str:
    """A data value (a name, a path, a message), escaped and isolated for bidirectional text."""
    return f"<bdi>{esc(value)}</bdi>"


def attr_value(value: Any) -> str:
    """A value as a data-value attribute: exactly as `--format json` writes it (decimals as
    strings, dates in ISO form, None as empty), for scripts; only controls are escaped."""
    shown = scalar(value)
    return "" if shown is None else escape(literal(shown), quote=True)


def number(value: Any) -> str:
    """A count or an amount for people: thousands separated, decimals exactly as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Decimal):
        return f"{value:,f}"
    return esc(value)


def money(value: Decimal) -> str:
    return f"{Decimal(value):,.2f}"


def seconds(value: float | int | None) -> Decimal:
    """Seconds as recorded (a float in the run history), as an exact Decimal of its text."""
    return Decimal(str(value or 0))


def _when(stamp: str | None) -> str:
    """A run-history timestamp to the second, e.g. "2024-01-15 09:30:00 UTC" (the exact
    stamp stays in the cell's data-value and tooltip)."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.utcoffset() == timedelta(0):
        return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    return f"{moment:%Y-%m-%d %H:%M:%S %z}"


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


# --- building blocks ---------------------------------------------------------------------------


def table(
    heads: Sequence[tuple[str, str]],
    rows: Iterable[str],
    *,
    table_id: str = "",
) -> str:
    """A table in a horizontally scrolling box; heads are (text, css class)."""
    # Field names read as words ("customers changed"), so a narrow column wraps its head.
    head = "".join(f'<th class="{c}">{esc(h.replace("_", " "))}</th>' for h, c in heads)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def cell(field: str, value: Any, css: str = "") -> str:
    """A table cell carrying its field name and exact value, for scripts and tests."""
    shown = number(value) if isinstance(value, int | Decimal) else data(value)
    css = css or ("num" if isinstance(value, int | Decimal) and not isinstance(value, bool)
                  else "")
    return (f'<td class="{css}" data-field="{esc(field)}" data-value="{attr_value(value)}">'
            f"{shown}</td>")


def tile(key: str, value: str, css: str = "", tile_id: str = "") -> str:
    ident = f' id="{esc(tile_id)}"' if tile_id else ""
    return (f'<div class="tile"{ident}><div class="k">{esc(key)}</div>'
            f'<div class="v {css}">{value}</div></div>')


def _reason_order(reasons: Iterable[str]) -> list[str]:
    """Reason codes in the contract's order (the order rules are checked), others after."""
    known = [r.value for r in Reason]
    found = set(reasons)
    return [r for r in known if r in found] + sorted(found - set(known))


# --- sections ----------------------------------------------------------------------------------


def render(d: ReportData) -> str:
    """The whole page."""
    body = "".join([
        _summary(d),
        _runs(d),
        _over_time(d),
        _fx_gaps(d),
        _lineage(d),
        _top(d),
    ])
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        "<title>purchases — run report</title>"
        f"<style>{CSS}</style></head><body>"
        "<header><h1>purchases — run report</h1>"
        f'<p class="where">lake <span class="mono">{data(d.lake)}</span> · serving database '
        f'<span class="mono">{data(d.database)}</span></p></header>'
        f"<main>{body}</main>"
        f"<footer>Written {esc(d.generated_at)} by <span class=\"mono\">purchases report</span>. "
        "The same figures in a terminal: <span class=\"mono\">purchases runs</span>, "
        "<span class=\"mono\">purchases rejects</span>, <span class=\"mono\">purchases top"
        "</span> (each with <span class=\"mono\">--format json</span>).</footer>"
        "</body></html>\n"
    )


def _summary(d: ReportData) -> str:
    runs, lin = d.runs, d.lineage
    latest: RunRecord | None = runs.rows[-1] if runs.rows else None
    status = (f'<span class="status {esc(latest.status)}">{esc(latest.status)}</span>'
              if latest else "no run yet")
    served_ok = not lin.unapplied_batches
    return (
        '<div class="tiles" id="summary">'
        + tile("runs", f"{runs.total:,}", tile_id="tile-runs")
        + tile("latest run", status)
        + tile("rows accepted (silver)", f"{lin.silver_rows:,}", tile_id="tile-accepted")
        + tile("rows rejected (quarantine)", f"{lin.quarantine_rows:,}", tile_id="tile-rejected")
        + tile("customers served", f"{lin.summary_rows:,}", tile_id="tile-customers")
        + tile("total served (AUD)", money(lin.total_served), tile_id="tile-total")
        + tile("serving ledger", "up to date" if served_ok else
               f"{len(lin.unapplied_batches)} batch(es) behind",
               "ok" if served_ok else "bad")
        + "</div>"
    )


def _runs(d: ReportData) -> str:
    runs = d.runs
    if not runs.rows:
        return ('<section id="runs-section"><h2>Runs</h2><p class="note">No runs yet: land '
                "files with <span class=\"mono\">purchases ingest</span>, then "
                "<span class=\"mono\">purchases run</span>.</p></section>")
    heads = [(c, "num" if c in ("files", "accepted", "rejected", "duplicates",
                                "customers_changed", "seconds") else "")
             for c in insights.RUN_COLUMNS]
    rows = []
    for record in reversed(runs.rows):
        row = insights.run_row(record)
        cells = []
        for field in insights.RUN_COLUMNS:
            value = row[field]
            if field == "run_id":
                cells.append(f'<td class="id" data-field="run_id" data-value="{esc(value)}">'
                             f'<a href="#run-{esc(value)}">{esc(value)}</a></td>')
            elif field == "status":
                cells.append(f'<td class="status {esc(value)}" data-field="status" '
                             f'data-value="{esc(value)}">{esc(value)}</td>')
            elif field == "seconds":
                cells.append(f'<td class="num" data-field="seconds" data-value="{esc(value)}">'
                             f"{esc(value)}</td>")
            elif field == "started":
                cells.append(f'<td class="when" data-field="started" data-value="{esc(value)}" '
                             f'title="{esc(value)}">{esc(_when(value))}</td>')
            else:
                cells.append(cell(field, value))
        rows.append(f'<tr data-run-id="{esc(record.run_id)}">{"".join(cells)}</tr>')
    left_out = (f'<p class="note">Showing the latest {len(runs.rows):,} of {runs.total:,} '
                "runs (<span class=\"mono\">purchases report --runs 0</span> shows all).</p>"
                if runs.left_out else "")
    shown = runs.rows[-STEP_CHART_RUNS:]
    steps = [t.name for t in PIPELINE]
    chart = charts.horizontal_bars(
        [r.run_id for r in reversed(shown)],
        [charts.Series(step, [_step_seconds(r, step) for r in reversed(shown)])
         for step in steps],
        label="seconds per step of each run",
        value_text=lambda v: f"{Decimal(v):.3f} s",
        chart_id="chart-steps",
    )
    details = "".join(_run_detail(r, open_=(i == 0 or r.status != "succeeded"))
                      for i, r in enumerate(reversed(runs.rows)))
    return (
        '<section id="runs-section"><h2>Runs</h2>'
        '<p class="note">Latest first; the same rows as <span class="mono">purchases runs'
        "</span>. Select a run id for its files and steps.</p>"
        + left_out
        + table(heads, rows, table_id="runs")
        + "<h3>Seconds per step</h3>" + f'<div class="scroll">{chart}</div>'
        + charts.legend(steps)
        + "<h3>Each run</h3>" + details
        + "</section>"
    )


def _step_seconds(record: RunRecord, step: str) -> Decimal:
    return sum((seconds(s.seconds) for s in record.steps if s.step == step), Decimal(0))


def _run_detail(record: RunRecord, *, open_: bool) -> str:
    counts = record.counts()
    parts = [
        f'<details id="run-{esc(record.run_id)}" data-run-id="{esc(record.run_id)}"'
        + (" open" if open_ else "") + ">"
        f'<summary><span class="mono">{esc(record.run_id)}</span> · '
        f'<span class="status {esc(record.status)}">{esc(record.status)}</span> · '
        f"{esc(record.trigger)} · started {esc(record.started_at)}</summary>"
    ]
    if record.failed_step:
        parts.append(f'<p class="error">Failed in step <b>{esc(record.failed_step)}</b>: '
                     f"{data(record.error_class)}: {data(record.error)}</p>")
    elif record.error:
        parts.append(f'<p class="warn">{data(record.error)}</p>')
    for what, items in record.recovered.items():
        parts.append(f'<p class="note">Recovered first — {esc(what.replace("_", " "))}: '
                     f"{data(', '.join(map(str, items)))}</p>")
    by_reason = record.rejected_by_reason()
    reasons = ", ".join(f"{k} {v:,}" for k, v in by_reason.items()) or "none"
    parts.append(
        f'<p>Rows in {counts.get("rows_in", 0):,} · accepted {counts.get("accepted", 0):,} · '
        f'rejected {counts.get("rejected", 0):,} ({esc(reasons)}) · duplicates '
        f'{counts.get("duplicates", 0):,} · customers changed '
        f'{counts.get("customers_changed", 0):,} · customers upserted '
        f'{counts.get("customers_upserted", 0):,} · {esc(record.seconds)} s</p>'
    )
    if record.files:
        file_rows = []
        for f in record.files:
            rejected = f.get("rejected") or {}
            reasons_of_file = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items()))
            whole = (f"{f['file_rejection']}: {f.get('detail') or ''}"
                     if f.get("file_rejection") else "")
            file_rows.append(
                "<tr>"
                f'<td class="path mono">{data(f.get("path"))}</td>'
                f'<td class="when">{esc(f.get("ingestion_date"))}</td>'
                + cell("rows_in", int(f.get("rows_in") or 0))
                + cell("accepted", int(f.get("accepted") or 0))
                + cell("rejected", sum(rejected.values()))
                + cell("duplicates", int(f.get("duplicates") or 0))
                + cell("invalid_emails", int(f.get("invalid_emails") or 0))
                + f'<td class="reasons">{esc(reasons_of_file)}</td>'
                + f'<td class="whole bad">{data(whole)}</td>'
                "</tr>"
            )
        parts.append(table(
            [("file", ""), ("ingestion date", ""), ("rows in", "num"), ("accepted", "num"),
             ("rejected", "num"), ("duplicates", "num"), ("invalid emails", "num"),
             ("rejected by reason", ""), ("rejected whole", "")],
            file_rows,
        ))
    step_rows = []
    for s in record.steps:
        shown_counts = ", ".join(f"{k}={v}" for k, v in s.counts.items()
                                 if k != "rejected_by_reason")
        error = f"{s.error_class}: {s.error}" if s.error else ""
        step_rows.append(
            "<tr>"
            f'<td class="mono">{esc(s.step)}</td>'
            f'<td class="status {esc(s.status)}">{esc(s.status)}</td>'
            + cell("attempts", s.attempts)
            + f'<td class="num">{seconds(s.seconds):.3f}</td>'
            f'<td class="wrap">{esc(shown_counts)}</td>'
            f'<td class="wrap bad">{data(error)}</td>'
            "</tr>"
        )
    parts.append(table([("step", ""), ("status", ""), ("attempts", "num"), ("seconds", "num"),
                        ("counts", ""), ("error", "")], step_rows))
    parts.append("</details>")
    return "".join(parts)


def _over_time(d: ReportData) -> str:
    by_day: dict[str, dict[str, int]] = {}
    for r in d.rejects:
        by_day.setdefault(_day(r["ingestion_date"]), {})[str(r["reason"])] = int(r["rows"])
    accepted = {_day(r["ingestion_date"]): r for r in d.accepted}
    days = sorted(set(by_day) | set(accepted))
    if not days:
        return ('<section id="over-time"><h2>Over time</h2><p class="note">Nothing processed '
                "yet.</p></section>")
    reasons = _reason_order(r for counts in by_day.values() for r in counts)
    if reasons:
        reject_chart = charts.stacked_bars(
            days,
            [charts.Series(reason, [by_day.get(day, {}).get(reason, 0) for day in days])
             for reason in reasons],
            label="rejected rows by reason per ingestion date",
            chart_id="chart-rejects",
        )
        reject_chart = f'<div class="scroll">{reject_chart}</div>' + charts.legend(reasons)
        # A row per reason, a column per date: sixteen reason codes read down a page, while
        # dates are few per report and scroll sideways if there are many.
        rows = []
        for reason in reasons:
            cells = "".join(
                f'<td class="num" data-date="{esc(day)}" data-reason="{esc(reason)}" '
                f'data-value="{by_day.get(day, {}).get(reason, 0)}">'
                f"{by_day.get(day, {}).get(reason, 0):,}</td>"
                for day in days
            )
            total = sum(c.get(reason, 0) for c in by_day.values())
            rows.append(f'<tr data-reason="{esc(reason)}"><td class="mono">{esc(reason)}</td>'
                        f'{cells}<td class="num"><b>{total:,}</b></td></tr>')
        day_totals = "".join(
            f'<td class="num"><b>{sum(by_day.get(day, {}).values()):,}</b></td>' for day in days)
        grand = sum(sum(c.values()) for c in by_day.values())
        rows.append(f'<tr class="total"><td><b>all reasons</b></td>{day_totals}'
                    f'<td class="num"><b>{grand:,}</b></td></tr>')
        reject_table = table(
            [("reason", ""), *((day, "num when") for day in days), ("all dates", "num")],
            rows, table_id="rejects-by-reason")
        rejects = (
            "<h3>Rejected rows by reason, per ingestion date</h3>"
            '<p class="note">Rows in quarantine now (<span class="mono">purchases rejects '
            "--limit 0</span> lists them).</p>" + reject_chart + reject_table
        )
    else:
        rejects = '<h3>Rejected rows</h3><p class="note ok">No row is in quarantine.</p>'

    rows_chart = charts.stacked_bars(
        days, [charts.Series("accepted rows",
                             [int(accepted[day]["rows"]) if day in accepted else 0
                              for day in days])],
        label="accepted rows per ingestion date", chart_id="chart-accepted", width=480,
        palette=("#59a14f",))
    aud = [Decimal(accepted[day]["amount_aud"] or 0) if day in accepted else Decimal(0)
           for day in days]
    aud_chart = charts.stacked_bars(
        days, [charts.Series("AUD", aud)], label="AUD volume per ingestion date",
        value_text=lambda v: f"{money(Decimal(v))} AUD", chart_id="chart-aud", width=480,
        palette=("#4e79a7",))
    day_rows = [
        f'<tr data-date="{esc(day)}"><td class="when">{esc(day)}</td>'
        + cell("rows", int(accepted[day]["rows"]) if day in accepted else 0)
        + f'<td class="num" data-field="amount_aud" data-value="{attr_value(amount)}">'
        f"{money(amount)}</td></tr>"
        for day, amount in zip(days, aud, strict=True)
    ]
    return (
        '<section id="over-time"><h2>Over time</h2>' + rejects
        + "<h3>Accepted purchases per ingestion date</h3>"
        '<div class="pair"><div class="scroll"><p class="note">rows</p>' + rows_chart + "</div>"
        '<div class="scroll"><p class="note">AUD volume</p>' + aud_chart + "</div></div>"
        + table([("ingestion date", ""), ("accepted rows", "num"), ("AUD volume", "num")],
                day_rows, table_id="accepted-by-day")
        + "</section>"
    )


def _fx_gaps(d: ReportData) -> str:
    if not d.fx_gaps:
        return ('<section id="fx-gaps"><h2>FX coverage</h2><p class="note ok">Every purchase '
                "had an FX rate for its date.</p></section>")
    rows = []
    for g in d.fx_gaps:
        purchase_dates = [_day(x) for x in g["purchase_dates"] or []]
        ingestion_dates = [_day(x) for x in g["ingestion_dates"] or []]
        currency = g["currency"] if g["currency"] is not None else "(none)"
        rows.append(
            f'<tr data-currency="{esc(currency)}">'
            f'<td class="mono">{data(currency)}</td>'
            + cell("rows", int(g["rows"]))
            + f'<td class="mono">{esc(_day(g["first_purchase_date"]))} – '
            f'{esc(_day(g["last_purchase_date"]))}</td>'
            f'<td class="num">{len(purchase_dates):,}</td>'
            f'<td class="wrap mono">{esc(", ".join(ingestion_dates))}</td></tr>'
        )
    return (
        '<section id="fx-gaps"><h2>FX coverage gaps</h2>'
        '<p class="note">Purchases quarantined as <span class="mono">unknown_currency</span>: '
        "no rate for the currency on the purchase date. Add the rates to the FX table "
        '(<span class="mono">PURCHASES_FX_RATES</span>), then <span class="mono">purchases '
        "reprocess --reason unknown_currency</span>.</p>"
        + table([("currency", ""), ("rows", "num"), ("purchase dates", ""),
                 ("days without a rate", "num"), ("ingestion dates", "")],
                rows, table_id="fx-gaps-table")
        + "</section>"
    )


def _stage(key: str, value: str, detail: str, stage_id: str) -> str:
    return (f'<div class="stage" id="{esc(stage_id)}"><div class="k">{esc(key)}</div>'
            f'<div class="v">{value}</div><div class="d">{detail}</div></div>')


def _lineage(d: ReportData) -> str:
    lin = d.lineage
    arrow = '<div class="arrow" aria-hidden="true">→</div>'
    flow = "".join([
        _stage("bronze", f"{lin.bronze_files:,} files",
               f"{lin.rows_in:,} rows in processed files · {lin.pending_files:,} pending · "
               f"{lin.rejected_files:,} rejected whole", "stage-bronze"),
        arrow,
        _stage("silver / quarantine", f"{lin.silver_rows:,} / {lin.quarantine_rows:,}",
               f"rows accepted / rejected · {lin.duplicates:,} duplicates dropped",
               "stage-silver"),
        arrow,
        _stage("gold", f"{lin.gold_rows:,} rows",
               f"customer change sets of {len(lin.committed_batches):,} committed batches · "
               f"{lin.customers:,} customers in the lake", "stage-gold"),
        arrow,
        _stage("staging", f"{lin.upserted_rows:,} rows",
               f"loaded and upserted per batch · {lin.staged_rows:,} waiting now",
               "stage-staging"),
        arrow,
        _stage("summary", f"{lin.summary_rows:,} customers",
               f"{money(lin.total_served)} AUD served", "stage-summary"),
    ])
    checks = []
    balance = lin.silver_rows + lin.quarantine_rows + lin.duplicates
    checks.append(
        f'<li class="{"ok" if lin.rows_balance else "bad"}">'
        f'{"✓" if lin.rows_balance else "✗"} rows in ({lin.rows_in:,}) = accepted + rejected + '
        f"duplicates ({balance:,})</li>")
    unapplied = lin.unapplied_batches
    if unapplied:
        shown = ", ".join(map(str, unapplied[:20])) + (" …" if len(unapplied) > 20 else "")
        checks.append(
            f'<li class="bad" id="ledger-check">✗ the serving ledger has not applied '
            f"{len(unapplied):,} of {len(lin.committed_batches):,} committed batches ({shown}): "
            '<span class="mono">purchases run</span> applies them</li>')
    else:
        checks.append(
            f'<li class="ok" id="ledger-check">✓ the serving ledger has applied every committed '
            f"batch ({len(lin.committed_batches):,})</li>")
    gold_ok = lin.upserted_rows == lin.gold_rows
    checks.append(
        f'<li class="{"ok" if gold_ok else "warn"}">{"✓" if gold_ok else "!"} gold rows '
        f"({lin.gold_rows:,}) {'=' if gold_ok else '≠'} rows upserted through staging "
        f"({lin.upserted_rows:,})</li>")
    return (
        '<section id="lineage"><h2>Lineage</h2>'
        '<p class="note">Where the rows are now, layer by layer.</p>'
        f'<div class="flow">{flow}</div><ul class="checks">{"".join(checks)}</ul></section>'
    )


def _top(d: ReportData) -> str:
    lin = d.lineage
    if not d.top:
        body = '<p class="note">The serving table is empty.</p>'
    else:
        rows = []
        for rank, r in enumerate(d.top, 1):
            cells = "".join(cell(c, r.get(c), "wrap" if c in ("full_name", "email") else "")
                            for c in TOP_CUSTOMERS_COLUMNS)
            rows.append(f'<tr data-rank="{rank}"><td class="num">{rank}</td>{cells}</tr>')
        body = table([("#", "num"), *((c, "num" if c in ("customer_id", "total_spent_aud")
                                         else "") for c in TOP_CUSTOMERS_COLUMNS)],
                     rows, table_id="top-customers")
    return (
        f'<section id="top"><h2>Top {len(d.top)} customers</h2>'
        '<p class="note">The business query (<span class="mono">purchases top</span>): '
        "customers by total spent in AUD.</p>" + body
        + f'<p>Total served: <b id="total-served" data-value="{attr_value(lin.total_served)}">'
        f"{money(lin.total_served)} AUD</b> over <b>{lin.summary_rows:,}</b> customers.</p>"
        "</section>"
    )


__all__ = ["render"]
