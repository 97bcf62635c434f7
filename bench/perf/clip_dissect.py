"""`fexbench perf clip-dissect`: CLIP-Dissect's soft-WPMI for every unit of a layer, fexbench's
explainer against the released function (Trustworthy-ML-Lab/CLIP-dissect, similarity.soft_wpmi),
transcribed here with its operations and dtypes (float32 inputs, `torch.topk`, float32 memberships
and log K, the loop over units), on the same random inputs.

The released code scores all units of a layer in one call. fexbench explains targets one by one,
so it computes the layer's scores once and reads each unit's row; this benchmark times explaining
every unit of the layer (scores, top words, explanations) against the released call, and prints
both times, their ratio and the largest difference between the two score matrices and the
number of units whose best concept differs.
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import numpy as np
import torch

from fexbench.core.contract import Context, Probe, Target
from fexbench.explainers.clip_dissect import ClipDissectExplainer


def released_soft_wpmi(clip_feats: torch.Tensor, target_feats: torch.Tensor, top_k: int = 100, a: float = 10,
                       lam: float = 1, min_prob: float = 1e-7, p_start: float = 0.998,
                       p_end: float = 0.97) -> torch.Tensor:
    """The released similarity.soft_wpmi (units x concepts), transcribed: its operations in its order
    and dtypes, on the CPU, without tqdm, print and the CUDA cache calls."""
    with torch.no_grad():
        clip_feats = torch.nn.functional.softmax(a * clip_feats, dim=1)
        inds = torch.topk(target_feats, dim=0, k=top_k)[1]
        prob_d_given_e = []
        p_in_examples = p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end)).unsqueeze(1)
        for orig_id in range(target_feats.shape[1]):
            curr_clip_feats = clip_feats.gather(0, inds[:, orig_id:orig_id + 1].expand(-1, clip_feats.shape[1]))
            curr_p_d_given_e = 1 + p_in_examples * (curr_clip_feats - 1)
            curr_p_d_given_e = torch.sum(torch.log(curr_p_d_given_e + min_prob), dim=0, keepdim=True)
            prob_d_given_e.append(curr_p_d_given_e)
        prob_d_given_e = torch.cat(prob_d_given_e, dim=0)
        prob_d = (torch.logsumexp(prob_d_given_e, dim=0, keepdim=True)
                  - torch.log(prob_d_given_e.shape[0] * torch.ones([1])))
        mutual_info = prob_d_given_e - lam * prob_d
    return mutual_info


def clip_dissect_benchmark(argv: Sequence[str] | None = None) -> int:
    """`fexbench perf clip-dissect`: seconds to explain every unit of a layer vs the released call."""
    parser = argparse.ArgumentParser(prog="fexbench perf clip-dissect", description=clip_dissect_benchmark.__doc__)
    parser.add_argument("--images", type=int, default=5000, help="probe images (default %(default)s)")
    parser.add_argument("--concepts", type=int, default=2000, help="concept words (default %(default)s)")
    parser.add_argument("--units", type=int, default=2048, help="units of the layer (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=100, help="top images per unit (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, choices=range(1, 257), metavar="N",
                        help="torch threads for both (default %(default)s)")
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
    # CLIP-like image-text cosines and non-negative unit activations, float32 as the released pipeline has them
    sims = rng.normal(0.2, 0.05, (args.images, args.concepts)).astype(np.float32)
    acts = rng.gamma(1.0, 1.0, (args.images, args.units)).astype(np.float32)
    words = tuple(f"concept{i}" for i in range(args.concepts))
    probe = Probe(np.zeros((args.images, 1, 1, 3), np.uint8), acts, np.zeros((args.images, 2), np.float32),
                  "layer", tuple(map(str, range(args.images))))
    context = Context(probe, words)
    targets = [Target("unit", k) for k in range(args.units)]
    print(f"{args.images} images x {args.concepts} concepts x {args.units} units, top {args.top_k}; "
          f"torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    released = released_soft_wpmi(torch.from_numpy(sims), torch.from_numpy(acts), top_k=args.top_k).numpy()
    t_ref = time.perf_counter() - t0
    print(f"released similarity.soft_wpmi (float32), one call   {t_ref:8.2f} s")

    t0 = time.perf_counter()
    explainer = ClipDissectExplainer(top_k=args.top_k).use_similarities(words, sims)
    explanations = explainer.explain(None, targets, context)
    t_ours = time.perf_counter() - t0
    print(f"fexbench (float32), explain all {args.units} unit targets   {t_ours:8.2f} s  "
          f"({t_ours / t_ref:.2f}x the released call; goal <= 1.0x)")

    ours = np.stack([explainer.soft_wpmi_scores(t, context)[0] for t in targets])
    differ = int((ours.argmax(axis=1) != released.argmax(axis=1)).sum())
    print(f"max |fexbench - released| over the score matrix: {np.abs(ours - released).max():.3g}; "
          f"best concept differs on {differ} of {args.units} units ({len(explanations)} explanations)")
    return 0
