"""Confidence intervals drawn as inline SVG: one row per explainer, the point estimate and its 95%
CI on the metric's own range, coloured by rank group, with the chance level dashed.

Built with `markup.el` like the pages, so every label is escaped text; a matplotlib figure per
metric cost about a second each on a loaded machine, this costs nothing and needs no file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from fexbench.core.metrics import MetricValue
from fexbench.report.markup import Html, el

GROUP_COLOURS = ("#1b7837", "#5aae61", "#8fc98a", "#9970ab", "#762a83", "#40004b")
UNRANKED = "#9a9a9a"
WIDTH, LABEL_W, ROW_H, TOP, BOTTOM = 620, 210, 20, 26, 34


@dataclass(frozen=True)
class Interval:
    label: str
    metric: MetricValue
    rank: str  # a rank interval "[1, 3]" or "2" (with "; beats ..."), "-" (a control, the oracle, not ranked)


def _colour(rank: str) -> str:
    """The colour of a rank interval's best end ("[2, 4]" -> the second colour); grey unranked."""
    import re

    found = re.match(r"\[?(\d+)", rank)
    return GROUP_COLOURS[min(int(found.group(1)) - 1, len(GROUP_COLOURS) - 1)] if found else UNRANKED


def _fmt(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def intervals_svg(rows: Sequence[Interval], title: str) -> Html:
    """An <svg> element (for inline use) of one metric's intervals, rows in the given order."""
    if not rows:
        return el("p", "nothing to draw", class_="note")
    metric = rows[0].metric
    low, high = metric.value_range
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        finite = [v for r in rows for v in (r.metric.ci_low, r.metric.ci_high, r.metric.value) if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        high = high if high > low else low + 1.0
    x0, x1 = LABEL_W + 10, WIDTH - 20
    height = TOP + ROW_H * len(rows) + BOTTOM

    def x(v: float) -> str:
        v = min(max(v, low), high)
        return f"{x0 + (v - low) / (high - low) * (x1 - x0):.1f}"

    parts = [el("title", title),
             el("text", _short(title, 80), x="4", y="15", font_size="13", font_weight="600")]
    for i in range(5):  # the axis: five ticks over the metric's range
        v = low + (high - low) * i / 4
        parts.append(el("line", x1=x(v), x2=x(v), y1=str(TOP - 4), y2=str(height - BOTTOM + 4),
                        stroke="#e6e6e6"))
        parts.append(el("text", f"{v:g}", x=x(v), y=str(height - BOTTOM + 16), font_size="10",
                        text_anchor="middle", fill="#555"))
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    parts.append(el("text", f"{_short(metric.name, 40)} ({direction})", x=str((x0 + x1) // 2),
                    y=str(height - 6), font_size="11", text_anchor="middle", fill="#333"))
    if metric.chance is not None and math.isfinite(metric.chance):
        parts.append(el("line", x1=x(metric.chance), x2=x(metric.chance), y1=str(TOP - 6),
                        y2=str(height - BOTTOM + 4), stroke="#777", stroke_dasharray="4 3",
                        class_="chance"))
    for i, row in enumerate(rows):
        m, y = row.metric, TOP + ROW_H * i + ROW_H / 2
        colour = _colour(row.rank)
        shapes = [el("title", f"{row.label}: {_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}], "
                              f"rank group {row.rank}"),
                  el("text", f"{_short(row.label)} ({row.rank})", x=str(LABEL_W), y=f"{y + 4:.1f}", font_size="11",
                     text_anchor="end")]
        if math.isfinite(m.ci_low) and math.isfinite(m.ci_high):
            shapes.append(el("line", x1=x(m.ci_low), x2=x(m.ci_high), y1=f"{y:.1f}", y2=f"{y:.1f}",
                             stroke=colour, stroke_width="4", class_="ci-bar"))
        if math.isfinite(m.value):
            shapes.append(el("circle", cx=x(m.value), cy=f"{y:.1f}", r="4.5", fill=colour, stroke="#000",
                             stroke_width="0.6", class_="estimate"))
        parts.append(el("g", *shapes, class_="interval"))
    return el("svg", *parts, xmlns="http://www.w3.org/2000/svg", width=str(WIDTH), height=str(height),
              viewBox=f"0 0 {WIDTH} {height}", role="img", aria_label=title, class_="intervals",
              font_family="system-ui, sans-serif")
