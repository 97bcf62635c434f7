"""Word-cloud pictures of explanations (font size proportional to weight), as TExplain shows them."""
from __future__ import annotations

from pathlib import Path

from fexbench.core.cache import atomic_write
from fexbench.core.contract import Explanation


def word_cloud_png(explanation: Explanation, path: str | Path, width: int = 640, height: int = 360,
                   seed: int = 0) -> Path:
    """Draw the explanation's weighted words with the `wordcloud` package and write a PNG atomically."""
    from wordcloud import WordCloud  # imported here: only this command needs it

    weights = {w: v for w, v in explanation.concepts if v > 0}
    if not weights:
        raise ValueError(f"{explanation.target.key}: the explanation has no positive weights to draw")
    cloud = WordCloud(width=width, height=height, background_color="white", random_state=seed,
                      collocations=False).generate_from_frequencies(weights)
    return atomic_write(path, lambda tmp: cloud.to_image().save(tmp, format="PNG"))
