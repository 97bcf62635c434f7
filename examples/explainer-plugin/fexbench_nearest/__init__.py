"""nearest-words: name a target by the vocabulary words whose CLIP text embedding is nearest to
what its top probe images share and the other probe images lack.

For a target, take the CLIP image embeddings of its top `top_fraction` probe images (by the
target's score: class margin, unit or direction activation), subtract the mean embedding of the
whole probe (so what every image shows, e.g. "a photo", cancels), and rank the vocabulary by
cosine with that contrast vector. Weights are the positive cosines of the `n_words` best words.
Deterministic: no seed is used. It reads the shared CLIP, so it declares "clip".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target
from fexbench.explainers import helpers


class NearestWords(Explainer):
    name = "nearest-words"
    description = "plugin example: vocabulary words nearest (CLIP) to the contrast of a target's top images"
    version = 1

    def __init__(self, top_fraction: float = 0.1, n_words: int = 5):
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], not {top_fraction}")
        self.top_fraction, self.n_words = top_fraction, n_words

    def resource_names(self) -> tuple[str, ...]:
        return ("clip",)

    def fit(self, subject: Subject, context: Context) -> "NearestWords":
        clip = helpers.clip(context)
        self._images = helpers.probe_image_embeddings(context, clip)
        self._words = sorted(set(context.vocabulary))
        self._texts = clip.encode_texts(self._words)
        return self

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        if not hasattr(self, "_texts"):
            self.fit(subject, context)
        out = []
        for target in targets:
            top, _ = helpers.top_images(target, context, self.top_fraction)
            contrast = self._images[top].mean(axis=0) - self._images.mean(axis=0)
            contrast = contrast / max(float(np.linalg.norm(contrast)), 1e-12)
            cosine = self._texts @ contrast
            best = np.argsort(-cosine, kind="stable")[:self.n_words]
            out.append(Explanation.from_weights(target, {self._words[i]: float(max(cosine[i], 0.0)) for i in best}))
        return out
