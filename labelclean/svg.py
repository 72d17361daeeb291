"""Small SVG charts drawn by hand, so the HTML report needs no plotting library.

A chart is a string of inline ``<svg>``: axes with round-number ticks, then lines, bars or
vertical markers in data coordinates. Every text is escaped; sizes are in CSS pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

WIDTH, HEIGHT = 390, 240
LEFT, RIGHT, TOP, BOTTOM = 50, 12, 44, 38  # margins around the plot area (title and legend on top)
COLORS = ("#1f6fb4", "#d2691e", "#2e8b57", "#b22222")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (multiples of 1, 2 or 5 × 10^k) covering [lo, hi].

    >>> nice_ticks(0, 0.93)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def _label(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:g}"


@dataclass
class Frame:
    """Maps data coordinates to pixels in the plot area; the ranges are the outer ticks."""

    x_ticks: list[float]
    y_ticks: list[float]

    def x(self, value: float) -> float:
        lo, hi = self.x_ticks[0], self.x_ticks[-1]
        return LEFT + (value - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        return HEIGHT - BOTTOM - (value - lo) / (hi - lo) * (HEIGHT - TOP - BOTTOM)

    def points(self, xs: Sequence[float], ys: Sequence[float]) -> str:
        return " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b in zip(xs, ys))


def _frame(xs: Sequence[float], ys: Sequence[float]) -> Frame:
    return Frame(nice_ticks(min(xs), max(xs)), nice_ticks(min(0.0, min(ys)), max(ys)))


def _svg(frame: Frame, body: list[str], title: str, x_label: str, y_label: str,
         legend: Sequence[tuple[str, str]]) -> str:
    """Wrap ``body`` in an SVG with grid, ticks, axis labels, a title and a legend of (name, color)."""
    parts = [(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
              f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'),
             f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>']
    for t in frame.y_ticks:
        y = frame.y(t)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 5}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_label(t)}</text>')
    for t in frame.x_ticks:
        x = frame.x(t)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 15}" class="tick" text-anchor="middle">'
                     f'{_label(t)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" '
                 f'class="axis"/>')
    parts += body
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" class="axis-label" '
                 f'text-anchor="middle">{escape(x_label)}</text>'
                 f'<text transform="translate(12 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" class="axis-label" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    x = LEFT
    for name, color in legend:  # one row under the title, left to right
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{color}"/>'
                     f'<text x="{x + 14}" y="33" class="tick">{escape(name)}</text>')
        x += 26 + 6 * len(name)
    return "".join(parts) + "</svg>"


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, x_label: str,
               y_label: str) -> str:
    """One polyline (with dots) per named ``(xs, ys)`` series, sharing axes."""
    xs = [x for xs, _ in series.values() for x in xs]
    ys = [y for _, ys in series.values() for y in ys]
    frame = _frame(xs, ys)
    body, legend = [], []
    for (name, (sx, sy)), color in zip(series.items(), COLORS):
        body.append(f'<polyline points="{frame.points(sx, sy)}" fill="none" stroke="{color}" stroke-width="2"/>')
        body += [f'<circle cx="{frame.x(a):.1f}" cy="{frame.y(b):.1f}" r="2.5" fill="{color}"/>'
                 for a, b in zip(sx, sy)]
        legend.append((name, color))
    return _svg(frame, body, title, x_label, y_label, legend)


def histogram_chart(values: np.ndarray, *, bins: int, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                    marker: tuple[str, float] | None, title: str, x_label: str) -> str:
    """A density histogram of ``values`` with density ``curves`` ({name: (xs, ys)}) drawn over it,
    and an optional dashed vertical ``marker`` (name, x)."""
    density, edges = np.histogram(values, bins=bins, density=True)
    peak = max([float(density.max())] + [float(ys.max()) for _, ys in curves.values()])
    frame = Frame(nice_ticks(float(edges[0]), float(edges[-1])), nice_ticks(0.0, peak))
    body = [f'<rect x="{frame.x(a):.1f}" y="{frame.y(h):.1f}" width="{max(frame.x(b) - frame.x(a) - 1, 0.5):.1f}" '
            f'height="{frame.y(0) - frame.y(h):.1f}" class="bar"/>' for a, b, h in zip(edges[:-1], edges[1:], density)]
    legend = []
    for (name, (xs, ys)), color in zip(curves.items(), COLORS[2:] + COLORS[:2]):
        body.append(f'<polyline points="{frame.points(xs, ys)}" fill="none" stroke="{color}" stroke-width="2"/>')
        legend.append((name, color))
    if marker is not None:
        name, at = marker
        x = frame.x(at)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="marker"/>')
        legend.append((name, "#444"))
    return _svg(frame, body, title, x_label, "density", legend)
