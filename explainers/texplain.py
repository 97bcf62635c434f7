"""TExplain (Asgari Taghanaki et al., "Learned Visual Features to Textual Explanations", arXiv 2309.00733).

No code was released; this adapter is fexbench's reference implementation. What the paper states:
a frozen classifier's feature representation Z is mapped by a trainable translator (three linear
layers, no non-linearity) into the conditioning space of an independently trained, frozen
captioning decoder; the translator is trained with the captioning cross-entropy through the
frozen decoder on captioned images passed through the frozen classifier; at inference many
sentences are nucleus-sampled per feature representation and the most frequent words, stop words
removed, form a word cloud (font size proportional to frequency).

Where the paper is silent, fexbench decides (and says so in the README):
- Z: the subject's penultimate layer (`layer`), conv maps mean-pooled to vectors.
- Conditioning: the translator outputs `n_tokens` memory tokens that replace the image encoder's
  output in the decoder's cross-attention (BLIP's decoder is conditioned this way); for a decoder
  without cross-attention (a GPT-2 prefix LM) the same tokens are a prefix.
- Translator: Linear(D, hidden) -> Linear(hidden, hidden) -> Linear(hidden, n_tokens * width);
  Z is standardised with the training features' mean and std first (a fixed affine map: the whole
  map stays linear). Adam with a one-cycle learning rate up to 1e-2, batch 256, 3 epochs over
  2,000 captioned scenes: 24 steps, about 1 s per subject on 2 cores, cached by (subject
  weights, captioner weights, training data, config, seed).
- Translator training data: captioned world scenes, half in the waterbirds layout (balanced: every
  object group on every place) and half with all 9 shapes on all 9 backgrounds, independently;
  no shape-background correlation, so whatever the sentences say about the background is read
  from the subject's features, not learnt from the captions. Disjoint seeds from probe and test.
- Sampling: `n_sentences` (500) per class target, top-p 0.9, temperature 1, at most 20 tokens.
  A feature target (unit or direction) gets `unit_sentences` (100; None: n_sentences): a zoo has
  64 units per subject where it has 2 or 9 classes, and this budget keeps explaining every unit
  of a zoo affordable (unit-causes: 62 ms of CPU a unit, sampling time grows with the count).
- Class target: the probe images the subject predicts as the class; unit / direction target: its
  top `unit_top_fraction` probe images by activation. The sentences are spread evenly over these
  images (each image's own Z conditions its share): the cloud pools sentences, not features.
- Words: `fexbench.data.concepts.content_words` (lower-case, scikit-learn's English stop words plus a
  small list such as photo/image/picture, part-of-speech lemmas, so "stars" and "star" merge);
  weights are the words' frequencies normalised to sum to 1.

`texplain-contrast` (not in the paper) removes the decoder's prior: from the target's word
frequencies it subtracts those of sentences sampled for a reference (default: for a class, the
images predicted as the other classes; for a unit or direction, the whole probe set), clipped at
0; see TExplainContrast.
A cross-attention captioner has no unconditioned mode unless trained with conditioning dropout
(BLIP was not), so the reference is always images seen through the same translator.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fexbench.data import world
from fexbench.core.cache import atomic_write, atomic_write_json, stable_hash
from fexbench.core.seeds import derive_seed
from fexbench.core import threads
from fexbench.resources.captioner import Captioner, load_captioner
from fexbench.data.concepts import content_words
from fexbench.core.card import MethodCard, Paper
from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target
from fexbench.data.imageset import DataError, ImageSet, cached_imageset, load_imageset
from fexbench.explainers.baselines import target_scores

_LOADED: dict[str, Captioner] = {}

TEXPLAIN_PAPER = Paper(title="Learned Visual Features to Textual Explanations", venue="arXiv preprint", year=2023,
                       url="https://arxiv.org/abs/2309.00733")
TEXPLAIN_AUTHORS = ("Saeid Asgari Taghanaki", "et al.")


class Translator(nn.Module):
    """Three linear layers without non-linearities: classifier features -> decoder memory tokens."""

    def __init__(self, in_dim: int, hidden: int, n_tokens: int, width: int):
        super().__init__()
        self.n_tokens, self.width = n_tokens, width
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden),
                                    nn.Linear(hidden, n_tokens * width))
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers((z - self.mean) / self.scale).view(len(z), self.n_tokens, self.width)


def word_frequencies(sentences: Sequence[str]) -> dict[str, float]:
    """Normalised counts of the content words (stop words dropped, lemmatised) over all sentences."""
    counts = Counter(w for s in sentences for w in content_words(s))
    total = sum(counts.values())
    return {w: c / total for w, c in counts.items()} if total else {}


def world_fit_data(cache_dir: str | Path, n: int, image_size: int, seed: int) -> ImageSet:
    """Captioned world scenes for training a translator: half waterbirds layout (balanced), half 9x9 independent."""
    key = {"kind": "texplain-fit", "n": n, "size": image_size, "seed": seed, "world": world.VERSION}

    def build() -> ImageSet:
        wb, _, _ = world.waterbirds_scenes(n // 2 - (n // 2) % 4, 0.5, seed, balanced=True)
        i9, _ = world.imagenet9_scenes(n - len(wb), seed + 1, p_native=0.0)
        fields = [f.name for f in dataclasses.fields(world.Scenes)]
        scenes = world.Scenes(**{f: np.concatenate([getattr(wb, f), getattr(i9, f)]) for f in fields})
        return world.scenes_to_imageset(scenes, scenes.shape, world.SHAPES, "texplain-fit", image_size, seed,
                                        provenance={"world": "texplain translator training", "seed": str(seed)})

    return cached_imageset(cache_dir, key, build)


class TExplain(Explainer):
    """TExplain as published: fit trains the linear translator only; explain samples and counts words."""

    name = "texplain"
    description = "TExplain: linear translator into a frozen captioner, nucleus-sampled sentences, word frequencies"
    # 2: words lemmatised by the part-of-speech lemmatiser; 3: feature targets get unit_sentences;
    # 4: 500 sentences per class target (the paper says "many"; a replicated default cannot afford 1,000)
    version = 4
    cache_namespace = "texplain"  # texplain-contrast reuses the same translators and sentences
    stochastic = True  # the translator's initialisation and the sampled sentences follow context.seed
    seeds = 1  # each seed retrains every translator: ~17 s a task; `--explainer-seeds N` asks for more
    card = MethodCard(
        display_name="TExplain",
        description="Translates a frozen classifier's features into words: a translator of three linear layers "
                    "(no non-linearity) maps the classifier's feature vector into the conditioning space of a "
                    "frozen, independently trained image captioner, trained only with the captioning loss on "
                    "captioned images seen through the classifier. To explain a target, many sentences are "
                    "nucleus-sampled from the features of its images and the words' frequencies, stop words "
                    "removed, are the explanation (drawn as a word cloud).",
        paper=TEXPLAIN_PAPER,
        authors=TEXPLAIN_AUTHORS,
        note="No code was released: this is fexbench's reference implementation of the paper (the captioner is "
             "fexbench's small embedded one, or a pretrained one by configuration).")

    def __init__(self, captioner: str | None = None, layer: str = "penultimate", n_sentences: int = 500,
                 top_p: float = 0.9, temperature: float = 1.0, max_tokens: int = 20, batch_size: int = 1000,
                 hidden: int = 256, n_tokens: int | None = None, fit_data: str = "world", n_fit: int = 2000,
                 fit_epochs: int = 3, fit_batch_size: int = 256, fit_lr: float = 1e-2,
                 unit_top_fraction: float = 0.1, n_evidence: int = 12, top_k: int | None = None,
                 torch_threads: int | None = None, unit_sentences: int | None = 100):
        if unit_sentences is not None and unit_sentences < 1:
            raise ValueError(f"unit_sentences must be positive or None, not {unit_sentences!r}")
        self.captioner, self.layer, self.n_sentences = captioner, layer, n_sentences
        self.unit_sentences = unit_sentences
        self.top_p, self.temperature, self.max_tokens, self.batch_size = top_p, temperature, max_tokens, batch_size
        self.hidden, self.n_tokens, self.fit_data, self.n_fit = hidden, n_tokens, fit_data, n_fit
        self.fit_epochs, self.fit_batch_size, self.fit_lr = fit_epochs, fit_batch_size, fit_lr
        self.unit_top_fraction, self.n_evidence, self.top_k = unit_top_fraction, n_evidence, top_k
        self.torch_threads = torch_threads  # None: fexbench.core.threads' fixed count for fit and sampling
        self._translator: Translator | None = None
        self._cap: Captioner | None = None
        self._memo: dict[tuple[int, int], tuple[list[str], np.ndarray]] = {}
        self._key = ""
        self._fit_report: dict[str, Any] = {}

    def resource_names(self) -> tuple[str, ...]:
        return ("captioner",) if self.captioner is None else ()

    @property
    def fit_report(self) -> dict[str, Any]:
        """What the last fit did: cached or trained, its cache key, losses and times."""
        return dict(self._fit_report)

    # -- the frozen language model ------------------------------------------------------------
    def _get_captioner(self, context: Context) -> Captioner:
        if self.captioner is None:
            return context.resources["captioner"]
        if self.captioner not in _LOADED:
            _LOADED[self.captioner] = load_captioner(self.captioner)
        return _LOADED[self.captioner].to(context.device)

    # -- fit: train the translator only -------------------------------------------------------
    def _training_set(self, context: Context) -> ImageSet:
        if self.fit_data == "world":
            size = int(context.probe.images.shape[1])
            return world_fit_data(context.cache_dir, self.n_fit, size, seed=8_101)
        path = Path(self.fit_data)
        if not path.is_file():
            raise FileNotFoundError(f"texplain fit_data {str(path)!r}: not 'world' and no such image-set file")
        data = load_imageset(path)
        if data.captions is None:
            raise DataError(f"texplain fit_data {str(path)!r}: the image set has no captions")
        return data

    def fit(self, subject: Subject, context: Context) -> "TExplain":
        with threads.component("translator-training", self.torch_threads):
            return self._fit(subject, context)

    def _fit(self, subject: Subject, context: Context) -> "TExplain":
        t0 = time.perf_counter()
        cap = self._cap = self._get_captioner(context)
        data = self._training_set(context)
        n_tokens = self.n_tokens or cap.n_memory
        seed = int(context.seed)
        key = stable_hash({"method": "texplain-translator/v1", "subject": subject.weights_hash, "layer": self.layer,
                           "captioner": cap.weights_hash, "data": data.content_hash, "hidden": self.hidden,
                           "n_tokens": n_tokens, "epochs": self.fit_epochs, "batch": self.fit_batch_size,
                           "lr": self.fit_lr, "seed": seed}, 24)
        folder = Path(context.cache_dir) / "texplain" / key
        weights = folder / "translator.safetensors"
        if weights.is_file():
            state = load_file(str(weights))
            translator = Translator(state["mean"].numel(), self.hidden, n_tokens, cap.memory_dim)
            translator.load_state_dict(state)
            self._fit_report = {"cached": True, "key": key}
        else:
            z = subject.model.activations(data.images, (self.layer,))[self.layer]
            translator, report = train_translator(cap, z, list(data.captions), self.hidden, n_tokens,
                                                  self.fit_epochs, self.fit_batch_size, self.fit_lr, seed)
            state = {k: v.contiguous() for k, v in translator.state_dict().items()}
            atomic_write(weights, lambda tmp: save_file(state, tmp))
            atomic_write_json(folder / "card.json", {**report, "key": key, "subject": subject.name,
                                                     "subject_weights": subject.weights_hash,
                                                     "captioner": cap.weights_hash, "data": data.content_hash})
            self._fit_report = {"cached": False, "key": key, **report}
        self._fit_report["fit_time_s"] = time.perf_counter() - t0
        self._translator, self._memo, self._key = translator.to(cap.device).eval(), {}, key
        return self

    # -- explain: sample, count -----------------------------------------------------------------
    def _features(self, subject: Subject, context: Context) -> np.ndarray:
        probe = context.probe
        if probe.layer == self.layer:
            return probe.features
        return subject.model.activations(probe.images, (self.layer,))[self.layer]

    def target_images(self, target: Target, context: Context) -> np.ndarray:
        """Probe indices pooled for a target: predicted as the class, or the top-activating fraction."""
        scores = target_scores(target, context)
        k = max(1, int(round(self.unit_top_fraction * len(scores))))
        if target.kind == "class":
            chosen = np.flatnonzero(context.probe.predictions == target.index)
            if len(chosen):
                return chosen
            # no probe image is predicted as the class: its most class-like images stand in
        return np.sort(np.argsort(-scores, kind="stable")[:k])

    def sentence_budget(self, target: Target) -> int:
        """Sentences sampled for a target: n_sentences for a class, unit_sentences for a feature."""
        if target.kind == "class" or self.unit_sentences is None:
            return self.n_sentences
        return self.unit_sentences

    def sentences(self, features: np.ndarray, images: np.ndarray, context: Context,
                  n: int | None = None) -> tuple[list[str], np.ndarray]:
        """n (default n_sentences) sampled sentences spread evenly over `images` (each conditioned on its own Z).

        The seed is a hash of (run seed, the image set), so one image set always gets the same
        sentences: a class's sentences are reused as the reference of the other classes.
        """
        if self._translator is None or self._cap is None:
            raise RuntimeError("TExplain.explain before fit")
        images = np.asarray(images, dtype=np.int64)
        n = self.n_sentences if n is None else int(n)
        seed = derive_seed(int(context.seed), images.tolist(), bits=48)
        if (seed, n) in self._memo:
            return self._memo[seed, n]
        key = stable_hash({"translator": self._key, "seed": seed, "features": hashlib.sha256(
            np.ascontiguousarray(features[images], dtype=np.float32).tobytes()).hexdigest(),
            "n": n, "top_p": self.top_p, "temperature": self.temperature,
            "max_tokens": self.max_tokens, "batch_size": self.batch_size}, 24)
        path = Path(context.cache_dir) / "texplain" / self._key / "sentences" / f"{key}.json"
        if path.is_file():  # texplain and texplain-contrast share what was sampled for an image set
            saved = json.loads(path.read_text())
            texts, rows = list(saved["texts"]), np.asarray(saved["rows"], dtype=np.int64)
        else:
            rng = np.random.default_rng(seed)
            order = rng.permutation(images)
            rows = order[np.arange(n) % len(order)]
            with torch.no_grad():
                z = torch.from_numpy(np.ascontiguousarray(features[rows], dtype=np.float32))
                memory = self._translator(z.to(self._cap.device))
            texts = self._cap.sample(memory, seed=seed, top_p=self.top_p, temperature=self.temperature,
                                     max_tokens=self.max_tokens, batch_size=self.batch_size)
            atomic_write_json(path, {"texts": texts, "rows": rows.tolist()})
        self._memo[seed, n] = texts, rows
        return texts, rows

    def _weights(self, target: Target, images: np.ndarray, freq: dict[str, float], subject: Subject,
                 context: Context, features: np.ndarray) -> dict[str, float]:
        return freq

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        if self._translator is None:
            self.fit(subject, context)
        with threads.component("sampling", self.torch_threads):
            return self._explain(subject, targets, context)

    def _explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        features = self._features(subject, context)
        out = []
        for target in targets:
            images = self.target_images(target, context)
            texts, rows = self.sentences(features, images, context, self.sentence_budget(target))
            weights = self._weights(target, images, word_frequencies(texts), subject, context, features)
            evidence = [f"{context.probe.ids[r]}: {t}" for r, t in zip(rows[:self.n_evidence], texts)]
            out.append(Explanation.from_weights(target, weights, evidence, top_k=self.top_k))
        return out


class TExplainContrast(TExplain):
    """TExplain with the decoder's prior removed: target frequencies minus a reference's, positive part.

    reference "others" (default): for a class target, the probe images predicted as the other
    classes; the images predicted as each class split the probe set into cells, so when every
    predicted class is a target the reference is the image-weighted mixture of the other cells'
    own sentences (per-sentence word counts weighted by image counts): sentences are spread
    evenly over images, so the mixture has the word distribution of sentences sampled for the
    union, with no second round of sampling. A class no image is predicted as (its images are
    its top-margin fraction) gets the mixture of all cells. A unit or direction target, whose
    images are a top fraction of the probe set, gets the whole probe set, sampled once per
    subject. reference "all": the whole probe set for every target.
    """

    name = "texplain-contrast"
    description = "TExplain minus the decoder's prior: word frequencies of the target minus a reference's, clipped at 0"
    card = MethodCard(
        display_name="TExplain-contrast (fexbench variant)",
        description="fexbench's variant of TExplain, not in the paper: the target's word frequencies, sampled exactly "
                    "as TExplain samples them, minus the frequencies of sentences sampled the same way for a "
                    "reference (for a class, the images predicted as the other classes; for a unit or direction, "
                    "the whole probe set), clipped at 0. It removes the captioner's own prior (every world caption "
                    "names a background, so every raw TExplain cloud does) and keeps what sets the target apart.",
        paper=TEXPLAIN_PAPER,
        authors=TEXPLAIN_AUTHORS,
        note="A variant made by this project on TExplain's paper; no code was released by the paper's authors. "
             "It shares TExplain's translators and sampled sentences.")

    def __init__(self, reference: str = "others", **kwargs: Any):
        if reference not in ("others", "all"):
            raise ValueError(f"reference must be 'others' or 'all', not {reference!r}")
        super().__init__(**kwargs)
        self.reference = reference
        self._cells: dict[int, tuple[int, Counter]] | None = None

    def _explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        self._cells = None
        predicted = context.probe.predictions
        classes = {t.index for t in targets if t.kind == "class"}
        if self.reference == "others" and classes and set(np.unique(predicted).tolist()) <= classes:
            features = self._features(subject, context)
            self._cells = {}
            for c in np.unique(predicted).tolist():
                texts, _ = self.sentences(features, np.flatnonzero(predicted == c), context)
                counts = Counter(w for text in texts for w in content_words(text))
                self._cells[c] = int((predicted == c).sum()), Counter({w: n / max(1, len(texts)) for w, n in counts.items()})
        return super()._explain(subject, targets, context)

    def _reference(self, target: Target, images: np.ndarray, context: Context, features: np.ndarray) -> dict[str, float]:
        if self._cells is not None and target.kind == "class":
            keys = [c for c in self._cells if c != target.index] or list(self._cells)
            mixture: Counter = Counter()
            for c in keys:
                n_images, per_sentence = self._cells[c]
                for w, v in per_sentence.items():
                    mixture[w] += n_images * v
            total = sum(mixture.values())
            return {w: v / total for w, v in mixture.items()} if total else {}
        reference = np.arange(len(context.probe.features))
        if self.reference == "others" and target.kind == "class":
            others = np.setdiff1d(reference, images)
            reference = others if len(others) else reference
        return word_frequencies(self.sentences(features, reference, context)[0])

    def _weights(self, target: Target, images: np.ndarray, freq: dict[str, float], subject: Subject,
                 context: Context, features: np.ndarray) -> dict[str, float]:
        ref = self._reference(target, images, context, features)
        return {w: f - ref.get(w, 0.0) for w, f in freq.items() if f > ref.get(w, 0.0)}


def train_translator(cap: Captioner, z: np.ndarray, captions: list[str], hidden: int, n_tokens: int,
                     epochs: int, batch_size: int, lr: float, seed: int) -> tuple[Translator, dict[str, Any]]:
    """Adam on the captioning cross-entropy through the frozen decoder; only the translator's weights move."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    z_t = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(cap.device)
    translator = Translator(z_t.shape[1], hidden, n_tokens, cap.memory_dim).to(cap.device)
    translator.mean.copy_(z_t.mean(0))
    translator.scale.copy_(z_t.std(0).clamp_min(1e-6))
    ids, mask = cap.encode_text(captions)
    cap.decoder.eval()
    opt = torch.optim.Adam(translator.parameters(), lr=lr)
    steps = max(1, epochs * ((len(z_t) + batch_size - 1) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(z_t), generator=gen).to(cap.device)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = int(mask[idx].sum(1).max())
            loss = cap.loss(translator(z_t[idx]), ids[idx, :width], mask[idx, :width])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    report = {"train_time_s": time.perf_counter() - t0, "steps": len(losses), "n_images": len(z_t),
              "first_loss": losses[0] if losses else float("nan"),
              "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
              "parameters": sum(p.numel() for p in translator.parameters())}
    return translator.cpu().eval(), report
