"""Word-cloud pictures of explanations, as TExplain shows them: font size proportional to weight,
with a title saying what is explained and what the task measured for that subject."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from fexbench.core.cache import atomic_write
from fexbench.core.contract import Explanation
from fexbench.core.text import display_text


def cloud_layout(weights: dict[str, float], width: int, height: int, seed: int = 0) -> Any:
    """A wordcloud.WordCloud whose font sizes are proportional to the weights (up to rounding).

    wordcloud's defaults bend sizes (relative_scaling 0.5) and, when a word does not fit, shrink it
    and every word after it, so two equal weights could be drawn at different sizes. Here the
    scaling is linear and the largest font is lowered until every word is placed and equal
    weights have equal sizes (tests/test_cli.py checks the layout).
    """
    from wordcloud import WordCloud

    max_font = height
    while True:
        cloud = WordCloud(width=width, height=height, background_color="white", random_state=seed,
                          collocations=False, relative_scaling=1.0, max_font_size=max_font, min_font_size=4,
                          font_step=1, max_words=len(weights), prefer_horizontal=1.0)
        cloud.generate_from_frequencies(weights)
        placed = {word: size for (word, _), size, *_ in cloud.layout_}
        if len(placed) == len(weights) and _sizes_follow_weights(placed, weights):
            return cloud
        if max_font <= 8:
            return cloud
        max_font = int(max_font * 0.85)


def _sizes_follow_weights(sizes: dict[str, int], weights: dict[str, float]) -> bool:
    """Equal weights at equal sizes, and a heavier word never smaller than a lighter one."""
    ranked = sorted(weights, key=lambda w: -weights[w])
    for heavier, lighter in zip(ranked, ranked[1:]):
        if weights[heavier] == weights[lighter] and sizes[heavier] != sizes[lighter]:
            return False
        if sizes[heavier] < sizes[lighter]:
            return False
    return True


def word_cloud_png(explanation: Explanation, path: str | Path, title: str = "", width: int = 640, height: int = 360,
                   seed: int = 0) -> Path:
    """Draw the explanation's weighted words under `title` and write a PNG atomically."""
    from PIL import Image, ImageDraw, ImageFont

    weights: dict[str, float] = {}
    for w, v in explanation.concepts:  # drawn as shown: bidi overrides and invisible characters removed
        shown = display_text(w).strip()
        if v > 0 and shown:
            weights[shown] = weights.get(shown, 0.0) + float(v)
    if not weights:
        raise ValueError(f"{explanation.target.key}: the explanation has no positive weights to draw")
    cloud = cloud_layout(weights, width, height, seed).to_image()
    lines = textwrap.wrap(display_text(title), width=max(20, width // 8)) if title else []
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    line_height = 20
    header = line_height * len(lines) + (10 if lines else 0)
    picture = Image.new("RGB", (width, height + header), "white")
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((8, 5 + i * line_height), line, fill="black", font=font)
    picture.paste(cloud, (0, header))
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def cloud_title(explainer: str, subject: str, target: str, task: str, ground_truth: dict[str, Any]) -> str:
    """"falcon on cnn-rho0.95-s0, target round (waterbirds-spurious); measured: reliance 0.95, ..."."""
    shown = []
    for key, value in ground_truth.items():
        if isinstance(value, bool) or isinstance(value, str):
            shown.append(f"{key.replace('_', ' ')} {value}")
        elif isinstance(value, (int, float)):
            shown.append(f"{key.replace('_', ' ')} {value:.3g}")
        if len(shown) == 6:
            break
    measured = f"; measured: {', '.join(shown)}" if shown else ""
    return f"{explainer} on {subject}, target {target} ({task}){measured}"
