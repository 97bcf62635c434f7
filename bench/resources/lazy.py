"""Shared resources (a vision-language model, a captioner, a caption bank), built lazily, once per run.

Providers register under the `fexbench.resources` entry point group as
`factory(env, **options) -> object`, where options come from the run config's
`[resources.<name>]` table (env.resource_configs), and cache their own artefacts by content under env.cache_dir. An explainer reads
`context.resources["clip"]`; nothing is built until some explainer asks for it.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from fexbench.core import profile
from fexbench.core.registry import register_resource, resources  # noqa: F401  (re-exported for plugins)


class LazyResources(Mapping[str, Any]):
    """A read-only mapping whose values are built on first access and then kept."""

    def __init__(self, env: Any):
        self._env = env
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            options = dict((getattr(self._env, "resource_configs", None) or {}).get(name, {}))
            with profile.stage(f"resource {name}"):
                self._built[name] = resources.get(name)(self._env, **options)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(resources.names())

    def __len__(self) -> int:
        return len(resources.names())
