"""Rendering rows for people (Rich tables) and for scripts (CSV, JSON with exact decimals)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def scalar(value: Any) -> Any:
    """A JSON/CSV-safe value: decimals as exact strings ("150.00"), dates as ISO strings."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def render_rows(
    console: Console,
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: OutputFormat,
    *,
    title: str | None = None,
) -> None:
    if fmt is OutputFormat.json:
        payload = [{c: scalar(r.get(c)) for c in columns} for r in rows]
        console.file.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else scalar(r.get(c)) for c in columns])
        console.file.write(buf.getvalue())
        return
    table = Table(title=title, show_lines=False)
    for c in columns:
        numeric = rows and isinstance(rows[0].get(c), int | Decimal)
        table.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(scalar(r.get(c))) for c in columns))
    console.print(table)
