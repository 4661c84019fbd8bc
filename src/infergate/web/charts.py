"""Bar charts drawn on the server as SVG: no script, no library, readable by screen readers (each bar has a
<title>), and testable by counting the bars."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

__all__ = ["bar_chart"]

_W, _H, _PAD, _LABEL = 640, 180, 4, 34
_WIDEST = 90  # a bar, however few there are


def bar_chart(bars: Sequence[tuple[str, int]], *, title: str, unit: str) -> Markup:
    """One bar per (label, value), scaled to the largest; an empty chart says so instead."""
    if not bars:
        return Markup('<p class="empty">No {} yet.</p>').format(unit)
    top = max(value for _, value in bars) or 1
    width = min((_W - _PAD) / len(bars), _WIDEST)
    parts = [
        Markup('<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" data-bars="{}">').format(
            _W, _H + _LABEL, title, len(bars)
        ),
        Markup("<title>{}</title>").format(title),
    ]
    for i, (label, value) in enumerate(bars):
        h = round((_H - 16) * value / top, 1)
        x = round(_PAD + i * width, 1)
        w = round(max(width - _PAD, 1), 1)
        parts.append(
            Markup(
                '<g class="bar"><rect x="{}" y="{}" width="{}" height="{}"><title>{}: {} {}</title></rect>'
                '<text x="{}" y="{}" class="value">{}</text>'
                '<text x="{}" y="{}" class="label">{}</text></g>'
            ).format(
                x, _H - h, w, h, label, value, unit,
                x + w / 2, _H - h - 3, value,
                x + w / 2, _H + 14, _short(label),
            )
        )  # fmt: skip
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def _short(label: str) -> str:
    """Model ids are long: the chart shows the name after the organisation (the tooltip has all of it)."""
    name = label.rsplit("/", 1)[-1]
    return name if len(name) <= 18 else name[:17] + "…"


