"""The admin dashboard's charts: plain inline SVG built here with escaped labels, no JavaScript, no chart
library. The numbers come from `console.selectors.build_dashboard`."""

from __future__ import annotations

import datetime as dt

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .selectors import Dashboard

PALETTE = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#9e9e9e",
    "other": "#1565c0",
    "p50": "#1565c0",
    "p95": "#ef6c00",
    "calls": "#5e35b1",
    "errors": "#c62828",
}


def _nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above `value`, so axis ticks land on round numbers."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def _round(args):
    # Coordinates are floats; one decimal is plenty for a pixel grid and keeps the SVG small.
    return tuple(f"{a:.1f}" if isinstance(a, float) else a for a in args)


def _html(template: str, *args) -> SafeString:
    return format_html(template, *_round(args))


def _html_join(template: str, rows) -> SafeString:
    return format_html_join("", template, (_round(row) for row in rows))


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def _svg(width: int, height: int, label: str, body: SafeString) -> SafeString:
    return _html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="kw-chart" role="img" aria-label="{}" '
        'viewBox="0 0 {} {}" width="{}" height="{}" font-family="sans-serif" font-size="11">'
        "<title>{}</title>{}</svg>",
        label,
        width,
        height,
        width,
        height,
        label,
        body,
    )


def _y_axis(left: int, top: int, plot_w: int, plot_h: int, y_max: float, unit: str = "") -> SafeString:
    # Five intervals when the maximum is a multiple of 5 (5, 10, 50...), else four (2, 20...): round ticks.
    n = 5 if y_max % 5 == 0 else 4
    ticks = []
    for i in range(n + 1):
        value = y_max * i / n
        y = top + plot_h - plot_h * i / n
        ticks.append(
            _html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ccc" stroke-width="0.5"/>'
                '<text x="{}" y="{}" text-anchor="end" fill="#666">{}{}</text>',
                left,
                left + plot_w,
                y,
                y,
                left - 4,
                y + 4,
                _fmt(value),
                unit,
            )
        )
    return mark_safe("".join(ticks))


def _x_labels(categories: list[str], left: int, slot: float, baseline: int) -> SafeString:
    every = max(1, -(-len(categories) // 12))  # at most ~12 labels, whatever the range
    return _html_join(
        '<text x="{}" y="{}" text-anchor="middle" fill="#666">{}</text>',
        (
            (left + slot * (i + 0.5), baseline + 14, label)
            for i, label in enumerate(categories)
            if i % every == 0 or i == len(categories) - 1
        ),
    )


def _legend(series: list[tuple[str, str]], x: int, y: int) -> SafeString:
    return _html_join(
        '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" fill="#333">{}</text>',
        ((x + 90 * i, y, color, x + 90 * i + 14, y + 9, name) for i, (name, color) in enumerate(series)),
    )


def stacked_bar_chart(
    categories: list[str],
    series: list[tuple[str, list[float], str]],
    label: str,
    width: int = 760,
    height: int = 240,
) -> SafeString:
    """Vertical bars, one per category, stacked from `series` = [(name, values, color), ...]."""
    left, top, right, bottom = 44, 24, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for _, values, _ in series) for i in range(len(categories))]
    y_max = _nice_max(max(max(totals, default=0), 4))  # counts: never a 0.25 tick
    slot = plot_w / max(1, len(categories))
    bar_w = max(1.0, slot * 0.8)
    bars = []
    for i, category in enumerate(categories):
        y = top + plot_h
        for name, values, color in series:
            value = values[i]
            if not value:
                continue
            h = plot_h * value / y_max
            y -= h
            bars.append(
                _html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} {}</title></rect>',
                    left + slot * i + (slot - bar_w) / 2,
                    y,
                    bar_w,
                    h,
                    color,
                    category,
                    _fmt(value),
                    name,
                )
            )
    body = mark_safe(
        _y_axis(left, top, plot_w, plot_h, y_max)
        + "".join(bars)
        + _x_labels(categories, left, slot, top + plot_h)
        + _legend([(name, color) for name, _, color in series], left, 4)
    )
    return _svg(width, height, label, body)


def line_chart(
    categories: list[str],
    series: list[tuple[str, list[float | None], str]],
    label: str,
    unit: str = "",
    width: int = 760,
    height: int = 240,
) -> SafeString:
    """One polyline per series; a None value breaks the line (no data that day) and gets no dot."""
    left, top, right, bottom = 52, 24, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max((v for _, values, _ in series for v in values if v is not None), default=0))
    slot = plot_w / max(1, len(categories))
    parts = [_y_axis(left, top, plot_w, plot_h, y_max, unit)]
    for name, values, color in series:
        segment: list[str] = []
        segments = [segment]
        for i, value in enumerate(values):
            if value is None:
                segment = []
                segments.append(segment)
                continue
            x, y = left + slot * (i + 0.5), top + plot_h - plot_h * value / y_max
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(
                _html(
                    '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{}: {} {}{}</title></circle>',
                    x,
                    y,
                    color,
                    categories[i],
                    name,
                    _fmt(round(value, 2)),
                    unit,
                )
            )
        for points in segments:
            if len(points) > 1:
                parts.append(
                    _html(
                        '<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>',
                        " ".join(points),
                        color,
                    )
                )
    parts.append(_x_labels(categories, left, slot, top + plot_h))
    parts.append(_legend([(name, color) for name, _, color in series], left, 4))
    return _svg(width, height, label, mark_safe("".join(parts)))


def horizontal_bar_chart(
    rows: list[tuple[str, list[tuple[str, float, str]]]], label: str, width: int = 760
) -> SafeString:
    """One row per label (e.g. a tool name) with side-by-side bars: rows = [(label, [(name, value, color)])]."""
    left, top, right, row_h = 160, 24, 60, 22
    height = top + row_h * max(1, len(rows)) + 8
    plot_w = width - left - right
    x_max = _nice_max(max((v for _, bars in rows for _, v, _ in bars), default=0))
    parts = []
    for r, (row_label, bars) in enumerate(rows):
        y = top + r * row_h
        # Long or hostile names are cut for the axis; the full (escaped) name stays in the tooltip.
        short = row_label if len(row_label) <= 24 else row_label[:23] + "…"
        parts.append(
            _html(
                '<text x="{}" y="{}" text-anchor="end" fill="#333">{}<title>{}</title></text>',
                left - 6,
                y + 14,
                short,
                row_label,
            )
        )
        bar_h = (row_h - 6) / max(1, len(bars))
        for b, (name, value, color) in enumerate(bars):
            w = plot_w * value / x_max
            parts.append(
                _html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} {}</title></rect>'
                    '<text x="{}" y="{}" fill="#333" font-size="10">{}</text>',
                    left,
                    y + 2 + b * bar_h,
                    w,
                    bar_h,
                    color,
                    row_label,
                    _fmt(value),
                    name,
                    left + w + 3,
                    y + 2 + (b + 1) * bar_h - 1,
                    _fmt(value),
                )
            )
    series = {name: color for _, bars in rows for name, _, color in bars}
    parts.append(_legend(list(series.items()), left, 4))
    return _svg(width, height, label, mark_safe("".join(parts)))


def _seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def render_charts(board: Dashboard) -> dict[str, SafeString]:
    """The dashboard's four plots as inline SVG strings, keyed by name."""
    days = [d.day.strftime("%m-%d") for d in board.per_day]
    return {
        "turns_per_day": stacked_bar_chart(
            days,
            [
                ("done", [d.done for d in board.per_day], PALETTE["done"]),
                ("failed", [d.failed for d in board.per_day], PALETTE["failed"]),
                ("cancelled", [d.cancelled for d in board.per_day], PALETTE["cancelled"]),
                ("active", [d.other for d in board.per_day], PALETTE["other"]),
            ],
            label=f"Turns per day, last {board.days} days",
        ),
        "failures_per_day": stacked_bar_chart(
            days,
            [("failed", [d.failed for d in board.per_day], PALETTE["failed"])],
            label=f"Failed turns per day, last {board.days} days",
            height=180,
        ),
        "duration": line_chart(
            days,
            [
                ("p50", [_seconds(d.p50) for d in board.per_day], PALETTE["p50"]),
                ("p95", [_seconds(d.p95) for d in board.per_day], PALETTE["p95"]),
            ],
            label="Turn duration per day (p50, p95), seconds",
            unit="s",
        ),
        "tool_calls": horizontal_bar_chart(
            [
                (t.name, [("calls", t.calls, PALETTE["calls"]), ("errors", t.errors, PALETTE["errors"])])
                for t in board.tools
            ],
            label="Tool calls by tool",
        ),
    }
