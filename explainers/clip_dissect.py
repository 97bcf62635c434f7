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
- Option `similarity="cos_cubed"`: the reference's cos_similarity_cubed: activations and image-text
  similarities centred over images, cubed, columns divided by max(norm, 1e-3), then cosines.
  For both cosine options a unit's concepts are weighted by their min-max scaled cosine, so a unit
  whose cosines are all <= 0 still gets its least negative concepts (the best weighs 1).
- As released: the top images are `torch.topk` over the activations (dim 0, the whole layer at
  once), so images tied in activation (ReLU zeros, quantised values) get the same memberships as
  in the released code; everything is computed in float32 (`dtype="float32"`, the default), with
  the soft memberships and log K in float32 whatever the dtype, as the released code builds them.
  `dtype="float64"` computes the rest in float64 (the released code fed float64 inputs does so).

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
import torch

from fexbench.resources.clip import cached_image_embeddings, resolve_clip
from fexbench.core.card import MethodCard, Paper
from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target
from fexbench.data.imageset import DataError
from fexbench.explainers.baselines import target_scores


DTYPES = {"float32": torch.float32, "float64": torch.float64}
SIMILARITIES = ("soft_wpmi", "cos", "cos_cubed")


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def soft_membership(top_k: int, p_start: float = 0.998, p_end: float = 0.97) -> np.ndarray:
    """p_i for ranks 0..top_k-1, computed in float32 as the released code does (whatever the input dtype)."""
    return (p_start - (torch.arange(0, top_k) / top_k * (p_start - p_end))).numpy()


def top_indices(activations: np.ndarray | torch.Tensor, top_k: int, dtype: str | torch.dtype = "float32") -> torch.Tensor:
    """(top_k, K) indices of each unit's top images: `torch.topk` over dim 0 of the whole matrix in
    the compute dtype, as released, so images tied in activation (ReLU zeros, quantised values)
    get the memberships the released code gives them."""
    acts = torch.as_tensor(np.ascontiguousarray(activations) if isinstance(activations, np.ndarray) else activations)
    if acts.ndim == 1:
        acts = acts[:, None]
    acts = acts.to(_dtype(dtype))
    return torch.topk(acts, k=min(top_k, acts.shape[0]), dim=0)[1]


def concept_probs(sims: np.ndarray | torch.Tensor, temperature: float = 10.0,
                  dtype: str | torch.dtype = "float32") -> torch.Tensor:
    """P(c | x) = softmax over concepts of temperature x cosine, in the compute dtype."""
    return torch.softmax(temperature * torch.as_tensor(np.asarray(sims)).to(_dtype(dtype)), dim=1)


def log_p_concept_given_top(probs: np.ndarray | torch.Tensor, activations: np.ndarray, top_k: int = 100,
                            p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7,
                            chunk_bytes: int = 32 << 20, dtype: str | torch.dtype | None = None) -> np.ndarray:
    """log P(c | B_k) for every unit (column of activations): (K, C), in the dtype of `probs` (a
    tensor) or `dtype` (default float32 for arrays).

    As released: top images by `torch.topk`, soft memberships in float32, and per element
    log(1 + p (P - 1) + min_prob), summed over the top images. Units are processed in chunks (at
    most `chunk_bytes` of gathered probabilities at a time), each as one vectorised gather.
    """
    if dtype is None:
        dtype = probs.dtype if isinstance(probs, torch.Tensor) else torch.float32
    dtype = _dtype(dtype)
    probs = torch.as_tensor(np.asarray(probs) if not isinstance(probs, torch.Tensor) else probs).to(dtype)
    inds = top_indices(activations, top_k, dtype)                        # (top_k, K)
    top_k, n_units, n_concepts = inds.shape[0], inds.shape[1], probs.shape[1]
    p = torch.as_tensor(soft_membership(top_k, p_start, p_end)).to(dtype)[None, :, None]
    out = torch.empty((n_units, n_concepts), dtype=dtype)
    step = max(1, chunk_bytes // max(1, top_k * n_concepts * probs.element_size()))
    for start in range(0, n_units, step):
        # (chunk, top_k, C), each unit's block contiguous: its sum over the top images then adds in
        # the order of the released per-unit sum (bit-identical scores in float32)
        gathered = probs[inds[:, start:start + step].T.contiguous()]
        gathered.sub_(1).mul_(p).add_(1).add_(min_prob).log_()
        torch.sum(gathered, dim=1, out=out[start:start + step])
    return out.numpy()


def log_prior(log_given: np.ndarray) -> np.ndarray:
    """log P(c) = logsumexp over units of log P(c | B_k) - log K (log K in float32, as released)."""
    given = torch.as_tensor(log_given)
    return (torch.logsumexp(given, dim=0) - torch.log(given.shape[0] * torch.ones([1]))).numpy()


def soft_wpmi(probs: np.ndarray, activations: np.ndarray, top_k: int = 100, lam: float = 1.0,
              p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7,
              prior_activations: np.ndarray | None = None, dtype: str = "float32") -> np.ndarray:
    """Soft-WPMI (K, C) of each unit of `activations` (N, K) with each concept, from P(c | x).

    The prior log P(c) runs over the units of `prior_activations` (default: `activations`).
    """
    log_given = log_p_concept_given_top(probs, activations, top_k, p_start, p_end, min_prob, dtype=dtype)
    prior_given = log_given if prior_activations is None else \
        log_p_concept_given_top(probs, prior_activations, top_k, p_start, p_end, min_prob, dtype=dtype)
    return log_given - lam * log_prior(prior_given)


def cos_similarity(probs_or_sims: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """The reference's cos_similarity: columns normalised over images, then unit x concept dot products."""
    acts = np.atleast_2d(np.asarray(activations, dtype=np.float64).T).T
    a = acts / np.maximum(np.linalg.norm(acts, axis=0, keepdims=True), 1e-12)
    s = probs_or_sims / np.maximum(np.linalg.norm(probs_or_sims, axis=0, keepdims=True), 1e-12)
    return a.T @ s


def cos_similarity_cubed(sims: np.ndarray, activations: np.ndarray, min_norm: float = 1e-3,
                         dtype: str = "float32") -> np.ndarray:
    """The reference's cos_similarity_cubed (units x concepts): both matrices centred over images,
    cubed, columns divided by max(norm, min_norm), then unit x concept dot products."""
    dt = _dtype(dtype)
    clip = torch.as_tensor(np.asarray(sims)).to(dt)
    acts = torch.as_tensor(np.ascontiguousarray(activations)).to(dt)
    if acts.ndim == 1:
        acts = acts[:, None]
    clip = (clip - clip.mean(dim=0, keepdim=True)) ** 3
    acts = (acts - acts.mean(dim=0, keepdim=True)) ** 3
    clip = clip / torch.clip(torch.norm(clip, p=2, dim=0, keepdim=True), min_norm)
    acts = acts / torch.clip(torch.norm(acts, p=2, dim=0, keepdim=True), min_norm)
    return (acts.T @ clip).numpy()


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
    # 2: torch.topk's order of tied images and float32 (dtype="float32" default), as released;
    #    similarity="cos_cubed"; cos weights min-max scaled (never empty).
    version = 2
    card = MethodCard(
        display_name="CLIP-Dissect",
        description="Names a unit by the concepts whose CLIP image-text similarity best matches the unit's "
                    "top-activating probe images, relative to every other unit of the layer: soft weighted "
                    "pointwise mutual information (soft-WPMI) between the unit's top 100 images, with soft "
                    "memberships falling from 0.998 to 0.97, and each concept's softmax similarity over the "
                    "concept set. A class target is explained through its logit, a direction through its "
                    "projection. It needs no training: one pass of CLIP over the probe images and the concept words.",
        paper=Paper(title="CLIP-Dissect: Automatic Description of Neuron Representations in Deep Vision Networks",
                    venue="ICLR 2023", year=2023, url="https://arxiv.org/abs/2204.10965"),
        code_url="https://github.com/Trustworthy-ML-Lab/CLIP-dissect",
        authors=("Tuomas Oikarinen", "Tsui-Wei Weng"),
        note="fexbench's port of the released similarity.py (soft-WPMI, tie order and float32 as released); "
             "the top n_words concepts are returned, where the paper reports the single best.")

    def __init__(self, similarity: str = "soft_wpmi", top_k: int = 100, temperature: float = 10.0,
                 p_start: float = 0.998, p_end: float = 0.97, lam: float = 1.0, n_words: int = 5,
                 concepts: str | None = None, clip_model: str = "resource", clip_pretrained: str | None = None,
                 dtype: str = "float32"):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, not {similarity!r}")
        _dtype(dtype)  # fails here on an unknown name
        self.dtype = dtype
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
        self._sims = np.asarray(sims)
        if self._sims.ndim != 2 or self._sims.shape[1] != len(self._words):
            raise ValueError(f"sims must be (images, {len(self._words)}) for {len(self._words)} words, "
                             f"not shape {self._sims.shape}")
        self._probs = concept_probs(self._sims, self.temperature, self.dtype)
        self._layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        return self

    def _layer(self, name: str, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log P(c | B_k) for every unit k, log P(c)) of one layer, computed once per fitted probe."""
        cached = self._layers.get(name)
        if cached is None or cached[0] is not activations:
            given = log_p_concept_given_top(self._probs, activations, self.top_k, self.p_start, self.p_end)
            prior = log_prior(given)
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
        if self.similarity in ("cos", "cos_cubed"):
            probe = context.probe
            acts = probe.logits[:, [target.index]] if target.kind == "class" else target_scores(target, context)[:, None]
            scores = (cos_similarity(self._sims, acts) if self.similarity == "cos"
                      else cos_similarity_cubed(self._sims, acts, dtype=self.dtype))[0].astype(np.float64)
            # min-max scaled over the concepts: the best concept weighs 1 even when every cosine is <= 0
            # (a unit anti-correlated with every concept still gets its least negative concepts)
            span = scores.max() - scores.min()
            weights = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
            top = np.argsort(-scores, kind="stable")[:self.n_words]
        else:
            scores, given = self.soft_wpmi_scores(target, context)
            weights = np.exp(scores - scores.max())
            # with few units, concepts that one unit dominates all tie (exactly) at log K: break exact
            # ties by log P(c|B_k); without ties the first word is the released argmax
            top = np.lexsort((-given, -scores))[:self.n_words]
        evidence = [f"clip-dissect ({self.similarity}): " + ", ".join(f"{self._words[i]} {scores[i]:.3f}" for i in top)]
        concepts = tuple((self._words[i], float(weights[i])) for i in top if weights[i] > 0)
        return Explanation(target, concepts, tuple(evidence))  # in `top` order: ties stay broken as above
