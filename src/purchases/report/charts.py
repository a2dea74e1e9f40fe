"""Inline SVG bar charts for the report: drawn here, so the page needs no script and no
network to show them (a charting library would have to be inlined whole).

Coordinates are computed with Decimal from the exact counts and amounts (no float touches a
number on the page) and rounded to a tenth of a pixel. Every value given is shown literally
and escaped; each bar carries a <title> (the browser's own tooltip) with its exact value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from html import escape

Number = int | Decimal

WIDTH = 800
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 44
TENTH = Decimal("0.1")

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f4e79", "#8cd17d", "#d37295", "#499894", "#b6992d", "#86bcb6",
)
"""Series colours, in the order series are given (reason codes in contract order)."""


@dataclass(frozen=True)
class Series:
    """One stacked layer: a name (e.g. a reason code) and a value per category."""

    name: str
    values: Sequence[Number]


def colour(index: int, palette: Sequence[str] = PALETTE) -> str:
    return palette[index % len(palette)]


def _px(value: Decimal) -> str:
    return str(value.quantize(TENTH, rounding=ROUND_HALF_UP))


def nice_ceiling(value: Number) -> Decimal:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k) at or above
    value (1 for 0): the top of the y axis, leaving little of the plot empty."""
    value = Decimal(value)
    if value <= 0:
        return Decimal(1)
    step = Decimal(1).scaleb(value.adjusted())
    for factor in ("1", "1.2", "1.5", "2", "2.5", "3", "4", "5", "6", "8", "10"):
        if step * Decimal(factor) >= value:
            return step * Decimal(factor)
    return step * 10  # pragma: no cover - 10 × step always reaches value


def _axis_label(value: Decimal) -> str:
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def stacked_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    label: str,
    value_text: Callable[[Number], str] = lambda v: f"{v:,}",
    chart_id: str = "",
    width: int = WIDTH,
    palette: Sequence[str] = PALETTE,
) -> str:
    """A vertical bar per category, its series stacked bottom up, with a y axis.

    Args:
        categories: the x labels (e.g. ingestion dates), left to right.
        series: the stacked layers; each has one value per category.
        label: what the chart shows, for screen readers (aria-label).
        value_text: how a value reads in a tooltip.
        chart_id: the svg element's id.
        width: the drawing's width in its own units (the page scales it to its box).
        palette: the series colours, in order.

    Returns:
        An <svg> element.
    """
    plot_h = Decimal(HEIGHT - TOP - BOTTOM)
    totals = [sum((Decimal(s.values[i]) for s in series), Decimal(0))
              for i in range(len(categories))]
    top = nice_ceiling(max(totals, default=Decimal(0)))
    ticks = [top * tick / 4 for tick in range(5)]
    # Room for the longest y label (about 7 units per character at 12 px).
    left = max(LEFT, 14 + 7 * max(len(_axis_label(t)) for t in ticks))
    plot_w = Decimal(width - left - RIGHT)
    slot = plot_w / max(len(categories), 1)
    bar_w = min(slot * Decimal("0.7"), Decimal(56))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}"' + (f' id="{escape(chart_id)}"' if chart_id else "") + ">",
    ]
    for tick, value in enumerate(ticks):
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - RIGHT}" y1="{_px(y)}" y2="{_px(y)}"/>'
            f'<text class="tick" x="{left - 6}" y="{_px(y + 4)}" text-anchor="end">'
            f"{escape(_axis_label(value))}</text>"
        )
    # Category labels are thinned so that they never overlap (about 9 px per character).
    widest = max((len(c) for c in categories), default=1) * 8
    label_every = max(1, -(-widest // max(int(slot), 1)))
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = TOP + plot_h
        for index, s in enumerate(series):
            value = Decimal(s.values[i])
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            tip = f"{category} · {s.name}: {value_text(s.values[i])}"
            parts.append(
                f'<rect x="{_px(x)}" y="{_px(y)}" width="{_px(bar_w)}" height="{_px(h)}" '
                f'fill="{colour(index, palette)}"><title>{escape(tip)}</title></rect>'
            )
        if i % label_every == 0:
            cx = left + slot * i + slot / 2
            parts.append(
                f'<text class="tick" x="{_px(cx)}" y="{HEIGHT - BOTTOM + 18}" '
                f'text-anchor="middle">{escape(category)}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - RIGHT}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}"/></svg>'
    )
    return "".join(parts)


def legend(names: Sequence[str]) -> str:
    """The series names with their colours, as an HTML list (wraps on a narrow screen)."""
    items = "".join(
        f'<li><span class="swatch" style="background:{colour(i)}"></span>{escape(n)}</li>'
        for i, n in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


def horizontal_bars(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    label: str,
    value_text: Callable[[Number], str],
    chart_id: str = "",
    width: int = 1100,
) -> str:
    """A horizontal bar per label, its series stacked left to right (e.g. step seconds per run).

    Returns:
        An <svg> element whose height grows with the number of labels.
    """
    row_h, label_w, right = 22, 250, 70
    height = TOP + row_h * max(len(labels), 1) + 8
    plot_w = Decimal(width - label_w - right)
    totals = [sum((Decimal(s.values[i]) for s in series), Decimal(0)) for i in range(len(labels))]
    top = max(totals, default=Decimal(0)) or Decimal(1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"' + (f' id="{escape(chart_id)}"' if chart_id else "") + ">",
    ]
    for i, name in enumerate(labels):
        y = TOP + row_h * i
        parts.append(
            f'<text class="tick mono" x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        x = Decimal(label_w)
        for index, s in enumerate(series):
            value = Decimal(s.values[i])
            if value <= 0:
                continue
            w = plot_w * value / top
            tip = f"{name} · {s.name}: {value_text(s.values[i])}"
            parts.append(
                f'<rect x="{_px(x)}" y="{y + 3}" width="{_px(w)}" height="{row_h - 6}" '
                f'fill="{colour(index)}"><title>{escape(tip)}</title></rect>'
            )
            x += w
        parts.append(
            f'<text class="tick" x="{_px(x + 6)}" y="{y + 15}">'
            f"{escape(value_text(totals[i]))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["Series", "colour", "horizontal_bars", "legend", "nice_ceiling", "stacked_bars"]
