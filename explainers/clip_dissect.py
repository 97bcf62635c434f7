"""CLIP-Dissect (Oikarinen & Weng, ICLR 2023): name a unit by the concept whose CLIP image-text
similarity best matches the unit's top-activating probe images, relative to every other unit.

As in the reference code (Trustworthy-ML-Lab/CLIP-dissect, similarity.py):

- P(c | x) = softmax over concepts of `temperature` (a = 10) * cosine(CLIP image x, CLIP text c);
  concepts are bare words (the reference's default prompt).
- Soft-WPMI for unit k: its `top_k` (100) probe images by activation, image i (0-based rank) with
  soft membership p_i = p_start - i / top_k * (p_start - p_end) (0.998 falling towards 0.97);
  log P(c | B_k) = sum_i log(1 - p_i + p_i P(c | x_i) + 1e-7);
  log P(c) = logsumexp over all units of the layer of log P(c | B_k) - log K;
  score = log P(c | B_k) - lam * log P(c), lam = 1.
- Option `similarity="cos"`: the reference's plain cos_similarity, the cosine over probe images
  between the unit's activations and each concept's image-text similarities.

fexbench's targets: a class target's unit is its logit (the prior runs over all classes); a unit
target is a column of the probe features; a direction target's activation is features @ d, with
the prior over the units of the probe features. As in the reference, log P(c | B_k) is computed
for all units of a layer at once, once per fitted probe and layer (logits or features), and each
target reads its row, so explaining every unit of a layer costs one layer computation; a
direction adds one column. The reference reports the single best concept;
here the top `n_words` concepts, weighted by exp(score - best score) (the likelihood ratio
P(c|B)/P(c) relative to the best; for "cos", the cosine clipped at 0). With few units (a
2-class logit layer, a 64-unit penultimate layer) many concepts that one unit dominates tie at
the ceiling log K; ties are broken by log P(c|B_k), the unit's own evidence for the concept.
Concept set: context.vocabulary by default (the world's concept words with distractors); a word
list file (one word per line, e.g. the reference's data/20k.txt) through `concepts`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import logsumexp, softmax

from fexbench.resources.clip import cached_image_embeddings, resolve_clip
from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target
from fexbench.data.imageset import DataError
from fexbench.explainers.baselines import target_scores


def soft_membership(top_k: int, p_start: float = 0.998, p_end: float = 0.97) -> np.ndarray:
    return p_start - np.arange(top_k) / top_k * (p_start - p_end)


def log_p_concept_given_top(probs: np.ndarray, activations: np.ndarray, top_k: int = 100,
                            p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7,
                            chunk_bytes: int = 32 << 20) -> np.ndarray:
    """log P(c | B_k) for every unit (column of activations): (K, C).

    Units are processed in chunks (at most `chunk_bytes` of gathered probabilities at a time), each
    chunk as one vectorised gather, log and sum over its units' top images.
    """
    activations = np.atleast_2d(np.asarray(activations, dtype=np.float64).T).T  # (N, K)
    probs = np.asarray(probs, dtype=np.float64)
    n_units, n_concepts = activations.shape[1], probs.shape[1]
    top_k = min(top_k, len(activations))
    p = soft_membership(top_k, p_start, p_end)[:, None, None]
    offset = 1 - p + min_prob
    out = np.empty((n_units, n_concepts))
    step = max(1, chunk_bytes // max(1, top_k * n_concepts * 8))
    for start in range(0, n_units, step):
        cols = slice(start, min(start + step, n_units))
        top = np.argsort(-activations[:, cols], axis=0, kind="stable")[:top_k]  # (top_k, units)
        gathered = probs[top]                                                  # (top_k, units, C)
        gathered *= p
        gathered += offset
        np.log(gathered, out=gathered)
        out[cols] = gathered.sum(axis=0)
    return out


def soft_wpmi(probs: np.ndarray, activations: np.ndarray, top_k: int = 100, lam: float = 1.0,
              p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7,
              prior_activations: np.ndarray | None = None) -> np.ndarray:
    """Soft-WPMI (K, C) of each unit of `activations` (N, K) with each concept.

    The prior log P(c) runs over the units of `prior_activations` (default: `activations`).
    """
    log_given = log_p_concept_given_top(probs, activations, top_k, p_start, p_end, min_prob)
    prior_given = log_given if prior_activations is None else \
        log_p_concept_given_top(probs, prior_activations, top_k, p_start, p_end, min_prob)
    log_prior = logsumexp(prior_given, axis=0) - np.log(len(prior_given))
    return log_given - lam * log_prior


def cos_similarity(probs_or_sims: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """The reference's cos_similarity: columns normalised over images, then unit x concept dot products."""
    acts = np.atleast_2d(np.asarray(activations, dtype=np.float64).T).T
    a = acts / np.maximum(np.linalg.norm(acts, axis=0, keepdims=True), 1e-12)
    s = probs_or_sims / np.maximum(np.linalg.norm(probs_or_sims, axis=0, keepdims=True), 1e-12)
    return a.T @ s


def read_word_list(path: str | Path) -> tuple[str, ...]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept file {path} does not exist")
    words = tuple(dict.fromkeys(w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()))
    if not words:
        raise DataError(f"concept file {path} holds no words")
    return words


class ClipDissectExplainer(Explainer):
    name = "clip-dissect"
    description = "CLIP-Dissect: soft-WPMI between a unit's top probe images and CLIP concept similarities"

    def __init__(self, similarity: str = "soft_wpmi", top_k: int = 100, temperature: float = 10.0,
                 p_start: float = 0.998, p_end: float = 0.97, lam: float = 1.0, n_words: int = 5,
                 concepts: str | None = None, clip_model: str = "resource", clip_pretrained: str | None = None):
        if similarity not in ("soft_wpmi", "cos"):
            raise ValueError(f"similarity must be 'soft_wpmi' or 'cos', not {similarity!r}")
        self.similarity, self.top_k, self.temperature = similarity, top_k, temperature
        self.p_start, self.p_end, self.lam, self.n_words = p_start, p_end, lam, n_words
        self.concepts = concepts
        self.clip_model = clip_model
        self.clip_pretrained = clip_pretrained

    def resource_names(self) -> tuple[str, ...]:
        return ("clip",) if self.clip_model == "resource" or self.clip_model.startswith("embedded") else ()

    def fit(self, subject: Subject, context: Context) -> "ClipDissectExplainer":
        words = read_word_list(self.concepts) if self.concepts else tuple(dict.fromkeys(context.vocabulary))
        if not words:
            raise DataError("CLIP-Dissect needs concepts: context.vocabulary is empty and no concept file was given")
        clip = resolve_clip(self.clip_model, self.clip_pretrained, context)
        image_emb = cached_image_embeddings(clip, context.probe.images, context.cache_dir)
        return self.use_similarities(words, image_emb @ clip.encode_texts(list(words)).T)

    def use_similarities(self, words: Sequence[str], sims: np.ndarray) -> "ClipDissectExplainer":
        """Fit from given CLIP image-text cosines (probe images x `words`), e.g. for benchmarks."""
        self._words = tuple(words)
        self._sims = np.asarray(sims, dtype=np.float64)
        self._probs = softmax(self.temperature * self._sims, axis=1)
        self._layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        return self

    def _layer(self, name: str, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log P(c | B_k) for every unit k, log P(c)) of one layer, computed once per fitted probe."""
        cached = self._layers.get(name)
        if cached is None or cached[0] is not activations:
            given = log_p_concept_given_top(self._probs, activations, self.top_k, self.p_start, self.p_end)
            prior = logsumexp(given, axis=0) - np.log(len(given))
            cached = self._layers[name] = (activations, given, prior)
        return cached[1], cached[2]

    def soft_wpmi_scores(self, target: Target, context: Context) -> tuple[np.ndarray, np.ndarray]:
        """(soft-WPMI, log P(c | B)) of one target over the concepts, read from its layer's scores."""
        probe = context.probe
        if target.kind == "class":
            given, prior = self._layer("logits", probe.logits)
            given = given[target.index]
        elif target.kind == "unit":
            given, prior = self._layer("features", probe.features)
            given = given[target.index]
        else:  # a direction: one extra column, the prior of the features' units
            _, prior = self._layer("features", probe.features)
            given = log_p_concept_given_top(self._probs, target_scores(target, context)[:, None], self.top_k,
                                            self.p_start, self.p_end)[0]
        return given - self.lam * prior, given

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        if not hasattr(self, "_probs"):
            self.fit(subject, context)
        return [self._explain(target, context) for target in targets]

    def _explain(self, target: Target, context: Context) -> Explanation:
        if self.similarity == "cos":
            probe = context.probe
            acts = probe.logits[:, [target.index]] if target.kind == "class" else target_scores(target, context)[:, None]
            scores = cos_similarity(self._sims, acts)[0]
            weights = np.clip(scores, 0, None)
            top = np.argsort(-scores, kind="stable")[:self.n_words]
        else:
            scores, given = self.soft_wpmi_scores(target, context)
            weights = np.exp(scores - scores.max())
            # with few units, concepts that one unit dominates all tie at log K: break ties by log P(c|B_k)
            top = np.lexsort((-given, -np.round(scores, 9)))[:self.n_words]
        evidence = [f"clip-dissect ({self.similarity}): " + ", ".join(f"{self._words[i]} {scores[i]:.3f}" for i in top)]
        concepts = tuple((self._words[i], float(weights[i])) for i in top if weights[i] > 0)
        return Explanation(target, concepts, tuple(evidence))  # in `top` order: ties stay broken as above
