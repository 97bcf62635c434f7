"""`fexbench perf clip-dissect`: CLIP-Dissect's soft-WPMI for every unit of a layer, fexbench's
explainer against one batched call of the reference's formulation, on the same random inputs.

The reference (Trustworthy-ML-Lab/CLIP-dissect, similarity.soft_wpmi) scores all units of a layer
in one call. fexbench explains targets one by one, so it must compute the layer's scores once and
read each unit's row; this benchmark times explaining every unit of the layer (scores, top words,
explanations) against the reference formulation's single call, and prints the largest difference
between the two score matrices.
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import numpy as np
import torch

from fexbench.core.contract import Context, Probe, Target
from fexbench.explainers.clip_dissect import ClipDissectExplainer


def reference_soft_wpmi(sims: torch.Tensor, acts: torch.Tensor, top_k: int = 100, a: float = 10.0,
                        lam: float = 1.0, min_prob: float = 1e-7, p_start: float = 0.998, p_end: float = 0.97,
                        chunk_bytes: int = 64 << 20) -> torch.Tensor:
    """The reference's soft-WPMI (units x concepts) in one call, batched over units (in chunks of
    at most `chunk_bytes` of gathered probabilities), float64, its formula
    log(1 + p * (P - 1) + min_prob) evaluated in place (no temporaries)."""
    probs = torch.softmax(a * sims, dim=1)
    inds = torch.topk(acts, k=top_k, dim=0)[1]                                    # (top_k, units)
    p = (p_start - torch.arange(top_k, dtype=probs.dtype) / top_k * (p_start - p_end))[:, None, None]
    step = max(1, chunk_bytes // (top_k * probs.shape[1] * 8))
    parts = []
    for start in range(0, acts.shape[1], step):
        gathered = probs[inds[:, start:start + step]]                             # (top_k, chunk, concepts)
        gathered.sub_(1).mul_(p).add_(1 + min_prob).log_()
        parts.append(gathered.sum(dim=0))
    given = torch.cat(parts)
    prior = torch.logsumexp(given, dim=0, keepdim=True) - np.log(given.shape[0])
    return given - lam * prior


def clip_dissect_benchmark(argv: Sequence[str] | None = None) -> int:
    """`fexbench perf clip-dissect`: seconds to explain every unit of a layer vs the reference's one call."""
    parser = argparse.ArgumentParser(prog="fexbench perf clip-dissect", description=clip_dissect_benchmark.__doc__)
    parser.add_argument("--images", type=int, default=5000, help="probe images (default %(default)s)")
    parser.add_argument("--concepts", type=int, default=2000, help="concept words (default %(default)s)")
    parser.add_argument("--units", type=int, default=2048, help="units of the layer (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=100, help="top images per unit (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, choices=range(1, 257), metavar="N",
                        help="torch threads for the reference (default %(default)s; numpy's elementwise log is single-threaded)")
    args = parser.parse_args(list(argv or []))
    if min(args.images, args.concepts, args.units) < 1 or not 1 <= args.top_k <= args.images:
        parser.error("sizes must be positive and --top-k at most --images")
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _benchmark(args)
    finally:
        torch.set_num_threads(before)


def _benchmark(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    sims = rng.normal(0.2, 0.05, (args.images, args.concepts))             # CLIP-like image-text cosines
    # non-negative unit activations, float64 so that no two tie: the reference's torch.topk and
    # fexbench's stable argsort order tied images differently, which moves their soft memberships
    acts = rng.gamma(1.0, 1.0, (args.images, args.units))
    words = tuple(f"concept{i}" for i in range(args.concepts))
    probe = Probe(np.zeros((args.images, 1, 1, 3), np.uint8), acts, np.zeros((args.images, 2)),
                  "layer", tuple(map(str, range(args.images))))
    context = Context(probe, words)
    targets = [Target("unit", k) for k in range(args.units)]
    print(f"{args.images} images x {args.concepts} concepts x {args.units} units, top {args.top_k}; "
          f"torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    reference = reference_soft_wpmi(torch.from_numpy(sims), torch.from_numpy(acts), top_k=args.top_k).numpy()
    t_ref = time.perf_counter() - t0
    print(f"reference formulation, one batched call   {t_ref:8.2f} s")

    t0 = time.perf_counter()
    explainer = ClipDissectExplainer(top_k=args.top_k).use_similarities(words, sims)
    explanations = explainer.explain(None, targets, context)
    t_ours = time.perf_counter() - t0
    print(f"fexbench, explain all {args.units} unit targets   {t_ours:8.2f} s  "
          f"({t_ours / t_ref:.2f}x the reference call; goal <= 1.5x)")

    ours = np.stack([explainer.soft_wpmi_scores(t, context)[0] for t in targets])
    print(f"max |fexbench - reference| over the score matrix: {np.abs(ours - reference).max():.3g} "
          f"({len(explanations)} explanations)")
    return 0
