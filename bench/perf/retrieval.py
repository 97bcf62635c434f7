"""`fexbench perf retrieval`: caption-bank retrieval, exact against FAISS IVF, on random embeddings."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from fexbench.resources.caption_bank import build_ivf_index, exact_top_k


def retrieval_benchmark(argv: Sequence[str] | None = None) -> int:
    """`fexbench perf retrieval`: FAISS build time, query latency and recall vs exact on random embeddings."""
    import argparse

    import faiss

    parser = argparse.ArgumentParser(prog="fexbench perf retrieval", description=retrieval_benchmark.__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="bank size (default %(default)s)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default %(default)s)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default sqrt(n), at most n / 39)")
    parser.add_argument("--nprobe", default="8,32,128", help="lists probed per query, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(list(argv or []))
    nprobes = [int(v) for v in str(args.nprobe).split(",") if v.strip()]
    rng = np.random.default_rng(args.seed)
    bank = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    random_q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    random_q /= np.linalg.norm(random_q, axis=1, keepdims=True)
    near_q = bank[rng.integers(0, args.n, args.queries)] + 0.5 / np.sqrt(args.dim) * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32)
    near_q /= np.linalg.norm(near_q, axis=1, keepdims=True)

    print(f"bank: {args.n:,} random unit embeddings, dimension {args.dim}; {args.queries} queries, top-{args.k}; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    t0, c0 = time.perf_counter(), time.process_time()
    index = build_ivf_index(bank, args.nlist, nprobes[0], seed=args.seed)
    print(f"IndexIVFFlat(nlist={index.nlist}) build (k-means train + add): {time.perf_counter() - t0:.1f} s wall "
          f"({time.process_time() - c0:.1f} s CPU)")
    exact_top_k(bank, random_q[:1], args.k)  # warm-up
    for label, q in (("random queries", random_q), ("queries near a bank item", near_q)):
        t0, c0 = time.perf_counter(), time.process_time()
        _, exact_i = exact_top_k(bank, q, args.k)
        t_exact, c_exact = time.perf_counter() - t0, time.process_time() - c0
        print(f"{label}: exact batched matmul {t_exact:.3f} s wall ({c_exact:.3f} s CPU) per {args.queries} queries")
        for nprobe in nprobes:
            index.nprobe = nprobe
            index.search(q[:1], args.k)  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            _, ivf_i = index.search(q, args.k)
            t_ivf, c_ivf = time.perf_counter() - t0, time.process_time() - c0
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(exact_i, ivf_i)])
            print(f"  faiss-ivf nprobe={nprobe:<4d} {t_ivf:.4f} s wall ({c_ivf:.3f} s CPU) per {args.queries} queries, "
                  f"recall@{args.k} vs exact {recall:.3f}")
    return 0
