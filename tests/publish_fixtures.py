"""The tiny real run that the site's tests publish (the same as tests/test_publish.py's), and a
writer of result files under any name. A helper module, not a test module: test modules import
from here."""
from __future__ import annotations

import json
from pathlib import Path

from fexbench.core.cache import atomic_write_text
from fexbench.core.results import canonical_digest

EXPLAINERS = ["oracle", "random", "class-name"]


def make_run(root: Path, toy_method_registration) -> Path:
    """waterbirds-spurious, tiny, 2 replicates: the oracle, both controls and two toy methods."""
    from fexbench.core.contract import Environment
    from fexbench.harness.driver import run

    with toy_method_registration() as toys:  # two compared methods, so the board ranks a family
        run(["waterbirds-spurious"], [*EXPLAINERS, *toys],
            Environment(cache_dir=root / "cache", out_dir=root / "run", progress=False, replicates=2),
            task_configs={"waterbirds-spurious": dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100,
                                                      n_test=100, epochs=2)}, log=lambda _: None)
    return root / "run"


def write_raw(path: Path, result) -> Path:
    """A result file under any name (a hostile explainer name is no file name), digest included."""
    data = result.to_dict()
    data["digest"] = canonical_digest(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(data))
