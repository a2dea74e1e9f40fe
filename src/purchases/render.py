"""Rendering rows for people (Rich tables) and for scripts (CSV, JSON with exact decimals).

Everything shown comes from data (names, file names, raw lines, SQL results, error messages)
and is shown literally: never parsed as Rich markup (a name "[/]" would crash the table, a
"[bold]" would vanish) and never allowed to drive the terminal. Rich's Text drops only BEL, BS,
VT, FF and CR and passes ESC and NUL through, so a raw field "\\x1b[2J" would clear the screen;
`literal` makes every control character a visible escape instead.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

# C0 controls, DEL and C1 controls (0x9b is a one-byte CSI on some terminals): shown as \xNN.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def literal(value: object) -> str:
    """str(value) with every terminal control character replaced by a visible \\xNN escape."""
    return str(value).translate(_CONTROLS)


def one_line(message: object) -> str:
    """An error message as one literal line: line breaks become spaces, controls escapes."""
    return literal(" ".join(str(message).split()))


def text(value: object, style: str = "") -> Text:
    """A Rich Text showing value literally (no markup, no emoji codes, no controls)."""
    return Text(literal(value), style=style)


def say(console: Console, line: object, style: str = "") -> None:
    """Print one literal line; long lines are left to the terminal to wrap (greppable)."""
    console.print(text(line, style), soft_wrap=True, highlight=False)


def say_wrapped(console: Console, line: object, style: str = "", indent: str = "  ") -> None:
    """Print one literal line wrapped at its spaces to the console's width, later lines
    indented: a word (a reason code with its count, a path) is never split across lines,
    as a terminal's own wrapping would. A word wider than the console gets a line of its own."""
    lines: list[str] = []
    for word in literal(line).split():
        if lines and cell_len(lines[-1]) + 1 + cell_len(word) <= console.width:
            lines[-1] += " " + word
        else:
            lines.append((indent if lines else "") + word)
    for shown in lines or [""]:
        console.print(text(shown, style), soft_wrap=True, highlight=False)


class LiteralFormatter(logging.Formatter):
    """A log formatter that shows file names and messages literally (see `literal`)."""

    def format(self, record: logging.LogRecord) -> str:
        return literal(super().format(record))


def _json_default(value: Any) -> Any:
    # Nested values (DuckDB LIST/STRUCT/MAP) reach json.dumps' default hook.
    converted = scalar(value)
    return converted if converted is not value else str(value)


def scalar(value: Any) -> Any:
    """A JSON/CSV-safe value: decimals as exact strings ("150.00"), dates as ISO strings.

    BLOBs as lowercase hex (two characters per byte: readable, unambiguous and
    `bytes.fromhex` gives the bytes back; base64 would be shorter, but no BLOB in this
    product is large); NaN and infinities as strings, since JSON has no literal for them.
    """
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, timedelta):
        return str(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    value = scalar(value)
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    return str(value)


def fits(console: Console, rows: list[dict[str, Any]], columns: list[str]) -> bool:
    """Whether render_rows shows these rows as a table across the console (else it shows
    each row as a record, one field per line)."""
    cells = [[text(_cell(r.get(c))) for c in columns] for r in rows]
    return fitted_widths(cells, [literal(c) for c in columns], console.width) is not None


# A table is for reading: past this many rows it says how many it left out (CSV and JSON
# give them all, written as they are read).
TABLE_ROW_LIMIT = 1000


def render_batches(
    console: Console,
    columns: list[str],
    batches: Iterable[list[tuple[Any, ...]]],
    fmt: OutputFormat,
) -> None:
    """Print a result read a batch at a time (rows as tuples in `columns` order), as
    render_rows does, without holding it whole: CSV and JSON are written batch by batch; a
    table shows the first TABLE_ROW_LIMIT rows, then how many more there were."""
    if fmt is OutputFormat.table:
        shown: list[dict[str, Any]] = []
        more = 0
        for batch in batches:
            room = TABLE_ROW_LIMIT - len(shown)
            shown.extend(dict(zip(columns, row, strict=True)) for row in batch[:room])
            more += max(0, len(batch) - room)
        render_rows(console, shown, columns, fmt)
        if more:
            say_wrapped(console, f"... and {more:,} more row(s) not shown: the table stops at "
                                 f"{TABLE_ROW_LIMIT:,}; add a LIMIT, or give --format csv or "
                                 "json for all")
        return
    if fmt is OutputFormat.json:
        console.file.write("[")
        sep = ""
        for batch in batches:
            items = (json.dumps({c: scalar(v) for c, v in zip(columns, row, strict=True)},
                                ensure_ascii=False, default=_json_default) for row in batch)
            for item in items:
                console.file.write(sep + item)
                sep = ", "
        console.file.write("]\n")
        return
    show = literal if console.is_terminal else str
    writer = csv.writer(console.file, lineterminator="\n")
    writer.writerow([show(c) for c in columns])
    for batch in batches:
        writer.writerows([show(_cell(v)) for v in row] for row in batch)


def render_rows(
    console: Console,
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: OutputFormat,
    *,
    title: str | None = None,
) -> None:
    """Print rows as a table (people), CSV or JSON (scripts).

    JSON escapes control characters itself; CSV keeps values byte-exact for a pipe or a
    file, and escapes controls only when written to a terminal (as `ls` does).
    """
    if fmt is not OutputFormat.table:
        render_batches(console, columns, [[tuple(r.get(c) for c in columns) for r in rows]], fmt)
        return
    if not rows:
        # An empty table squeezed to the terminal is only a wall of folded headers.
        console.print(text(f"{title}: no rows" if title else "no rows"))
        return
    cells = [[text(_cell(r.get(c))) for c in columns] for r in rows]
    names = [literal(c) for c in columns]
    widths = fitted_widths(cells, names, console.width)
    if widths is None:
        _render_records(console, cells, [text(c) for c in columns], title)
        return
    numeric = [isinstance(rows[0].get(c), int | Decimal) for c in columns]
    # Widths fixed here, not left to Rich: Rich narrows the widest columns first, folding a
    # run id or an e-mail address mid-value; here only text with spaces wraps, at a space.
    table = Table(title=text(title) if title is not None else None, show_lines=False)
    for name, width, is_number in zip(names, widths, numeric, strict=True):
        table.add_column(
            Text(_wrap_name(name, width)),  # already literal: its line breaks are ours
            justify="right" if is_number else "left",
            overflow="fold",  # a last resort only: no word is wider than its column
            width=width,
        )
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _name_parts(name: str) -> list[str]:
    """A column name's pieces where it may wrap: after each underscore ("customers_", "changed")."""
    parts = name.split("_")
    return [p + "_" for p in parts[:-1]] + [parts[-1]]


def _wrap_name(name: str, width: int) -> str:
    """A column name wrapped after underscores to fit `width`, never inside a piece."""
    lines: list[str] = []
    for part in _name_parts(name):
        if lines and cell_len(lines[-1] + part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return "\n".join(lines)


def fitted_widths(cells: list[list[Text]], names: list[str], width: int) -> list[int] | None:
    """Column widths (content only) for a table of `width` cells in which no word folds.

    A cell may wrap only at its spaces, a column name only after an underscore (and only when
    wrapping values is not enough), so an id, a number, an e-mail address or a path is always
    shown whole on one line. Columns start at their widest value and the widest shrinkable one
    gives way first. None: even at their narrowest the columns do not fit (show one block per
    row instead).
    """
    borders = 3 * len(names) + 1  # "│ " before each column, " │" after the last
    room = width - borders
    words, highs = [], []
    for i, name in enumerate(names):
        values = [row[i].plain for row in cells]
        words.append(max((cell_len(w) for v in values for w in v.split()), default=0))
        highs.append(max(words[-1], cell_len(name), *(cell_len(v) for v in values), 1))
    # Values wrap at their spaces before any column name is broken after an underscore.
    whole_names = [max(w, cell_len(n), 1) for w, n in zip(words, names, strict=True)]
    split_names = [max(w, *(cell_len(p) for p in _name_parts(n)), 1)
                   for w, n in zip(words, names, strict=True)]
    for lows in (whole_names, split_names):
        if sum(lows) <= room:
            return _shrunk(highs, lows, room)
    return None


def _shrunk(widths: list[int], lows: list[int], room: int) -> list[int]:
    """Widths narrowed, widest first and never below `lows`, until they add up to `room`."""
    widths = list(widths)
    while (excess := sum(widths) - room) > 0:
        shrinkable = [k for k in range(len(widths)) if widths[k] > lows[k]]
        i = max(shrinkable, key=widths.__getitem__)
        runner_up = max((widths[k] for k in shrinkable if k != i), default=0)
        widths[i] -= max(1, min(excess, widths[i] - max(lows[i], runner_up)))
    return widths


def _render_records(
    console: Console, cells: list[list[Text]], heads: list[Text], title: str | None
) -> None:
    """Rows too wide for the terminal, one block per row ("field  value"), like psql's \\x:
    Rich would otherwise fold every column, numbers and amounts included, to a few chars."""
    if title is not None:
        console.print(text(title, "bold"), soft_wrap=True)
    for n, row in enumerate(cells, 1):
        block = Table(
            show_header=False,
            box=None,
            title=text(f"-[ row {n} ]-"),
            title_justify="left",
            padding=(0, 1, 0, 0),
            pad_edge=False,  # no padding after the value: its last column is usable
        )
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for head, value in zip(heads, row, strict=True):
            block.add_row(head, value)
        console.print(block)
