"""One way to derive seeds: every random stream of a run is named by the parts it is for.

`derive_seed(run_seed, "train", rho, seed)` gives the same integer on every machine and in every
process (it hashes the canonical JSON of the parts, never Python's salted `hash`), so a stream can
be recomputed from its name alone, and two purposes never share a stream by accident.
"""
from __future__ import annotations

from typing import Any

from fexbench.core.cache import stable_hash


def derive_seed(*parts: Any, bits: int = 32) -> int:
    """An independent non-negative seed of `bits` bits (a multiple of 4) for a named purpose."""
    if bits % 4 or not 4 <= bits <= 256:
        raise ValueError(f"bits must be a multiple of 4 between 4 and 256, not {bits}")
    return int(stable_hash(list(parts), bits // 4), 16)
