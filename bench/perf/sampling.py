"""`fexbench perf sampling`: TExplain's sentence sampling, batched with a KV cache against one at a time."""
from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import numpy as np
import torch

from fexbench.core import threads
from fexbench.resources.captioner import _world_data, embedded_captioner, load_captioner


def sampling_benchmark(argv: Sequence[str] | None = None) -> int:
    """`fexbench perf sampling`: sentences per second, batched KV-cache sampling vs one sentence at a time."""
    parser = argparse.ArgumentParser(prog="fexbench perf sampling", description=sampling_benchmark.__doc__)
    parser.add_argument("--n", type=int, default=1000, help="sentences of one target (default %(default)s)")
    parser.add_argument("--loop-n", type=int, default=200,
                        help="sentences timed in the one-at-a-time loop (a per-sentence rate; default %(default)s)")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--cache-dir", default=".fexbench-cache")
    parser.add_argument("--captioner", default=None, help="a captioner folder or name (default: the embedded one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: TExplain's, fexbench.core.threads.COMPONENT_THREADS)")
    args = parser.parse_args(list(argv or []))
    with threads.component("sampling", args.threads):
        return _sampling_benchmark(args)


def _sampling_benchmark(args: argparse.Namespace) -> int:
    cap = load_captioner(args.captioner) if args.captioner else embedded_captioner(args.cache_dir)
    if cap.image_encoder is not None:
        images, _, _ = _world_data(1, 7_003, int(cap.card.get("config", {}).get("image_size", 32)), 1)
        memory = cap.encode_images(images)
    else:
        memory = torch.randn(1, cap.n_memory, cap.memory_dim, generator=torch.Generator().manual_seed(0))
    one_target = memory.expand(args.n, -1, -1).contiguous()
    loop_n = min(args.loop_n, args.n)

    def timed(label: str, n: int, **kw: Any) -> float:
        t0 = time.perf_counter()
        texts = cap.sample(one_target[:n], seed=0, top_p=args.top_p, max_tokens=args.max_tokens, **kw)
        dt = time.perf_counter() - t0
        words = np.mean([len(t.split()) for t in texts])
        print(f"{label:42s} {n:5d} sentences in {dt:7.3f} s = {n / dt:9.1f} sentences/s (mean {words:.1f} words)")
        return n / dt

    print(f"captioner: {cap.source} ({cap.mode}, decoder {sum(p.numel() for p in cap.decoder.parameters()):,} "
          f"parameters), torch threads {torch.get_num_threads()}")
    timed("warm-up", min(50, args.n), batch_size=args.n)
    batched = timed("batched, KV cache (batch = n)", args.n, batch_size=args.n)
    no_cache = timed("batched, no KV cache (batch = n)", args.n, batch_size=args.n, use_cache=False)
    loop = timed("one sentence at a time, KV cache", loop_n, batch_size=1)
    print(f"speed-up of batched KV-cache sampling over the one-at-a-time loop: {batched / loop:.1f}x "
          f"(over batched without cache: {batched / no_cache:.1f}x)")
    return 0
