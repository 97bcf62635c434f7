"""A caption bank: captions embedded once with a CLIP's text tower, and nearest-caption retrieval.

FALCON captions an image by the bank captions nearest to its CLIP embedding. Embeddings are
cached by content (sha256 of the caption list + the CLIP's weights hash). Retrieval is an exact
batched matmul (torch matmul + topk) for small banks and a FAISS inverted-file index (faiss-cpu)
for large ones, chosen by size (`exact_max`, on captions x dimension).

Default bank: captions of world scenes disjoint from every probe set (their own seed), mixed with
distractor captions (world objects on non-world things, non-world things on world backgrounds,
non-world things alone), so retrieval has to pick the right ones. Real banks: a text file (one
caption per line) or a Hugging Face dataset column (COCO, CC3M, a LAION subset).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fexbench.data import world
from fexbench.core.cache import ArrayCache, atomic_write, build_once, stable_hash
from fexbench.core.seeds import derive_seed
from fexbench.data.imageset import DataError

# Words of captions; all from the world caption templates, so the embedded tokenizer knows them.
_DISTRACTOR_TEMPLATES = ("a photo of {x}", "{x} on {y}", "a picture of {x} and {y}", "a drawing of {x}",
                         "{x} in front of {y}", "{x} against {y}")


def captions_sha256(captions: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(captions).encode()).hexdigest()


def distractor_captions(n: int, seed: int, objects: Sequence[str] = ()) -> list[str]:
    """Captions no world image matches: world objects on non-world things, non-world things on
    world backgrounds, non-world things alone (words from world_concepts.DISTRACTORS)."""
    from fexbench.data.world_concepts import DISTRACTORS

    rng = np.random.default_rng([seed, 2])
    things = [f"{'an' if w[0] in 'aeiou' else 'a'} {w}" for w in DISTRACTORS]
    objects = list(objects) or [f"a {c} {world.SYNONYMS[s][0]}" for c in world.COLOUR_NAMES for s in world.SHAPES]
    places = [p for b in world.BACKGROUNDS for p in world.SYNONYMS[b]]
    out = []
    for i in range(n):
        template = _DISTRACTOR_TEMPLATES[rng.integers(len(_DISTRACTOR_TEMPLATES))]
        kind = i % 3
        if kind == 0:    # a world object on a non-world thing: right object, wrong scene
            x, y = objects[rng.integers(len(objects))], things[rng.integers(len(things))]
        elif kind == 1:  # a non-world thing on a world background: right background, wrong object
            x, y = things[rng.integers(len(things))], places[rng.integers(len(places))]
        else:            # unrelated words only
            x, y = things[rng.integers(len(things))], things[rng.integers(len(things))]
        out.append(template.format(x=x, y=y))
    return out


def world_bank_captions(n_scenes: int = 3000, n_distractors: int = 1500, seed: int = 0) -> tuple[str, ...]:
    """Unique world captions of fresh scenes (own seed) plus distractor captions, shuffled."""
    s = derive_seed("fexbench-caption-bank", "scenes", seed)
    scenes, _ = world.imagenet9_scenes(n_scenes, s, p_native=0.0)
    real = list(world.captions(scenes, s))
    objects = [c.split(" on ")[0] for c in real if " on " in c]  # world object phrases, e.g. "a red disk"
    fake = distractor_captions(n_distractors, s, objects)
    rng = np.random.default_rng([s, 1])
    unique = sorted(set(real) | set(fake))
    return tuple(unique[i] for i in rng.permutation(len(unique)))


@dataclass(eq=False)
class CaptionBank:
    """Captions with L2-normalised embeddings (N, D); search returns cosine similarities and indices."""

    captions: tuple[str, ...]
    embeddings: np.ndarray
    name: str = "bank"
    exact_max: int = 600_000_000
    nlist: int | None = None
    nprobe: int = 32
    index_dir: Path | None = None
    _index: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.captions):
            raise DataError(f"caption bank {self.name!r}: {len(self.captions)} captions but embeddings of shape "
                            f"{self.embeddings.shape}")
        if not len(self.captions):
            raise DataError(f"caption bank {self.name!r} is empty")

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256(captions_sha256(self.captions).encode())
        h.update(self.embeddings.tobytes())
        return h.hexdigest()

    @property
    def method(self) -> str:
        """'exact' while captions x dimension <= exact_max, 'faiss-ivf' above. Exact search over a
        million 512-d embeddings took 0.6 s per 100 queries on 2 cores (0.28 s at 64-d), so the
        index is for banks beyond that (LAION-scale), where its recall on real, clustered caption
        embeddings is what makes it pay."""
        return "exact" if self.embeddings.size <= self.exact_max else "faiss-ivf"

    # -- retrieval ------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 5, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k captions per query by cosine: (similarities (Q, k), indices (Q, k)), best first."""
        queries = self._queries(queries)
        k = min(k, len(self))
        if (method or self.method) == "exact":
            return exact_top_k(self.embeddings, queries, k)
        index = self.index()
        sims, idx = index.search(queries, k)
        return sims, idx.astype(np.int64)

    def top_k_softmax(self, queries: np.ndarray, k: int = 5, scale: float = 100.0,
                      normaliser_k: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """FALCON's caption scores: softmax over the bank of scale * cosine, the top k of each row.

        Exact banks normalise over every caption; indexed banks over the top `normaliser_k`
        neighbours (at scale 100 the rest carry almost no mass; the scores are then upper bounds).
        """
        queries = self._queries(queries)
        k = min(k, len(self))
        if self.method == "exact":
            sims, idx, lse = exact_top_k(self.embeddings, queries, k, logsumexp_scale=scale)
        else:
            sims_all, idx_all = self.search(queries, max(k, min(normaliser_k, len(self))))
            z = scale * sims_all.astype(np.float64)
            m = z.max(axis=1, keepdims=True)
            lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
            sims, idx = sims_all[:, :k], idx_all[:, :k]
        return np.exp(scale * sims.astype(np.float64) - lse[:, None]), idx

    def index(self) -> Any:
        """The FAISS IVF index (inner product), built once, and cached on disk by content when index_dir is set."""
        if self._index is None:
            self._index = build_ivf_index(self.embeddings, self.nlist, self.nprobe, self.index_dir)
        return self._index

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the bank {self.embeddings.shape[1]}")
        return queries

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_texts(cls, captions: Sequence[str], clip: Any, cache_dir: str | Path | None = None,
                   name: str = "bank", **kwargs: Any) -> "CaptionBank":
        """Embed captions with clip.encode_texts, once per (captions content, CLIP weights)."""
        captions = tuple(str(c) for c in captions)
        if not captions:
            raise DataError(f"caption bank {name!r} has no captions")
        compute = lambda: {"embeddings": clip.encode_texts(list(captions)).astype(np.float32)}
        if cache_dir is None:
            emb = compute()["embeddings"]
        else:
            key = {"captions_sha256": captions_sha256(captions), "clip": clip.weights_hash, "clip_name": clip.name}
            emb = ArrayCache(cache_dir).get_or_compute("caption-bank", key, compute)["embeddings"]
            kwargs.setdefault("index_dir", Path(cache_dir) / "caption-bank-index")
        return cls(captions, emb, name=name, **kwargs)

    @classmethod
    def from_text_file(cls, path: str | Path, clip: Any, cache_dir: str | Path | None = None,
                       **kwargs: Any) -> "CaptionBank":
        """One caption per line (blank lines skipped; duplicates kept once, in first-seen order)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"caption file {path} does not exist")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        captions = tuple(dict.fromkeys(line for line in lines if line))
        if not captions:
            raise DataError(f"caption file {path} holds no captions")
        return cls.from_texts(captions, clip, cache_dir, name=str(path), **kwargs)

    @classmethod
    def from_hf_dataset(cls, dataset: str, column: str, clip: Any, split: str = "train", config: str | None = None,
                        limit: int | None = None, cache_dir: str | Path | None = None, **kwargs: Any) -> "CaptionBank":
        """A column of a Hugging Face dataset (hub name or local path), e.g. COCO or CC3M captions."""
        import datasets

        data = datasets.load_dataset(dataset, config, split=split)
        if column not in data.column_names:
            raise DataError(f"dataset {dataset!r} split {split!r} has no column {column!r}; "
                            f"columns are {data.column_names}")
        values = data[column] if limit is None else data.select(range(min(limit, len(data))))[column]
        flat = [c for v in values for c in (v if isinstance(v, list) else [v]) if isinstance(c, str) and c.strip()]
        return cls.from_texts(tuple(dict.fromkeys(c.strip() for c in flat)), clip, cache_dir,
                              name=f"{dataset}:{column}", **kwargs)


def exact_top_k(bank: np.ndarray, queries: np.ndarray, k: int, chunk: int = 262_144,
                logsumexp_scale: float | None = None):
    """Exact top-k by inner product: torch matmul + topk over bank chunks (memory Q x chunk).

    With logsumexp_scale, also returns logsumexp over the whole bank of scale * similarity.
    """
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    best_s = torch.full((len(q), 0), -float("inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    lse = torch.full((len(q),), -float("inf"), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(bank), chunk):
            sims = q @ torch.from_numpy(bank[start:start + chunk]).T
            s, i = torch.topk(sims, min(k, sims.shape[1]), dim=1)
            best_s, best_i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i + start], dim=1)
            if logsumexp_scale is not None:
                lse = torch.logaddexp(lse, torch.logsumexp(logsumexp_scale * sims.double(), dim=1))
    # best first; equal similarities by bank index, so the order is reproducible
    order = np.lexsort((best_i.numpy(), -best_s.numpy()), axis=1)[:, :k]
    sims, idx = np.take_along_axis(best_s.numpy(), order, axis=1), np.take_along_axis(best_i.numpy(), order, axis=1)
    return (sims, idx, lse.numpy()) if logsumexp_scale is not None else (sims, idx)


def build_ivf_index(embeddings: np.ndarray, nlist: int | None = None, nprobe: int = 32,
                    index_dir: Path | None = None, seed: int = 0) -> Any:
    """FAISS IndexIVFFlat over inner product (cosine for unit vectors); nlist defaults to sqrt(N)
    (k-means on 256 points per list: about 10 s for a million 64-d vectors on 2 cores)."""
    import faiss

    n, d = embeddings.shape
    nlist = nlist or max(1, min(n // 39, int(round(np.sqrt(n)))))
    path = None
    if index_dir is not None:
        key = stable_hash({"emb": hashlib.sha256(embeddings.tobytes()).hexdigest(), "nlist": nlist, "seed": seed,
                           "kind": "IVFFlat-IP"}, 32)
        path = Path(index_dir) / f"{key}.faiss"

    def build() -> Any:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(embeddings)
        index.add(embeddings)
        if path is not None:
            atomic_write(path, lambda tmp: faiss.write_index(index, tmp))
        return index

    # on disk, read back only when the file matches the digest recorded when it was written
    index = build() if path is None else build_once(path, lambda: faiss.read_index(str(path)), build)
    index.nprobe = nprobe
    return index


# ---------------------------------------------------------------- resource and benchmark

DEFAULT_BANK = {"n_scenes": 3000, "n_distractors": 1500, "seed": 0}


def factory(env: Any, path: str | None = None, dataset: str | None = None, column: str = "caption",
            split: str = "train", config: str | None = None, limit: int | None = None) -> CaptionBank:
    """Resource `caption-bank`, embedded with the `clip` resource: the default world bank, a text file
    (`path`, one caption per line) or a Hugging Face dataset column (`dataset`, `column`, `split`)."""
    clip = env.resources["clip"]
    if path and dataset:
        raise ValueError("caption-bank: give `path` or `dataset`, not both")
    if path:
        return CaptionBank.from_text_file(path, clip, env.cache_dir)
    if dataset:
        return CaptionBank.from_hf_dataset(dataset, column, clip, split=split, config=config, limit=limit,
                                           cache_dir=env.cache_dir)
    return CaptionBank.from_texts(world_bank_captions(**DEFAULT_BANK), clip, env.cache_dir, name="world-bank")


def default_bank_id() -> str:
    """The default bank's identity for explainer configs: changes when its recipe or the world does."""
    return f"world:{stable_hash({'bank': DEFAULT_BANK, 'world': world.VERSION, 'templates': _DISTRACTOR_TEMPLATES}, 12)}"


def resolve_bank(spec: str, clip: Any, context: Any, clip_is_resource: bool = False) -> CaptionBank:
    """The bank an explainer's config asks for: "resource" (the default: context.resources["caption-bank"],
    when the explainer's CLIP is the `clip` resource), "world" (the default world bank), a text file
    (one caption per line) or "hf:<dataset>:<column>[:<split>]", embedded with the explainer's CLIP."""
    cache_dir = getattr(context, "cache_dir", None)
    if spec == "resource":
        resources = getattr(context, "resources", {}) or {}
        if clip_is_resource and "caption-bank" in set(iter(resources)):  # iterating names builds nothing
            return resources["caption-bank"]
        spec = "world"
    if spec.startswith("world"):
        if spec not in ("world", default_bank_id()):
            raise ValueError(f"unknown world caption bank {spec!r}; the default is 'world' ({default_bank_id()!r})")
        return CaptionBank.from_texts(world_bank_captions(**DEFAULT_BANK), clip, cache_dir, name="world-bank")
    if spec.startswith("hf:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"caption bank {spec!r}: expected hf:<dataset>:<column>[:<split>]")
        return CaptionBank.from_hf_dataset(parts[1], parts[2], clip, split=parts[3] if len(parts) == 4 else "train",
                                           cache_dir=cache_dir)
    return CaptionBank.from_text_file(spec, clip, cache_dir)
