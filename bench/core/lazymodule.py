"""A module imported on first attribute access, so that importing fexbench's light modules (what
`fexbench list` and `fexbench --help` read) does not pay for scipy or torch up front."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """`stats = lazy_module("scipy.stats")`: the module, executed when first used (the standard
    library's importlib.util.LazyLoader recipe). An already imported module is returned as is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
