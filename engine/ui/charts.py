"""Bar charts as SVG, drawn on the server.

The dashboard's charts are a few dozen bars each (hours or days of one report), so a few
lines of SVG do what a charting library would: the page carries no script to draw them
(none to load, none to allow in the Content-Security-Policy), a chart is ready the moment
the HTML is, and its numbers are text a test can read. A chart library would add tens of
kilobytes of JavaScript per page to draw the same bars (docs/dashboard.md).

Each bar has a ``<title>``: the browser shows it on hover, and a screen reader reads it.
Colours come from the stylesheet through class names, never inline styles.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

from markupsafe import Markup, escape

from . import numbers

#: About the size a chart is drawn at (a third of 1280 px, or a phone's width), so that its
#: text reads at the stylesheet's size.
WIDTH, HEIGHT = 360, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 6, 10, 24
#: At most this many labels under the bars, so they never overlap at phone width.
MAX_LABELS = 6


class Point(NamedTuple):
    """A bar: ``label`` under it (short: "13:00", "Jan 5"), ``when`` in its tooltip
    ("Fri Jan 5 2024, 13:00"; the label when empty)."""

    label: str
    value: float
    when: str = ""


def nice_step(top: float, ticks: int = 4, whole: bool = False) -> float:
    """A step of 1, 2 or 5 times a power of ten that reaches ``top`` in about ``ticks`` steps;
    at least 1 when ``whole`` (counts have no fractions to mark)."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    step = float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    return max(step, 1.0) if whole else step


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bar_chart(points: Sequence[Point], *, title: str, unit: str, is_money: bool = False,
              kind: str = "count") -> Markup:
    """One series as bars over its labels (hours or days); ``unit`` names a bar's value in
    its tooltip ("pings"), ``kind`` is the class that colours it. Nothing above zero: an
    empty frame that says there is nothing to draw."""
    show: Callable[[float], str] = numbers.money if is_money else numbers.count
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((p.value for p in points), default=0.0)
    step = nice_step(top, whole=not is_money)
    ceiling = step * max(1, math.ceil(top / step)) if top > 0 else step
    parts = [f'<svg class="chart chart-{escape(kind)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
    ticks = int(round(ceiling / step))
    for i in range(ticks + 1):
        value = step * i
        y = TOP + plot_h - plot_h * value / ceiling
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_number(y)}" y2="{_number(y)}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{_number(y + 4)}" text-anchor="end">'
                     f'{escape(numbers.compact(value, is_money))}</text>')
    if top <= 0:  # no points, or nothing but zeros
        parts.append(f'<text class="empty" x="{LEFT + plot_w / 2:g}" y="{TOP + plot_h / 2:g}" text-anchor="middle">'
                     'no traffic in this range</text></svg>')
        return Markup("".join(parts))
    slot = plot_w / len(points)
    gap = min(slot * 0.2, 4.0)
    every = max(1, math.ceil(len(points) / MAX_LABELS))
    for i, point in enumerate(points):
        x = LEFT + slot * i
        height = plot_h * point.value / ceiling
        parts.append(f'<rect class="bar" x="{_number(x + gap / 2)}" y="{_number(TOP + plot_h - height)}" '
                     f'width="{_number(max(slot - gap, 1.0))}" height="{_number(height)}">'
                     f'<title>{escape(point.when or point.label)}: {escape(show(point.value))} {escape(unit)}</title></rect>')
        if i % every == 0:
            parts.append(f'<text class="axis" x="{_number(x + slot / 2)}" y="{HEIGHT - 8}" text-anchor="middle">'
                         f'{escape(point.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
