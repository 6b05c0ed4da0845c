"""Two small SVG charts drawn on the server: a line chart over days, a grouped bar chart.

Hand-built rather than pygal (docs/design.md): pygal adds a legacy import hook to
``sys.meta_path`` when imported (an ``ImportWarning`` on every later import, an error under
``-W error``) and links a script from a CDN by default. These charts need axes, a grid,
series and a legend — about a hundred lines — and come out as markup the page inlines,
styled by attributes only (the page's CSP allows no inline styles), every text escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

#: Series colours (distinguishable for the common colour-vision deficiencies).
COLORS = ("#1f5fbf", "#d9822b", "#2e8540", "#8e44ad")
WIDTH, HEIGHT = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 70


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover (the loop always returns)


def _frame(title: str, top: float, plot_w: float, plot_h: float) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="chart-svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = top * tick / 4
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e3e6eb" stroke-width="1"/>'
        )
        label = f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#5b6472">{label}</text>'
        )
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    x = LEFT
    for index, name in enumerate(names):
        color = COLORS[index % len(COLORS)]
        y = HEIGHT - 14
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(
            f'<text x="{x + 14}" y="{y}" font-size="12" fill="#1d2430">{escape(name)}</text>'
        )
        x += 24 + 8 * len(name)
    return parts


def _x_label(x: float, text: str) -> str:
    y = TOP + (HEIGHT - TOP - BOTTOM) + 14
    return (
        f'<text x="{x:.1f}" y="{y}" font-size="11" fill="#5b6472" text-anchor="end" '
        f'transform="rotate(-30 {x:.1f} {y})">{escape(text)}</text>'
    )


def line_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> str:
    """One line per series over ``labels`` (at most ~12 labels are written)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((max(v, default=0) for v in series.values()), default=0))
    parts = _frame(title, top, plot_w, plot_h)
    count = max(len(labels), 1)
    step = plot_w / max(count - 1, 1)
    every = max(1, count // 12)
    for index, label in enumerate(labels):
        if index % every == 0:
            parts.append(_x_label(LEFT + index * step, label))
    for number, (name, values) in enumerate(series.items()):
        color = COLORS[number % len(COLORS)]
        points = " ".join(
            f"{LEFT + i * step:.1f},{TOP + plot_h - plot_h * v / top:.1f}"
            for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
        for i, v in enumerate(values):
            x, y = LEFT + i * step, TOP + plot_h - plot_h * v / top
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(name)} {escape(labels[i])}: {v:g}</title></circle>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> str:
    """Grouped bars: for each label, one bar per series."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((max(v, default=0) for v in series.values()), default=0))
    parts = _frame(title, top, plot_w, plot_h)
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = min(group_w * 0.8 / max(len(series), 1), 48.0)  # a few offers: no wide slabs
    for g, label in enumerate(labels):
        middle = LEFT + g * group_w + group_w / 2
        parts.append(_x_label(middle, label))
        for s, (name, values) in enumerate(series.items()):
            value = values[g]
            height = plot_h * value / top
            x = middle - bar_w * len(series) / 2 + s * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - height:.1f}" width="{bar_w:.1f}" '
                f'height="{height:.1f}" fill="{COLORS[s % len(COLORS)]}">'
                f"<title>{escape(label)} — {escape(name)}: {value:g}</title></rect>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)
