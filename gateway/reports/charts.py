"""Small SVG charts drawn by hand: horizontal bars, stacked bars and lines.

Why not a plotting library: a report must be one self-contained, printable HTML file with no
script, and the same facts must give byte-identical output (so two copies of a report can
be compared by hash). These helpers return inline ``<svg>`` markup with every text
escaped, fixed colours, and coordinates rounded to one decimal.
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence

__all__ = ["PALETTE", "bar_chart", "line_chart", "stacked_bar_chart"]

PALETTE = ("#2f6f9f", "#d9822b", "#7f7f7f", "#4f9a5a", "#b04a4a", "#7a5ea8", "#c2a83e")
"""Series colours, in order; chosen to stay apart in greyscale print as well."""

_FONT = 12
_LABEL_UNITS = 26
_ROW = 22
_BAR = 14
_PAD = 8


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal, no trailing zeros, never ``-0``."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _width(text: str) -> float:
    """Display width in units of the font size: wide (CJK) characters count one, others
    about half."""
    return sum(1.0 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in text)


def _clip(text: str, units: float = _LABEL_UNITS) -> str:
    if _width(text) <= units:
        return text
    out = ""
    for char in text:
        if _width(out + char + "…") > units:
            break
        out += char
    return out + "…"


def _nice(top: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``top``."""
    if top <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(top))
    for step in (1, 2, 5, 10):
        if step * power >= top:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _axis(top: float, *, whole: bool) -> tuple[float, int]:
    """A y axis for values up to ``top``: its maximum and number of steps (at most four),
    each step a 1, 2 or 5 times a power of ten, and a whole number for whole-number data."""
    if top <= 0:
        return 1.0, 1
    step = _nice(top / 4)
    if whole:
        step = max(1.0, math.ceil(step))
    steps = max(1, math.ceil(top / step - 1e-9))
    return step * steps, steps


def _label(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _open(title: str, width: float, height: float) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{_n(width)}" height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'aria-label="{_e(title)}" font-family="sans-serif" font-size="{_FONT}">',
        f"<title>{_e(title)}</title>",
    ]


def _empty(title: str, width: float) -> str:
    parts = _open(title, width, 40)
    parts.append(f'<text x="{_PAD}" y="24" fill="#555">{_e("no data · 无数据")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(
    names: Sequence[str], x: float, y: float, colours: Sequence[str] = PALETTE
) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        colour = colours[i % len(colours)]
        parts.append(
            f'<rect x="{_n(x)}" y="{_n(y - 10)}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{_n(x + 14)}" y="{_n(y)}">{_e(name)}</text>'
        )
        x += 24 + _width(name) * _FONT
    return parts


def bar_chart(
    title: str, items: Sequence[tuple[str, float]], *, width: int = 640, unit: str = ""
) -> str:
    """Horizontal bars, one per ``(label, value)``, in the given order, values written at
    the bar's end (with ``unit``)."""
    return stacked_bar_chart(
        title,
        [label for label, _ in items],
        [(unit, [value for _, value in items])],
        width=width,
        legend=False,
    )


def stacked_bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    width: int = 640,
    legend: bool = True,
    colours: Sequence[str] = PALETTE,
) -> str:
    """Horizontal bars, one per category, each split into the ``series`` (name, values per
    category) in ``colours`` order; the total is written at the bar's end."""
    if not categories or not any(v > 0 for _, values in series for v in values):
        return _empty(title, width)
    label_width = min(_LABEL_UNITS, max(_width(c) for c in categories)) * _FONT + _PAD
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    top = _nice(max(totals))
    value_space = 8 + _width(_label(max(totals))) * _FONT
    plot = max(40.0, width - label_width - value_space - 2 * _PAD)
    head = 26 if legend else 6
    height = head + _ROW * len(categories) + _PAD
    parts = _open(title, width, height)
    if legend:
        parts += _legend([name for name, _ in series], _PAD, 16, colours)
    x0 = _PAD + label_width
    parts.append(
        f'<line x1="{_n(x0)}" y1="{_n(head - 2)}" x2="{_n(x0)}" '
        f'y2="{_n(height - _PAD + 2)}" stroke="#999"/>'
    )
    for i, category in enumerate(categories):
        y = head + i * _ROW
        parts.append(
            f'<text x="{_n(x0 - 4)}" y="{_n(y + _BAR - 2)}" text-anchor="end">'
            f"{_e(_clip(category))}</text>"
        )
        x = x0
        for j, (name, values) in enumerate(series):
            value = values[i]
            if value <= 0:
                continue
            w = plot * value / top
            parts.append(
                f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_BAR}" '
                f'fill="{colours[j % len(colours)]}"><title>{_e(category)}: {_e(name)} '
                f"{_e(_label(value))}</title></rect>"
            )
            x += w
        parts.append(f'<text x="{_n(x + 4)}" y="{_n(y + _BAR - 2)}">{_e(_label(totals[i]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    width: int = 720,
    height: int = 240,
) -> str:
    """One line per series over the ``labels`` (x axis, at most about eight shown), with
    a zero-based y axis and a legend."""
    if not labels or not series:
        return _empty(title, width)
    values_seen = [v for _, values in series for v in values]
    top, steps = _axis(
        max(values_seen, default=0.0), whole=all(float(v).is_integer() for v in values_seen)
    )
    left, right, head, foot = 56.0, 12.0, 26.0, 30.0
    plot_w, plot_h = width - left - right, height - head - foot
    parts = _open(title, width, height)
    parts += _legend([name for name, _ in series], left, 16)
    for k in range(steps + 1):
        value = top * k / steps
        y = head + plot_h - plot_h * k / steps
        parts.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + plot_w)}" y2="{_n(y)}" '
            f'stroke="{"#999" if k == 0 else "#e3e3e3"}"/>'
            f'<text x="{_n(left - 4)}" y="{_n(y + 4)}" text-anchor="end">'
            f"{_e(_label(value))}</text>"
        )
    count = len(labels)
    step = plot_w / (count - 1) if count > 1 else 0.0

    def x_of(i: int) -> float:
        return left + (i * step if count > 1 else plot_w / 2)

    every = max(1, math.ceil(count / 8))
    for i in range(0, count, every):
        parts.append(
            f'<text x="{_n(x_of(i))}" y="{_n(height - foot + 16)}" text-anchor="middle">'
            f"{_e(labels[i])}</text>"
        )
    for j, (name, values) in enumerate(series):
        colour = PALETTE[j % len(PALETTE)]
        points = " ".join(
            f"{_n(x_of(i))},{_n(head + plot_h - plot_h * v / top)}" for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{_e(name)}</title></polyline>"
        )
        if count <= 62:
            for i, v in enumerate(values):
                parts.append(
                    f'<circle cx="{_n(x_of(i))}" cy="{_n(head + plot_h - plot_h * v / top)}" '
                    f'r="2" fill="{colour}"><title>{_e(labels[i])}: {_e(name)} '
                    f"{_e(_label(v))}</title></circle>"
                )
    parts.append("</svg>")
    return "".join(parts)
