"""The pictures of a published board drawn by libraries: the scatters behind the rankings
(matplotlib, Agg, SVG) and word clouds (wordcloud, PNG), written atomically. The confidence
intervals are inline SVG (fexbench.report.intervals): simple enough to draw directly,
and a hundred times faster than a matplotlib figure each.

Text in the pictures comes from result files; matplotlib is told not to read it as mathtext
(a `$` in a name would otherwise be parsed), and SVGs are shown through <img>, where a browser
runs no script inside them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fexbench.core.metrics import spearman  # noqa: E402
from fexbench.report.leaderboard import clean  # noqa: E402

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "fexbench", "text.parse_math": False, "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False}


def _save(fig, path: Path) -> Path:
    """Written straight into the site's private staging folder (publish swaps the whole folder in
    atomically), so no per-file temp file and fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="svg", metadata={"Date": None})
        return path
    finally:
        plt.close(fig)


def _label(text: Any, width: int = 28) -> str:
    text = clean(text)
    return text if len(text) <= width else text[:width - 1] + "…"


@dataclass(frozen=True)
class ScatterSpec:
    """Which per-subject numbers of a task are the explanation's score and the measured truth."""
    score: str
    truth: str
    score_label: str
    truth_label: str


# The scatter behind each task's headline Spearman: explanation score against measured ground truth.
SCATTERS = {
    "waterbirds-spurious": ScatterSpec("background_score", "reliance", "background score of the explanation",
                                       "measured reliance on the background (counterfactual flip rate)"),
    "imagenet9-background": ScatterSpec("background_score_per_class", "per_class_bg_gap",
                                        "background score of the class's explanation",
                                        "measured per-class background gap"),
}


def _flat(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return [math.nan]


def scatter_points(per_subject_sets: Sequence[Mapping[str, Any]], spec: ScatterSpec) -> list[tuple[list, list]]:
    """(scores, truths) per replicate, paired entry by entry (a per-class list pairs class by class)."""
    out = []
    for per_subject in per_subject_sets:
        xs, ys = [], []
        for subject in sorted(per_subject or {}):
            row = per_subject[subject]
            if not isinstance(row, Mapping) or spec.score not in row or spec.truth not in row:
                continue
            x, y = _flat(row[spec.score]), _flat(row[spec.truth])
            if len(x) != len(y):
                continue
            for a, b in zip(x, y):
                if math.isfinite(a) and math.isfinite(b):
                    xs.append(a)
                    ys.append(b)
        out.append((xs, ys))
    return out


def scatter_svg(path: Path, panels: Sequence[tuple[str, list[tuple[list, list]]]], spec: ScatterSpec,
                kinds: Mapping[str, str] | None = None) -> Path:
    """One panel per explainer: every subject (or class) as a point, one colour per replicate
    (the legend, top right, names them), with the Spearman rho of the points in the panel's title;
    a control's or the oracle's panel says so in its title (`kinds`: explainer -> role, from code).
    Margins are fixed in inches, wide enough for the wrapped axis labels at any panel count."""
    import textwrap

    kinds = kinds or {}
    n = max(1, len(panels))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    left_in, right_in, top_in, bottom_in = 1.2, 0.15, 0.55, 0.62
    width, height = 2.9 * cols + left_in + right_in, 2.3 * rows + top_in + bottom_in + 0.45 * (rows - 1)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, sharey=True)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        handles: dict[str, Any] = {}
        for ax, (label, reps) in zip(axes.flat, panels):
            all_x = [x for xs, _ in reps for x in xs]
            all_y = [y for _, ys in reps for y in ys]
            for r, (xs, ys) in enumerate(reps):
                handles.setdefault(f"replicate {r}", ax.scatter(xs, ys, s=14, alpha=0.75, color=f"C{r % 10}"))
            rho = spearman(all_x, all_y) if len(all_x) > 1 else math.nan
            kind = kinds.get(label, "method")
            name = _label(label, 22) + (f" ({kind})" if kind in ("control", "oracle") else "")
            ax.set_title(f"{name}  ρ={rho:.2f}" if math.isfinite(rho) else name, fontsize=9)
            ax.set_xlabel(textwrap.fill(_label(spec.score_label, 60), 34), fontsize=8)
            ax.grid(color="#eeeeee")
        for ax in axes[:, 0]:
            ax.set_ylabel(textwrap.fill(_label(spec.truth_label, 70), 26), fontsize=8)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="upper right", bbox_to_anchor=(1 - 0.02 / cols, 1.0),
                       ncol=min(len(handles), 5), frameon=False, fontsize=7, handletextpad=0.2, columnspacing=0.8,
                       title="each point: a subject (or class); colour: replicate", title_fontsize=7)
        # fixed margins in inches: tight_layout measures every label and costs more than the drawing
        fig.subplots_adjust(left=left_in / width, right=1 - right_in / width, bottom=bottom_in / height,
                            top=1 - top_in / height, wspace=0.12, hspace=0.45 / 2.3 + 0.2)
        return _save(fig, path)


def cloud_png(path: Path, weights: Mapping[str, float], width: int = 320, height: int = 180) -> Path:
    """A word cloud (font size proportional to weight) of the positive weights."""
    from wordcloud import WordCloud

    words = {clean(w)[:40]: float(v) for w, v in weights.items() if isinstance(v, (int, float)) and v > 0}
    if not words:
        raise ValueError("no positive weights to draw")
    cloud = WordCloud(width=width, height=height, background_color="white", random_state=0, max_words=40,
                      collocations=False, prefer_horizontal=0.95).generate_from_frequencies(words)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud.to_image().save(path, format="PNG")
    return path
