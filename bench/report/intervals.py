"""Confidence intervals drawn as inline SVG: one row per explainer, the point estimate and its 95%
CI on the metric's own range, coloured by rank group, with the chance level dashed and a legend
in the picture itself (every colour and marker it uses, nothing else).

Colours: a compared method by the best end of its rank interval, dark to light blue (rank 1 the
darkest); a control grey with a square marker; the oracle amber with a diamond; a method that
could not be ranked (no paired comparison) white with a grey outline.

Built with `markup.el` like the pages, so every label is escaped text; a matplotlib figure per
metric cost about a second each on a loaded machine, this costs nothing and needs no file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from fexbench.core.metrics import MetricValue
from fexbench.report.markup import Html, el

GROUP_COLOURS = ("#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#c6dbef")  # best rank 1, 2, ...
CONTROL = "#8c8c8c"
ORACLE = "#d08c00"
UNRANKED = "#ffffff"
WIDTH, LABEL_W, ROW_H, TOP, BOTTOM = 620, 210, 20, 26, 34
LEGEND_ROW = 16


@dataclass(frozen=True)
class Interval:
    label: str
    metric: MetricValue
    rank: str  # a rank interval "[1, 3]" or "2" (with "; beats ..."), "-" (a control, the oracle, not ranked)
    kind: str = "method"  # "method" | "control" | "oracle", from the code (fexbench.analysis.comparisons.role)


def _group(rank: str) -> int | None:
    """The best end of a rank interval ("[2, 4]" -> 2), None when unranked."""
    import re

    found = re.match(r"\[?(\d+)", rank)
    return int(found.group(1)) if found else None


def _colour(rank: str, kind: str = "method") -> str:
    """A row's colour: its kind for a control or the oracle, else its rank group (white unranked)."""
    if kind == "oracle":
        return ORACLE
    if kind == "control":
        return CONTROL
    group = _group(rank)
    return GROUP_COLOURS[min(group - 1, len(GROUP_COLOURS) - 1)] if group else UNRANKED


def _marker(kind: str, cx: str, cy: str, colour: str, cls: str = "estimate") -> Html:
    """circle: a method; square: a control; diamond: the oracle."""
    x, y = float(cx), float(cy)
    if kind == "control":
        return el("rect", x=f"{x - 4:.1f}", y=f"{y - 4:.1f}", width="8", height="8", fill=colour, stroke="#000",
                  stroke_width="0.6", class_=cls)
    if kind == "oracle":
        points = f"{x:.1f},{y - 5.5:.1f} {x + 5.5:.1f},{y:.1f} {x:.1f},{y + 5.5:.1f} {x - 5.5:.1f},{y:.1f}"
        return el("polygon", points=points, fill=colour, stroke="#000", stroke_width="0.6", class_=cls)
    return el("circle", cx=cx, cy=cy, r="4.5", fill=colour, stroke="#000", stroke_width="0.6", class_=cls)


def legend_entries(rows: Sequence[Interval], chance: bool) -> list[tuple[str, str, str]]:
    """(kind, colour, label) of every colour and marker the rows use, in a fixed order."""
    groups = sorted({min(g, len(GROUP_COLOURS)) for r in rows if r.kind == "method" and (g := _group(r.rank))})
    out = [("method", GROUP_COLOURS[g - 1], f"best rank {g}" + ("+" if g == len(GROUP_COLOURS) else ""))
           for g in groups]
    if any(r.kind == "method" and _group(r.rank) is None for r in rows):
        out.append(("method", UNRANKED, "method, not ranked"))
    if any(r.kind == "control" for r in rows):
        out.append(("control", CONTROL, "control (not ranked)"))
    if any(r.kind == "oracle" for r in rows):
        out.append(("oracle", ORACLE, "oracle (ceiling)"))
    if chance:
        out.append(("chance", "#777", "chance"))
    return out


def _legend(entries: Sequence[tuple[str, str, str]], top: float) -> tuple[Html, int]:
    """The legend as an SVG group laid out in rows across the picture, and its height."""
    items, x, y = [], 8.0, top + 10
    for kind, colour, label in entries:
        width = 26 + 6.6 * len(label)
        if x + width > WIDTH - 4 and x > 8:
            x, y = 8.0, y + LEGEND_ROW
        if kind == "chance":
            swatch = el("line", x1=f"{x:.1f}", x2=f"{x + 12:.1f}", y1=f"{y:.1f}", y2=f"{y:.1f}", stroke=colour,
                        stroke_dasharray="4 3")
        else:
            swatch = _marker(kind, f"{x + 6:.1f}", f"{y:.1f}", colour, cls="swatch")
        items.append(el("g", swatch, el("text", label, x=f"{x + 16:.1f}", y=f"{y + 4:.1f}", font_size="10.5",
                                        fill="#333"), class_="legend-entry"))
        x += width
    return el("g", *items, class_="legend"), int(y - top + 10)


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
    chance = metric.chance is not None and math.isfinite(metric.chance)
    if chance:
        parts.append(el("line", x1=x(metric.chance), x2=x(metric.chance), y1=str(TOP - 6),
                        y2=str(height - BOTTOM + 4), stroke="#777", stroke_dasharray="4 3",
                        class_="chance"))
    for i, row in enumerate(rows):
        m, y = row.metric, TOP + ROW_H * i + ROW_H / 2
        colour = _colour(row.rank, row.kind)
        tag = {"oracle": "oracle", "control": "control"}.get(row.kind) or row.rank.split(";")[0].strip() or "-"
        tag = "not ranked" if tag == "-" else tag
        shapes = [el("title", f"{row.label} ({row.kind}): {_fmt(m.value)} [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}], "
                              f"rank {row.rank}"),
                  el("text", f"{_short(row.label, 24)} ({tag})", x=str(LABEL_W), y=f"{y + 4:.1f}", font_size="11",
                     text_anchor="end")]
        if math.isfinite(m.ci_low) and math.isfinite(m.ci_high):
            shapes.append(el("line", x1=x(m.ci_low), x2=x(m.ci_high), y1=f"{y:.1f}", y2=f"{y:.1f}",
                             stroke=colour if colour != UNRANKED else "#9a9a9a", stroke_width="4", class_="ci-bar"))
        if math.isfinite(m.value):
            shapes.append(_marker(row.kind, x(m.value), f"{y:.1f}", colour))
        parts.append(el("g", *shapes, class_="interval", data_kind=row.kind))
    legend, legend_h = _legend(legend_entries(rows, chance), height)
    parts.append(legend)
    height += legend_h
    return el("svg", *parts, xmlns="http://www.w3.org/2000/svg", width=str(WIDTH), height=str(height),
              viewBox=f"0 0 {WIDTH} {height}", role="img", aria_label=title, class_="intervals",
              font_family="system-ui, sans-serif")
