"""The four registries (explainers, tasks, shared resources, performance benchmarks), filled from
entry points.

Built-ins register through fexbench's own entry points, exactly as a third-party package does
(`[project.entry-points."fexbench.explainers"]`), so a plugin is a first-class citizen. Names come
from the installed distributions' metadata, without importing anything; a module is imported only
when its entry is used. As in lm-evaluation-harness, a registry refuses what would silently change
the benchmark:

- a registered explainer or task must subclass the contract's `Explainer` or `Task`;
- a name that a built-in already uses, registered again (by another distribution's entry point or
  by `register_*`), is an error unless the call says `override=True`;
- an entry whose import fails (a syntax error in an author's package) is reported as broken, naming
  its entry point and the error; the other entries keep working.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from fexbench.core import profile

T = TypeVar("T")

BUILTIN_DISTRIBUTION = "fexbench"


class RegistryError(LookupError):
    """An unknown, broken, colliding or ill-typed registry entry; the message names it."""


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "<unknown distribution>"


class Registry(Generic[T]):
    """Name -> factory, from the entry point group `group` plus runtime registrations."""

    def __init__(self, group: str, what: str, base: str | None = None):
        self.group, self.what = group, what
        # the qualified name of the class entries must subclass: checked on the class's MRO, so
        # the registry (below the contract) never imports the contract (tests/test_architecture.py)
        self._base = base
        self._extra: dict[str, Callable[..., T]] = {}

    # -- metadata (no imports) ------------------------------------------------------------------
    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        found: dict[str, list[EntryPoint]] = {}
        seen: set[tuple[str, str]] = set()
        for ep in entry_points(group=self.group):
            if (ep.name, ep.value) in seen:  # one distribution seen twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            found.setdefault(ep.name, []).append(ep)
        return found

    def builtin_names(self) -> set[str]:
        return {name for name, eps in self._entry_points().items()
                if any(_distribution(ep) == BUILTIN_DISTRIBUTION for ep in eps)}

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._extra))

    def source(self, name: str) -> str:
        """Where an entry comes from, for messages and listings ("fexbench.explainers.falcon:...")."""
        if name in self._extra:
            factory = self._extra[name]
            return f"registered at run time: {getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"
        eps = self._entry_points().get(name, [])
        return "; ".join(f"{ep.value} (distribution {_distribution(ep)})" for ep in eps) or "unknown"

    # -- registration ---------------------------------------------------------------------------------
    def register(self, name: str, factory: Callable[..., T], override: bool = False) -> Callable[..., T]:
        if not override and (name in self.builtin_names() or name in self._extra):
            raise RegistryError(f"{self.what} {name!r} is already registered ({self.source(name)}); "
                                f"pass override=True to replace it")
        self._check_type(name, factory)
        self._extra[name] = factory
        return factory

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    # -- lookup ---------------------------------------------------------------------------------------
    def get(self, name: str) -> Callable[..., T]:
        if name in self._extra:
            return self._extra[name]
        eps = self._entry_points().get(name)
        if not eps:
            known = ", ".join(self.names()) or "none (is fexbench installed? run: pip install -e .)"
            raise RegistryError(f"unknown {self.what} {name!r}; known: {known}")
        if len(eps) > 1:
            raise RegistryError(f"{self.what} {name!r} is registered by more than one entry point: "
                                f"{self.source(name)}; rename one, or register yours with override=True")
        try:
            factory = eps[0].load()
        except BaseException as exc:  # a plugin's SyntaxError, ImportError, even SystemExit at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RegistryError(f"{self.what} {name!r} (entry point {eps[0].value}, distribution "
                                f"{_distribution(eps[0])}) failed to load: {type(exc).__name__}: {exc}") from None
        self._check_type(name, factory)
        return factory

    def _check_type(self, name: str, factory: Any) -> None:
        if self._base is None:
            if not callable(factory):
                raise RegistryError(f"{self.what} {name!r} is not callable: {factory!r}")
            return
        bases = {f"{b.__module__}.{b.__qualname__}" for b in factory.__mro__} if isinstance(factory, type) else set()
        if self._base not in bases:
            raise RegistryError(f"{self.what} {name!r} ({getattr(factory, '__module__', '?')}."
                                f"{getattr(factory, '__qualname__', factory)}) must be a subclass of {self._base}")

    def broken(self) -> dict[str, str]:
        """name -> why, for every entry that cannot be loaded (imports every entry)."""
        out = {}
        for name in self.names():
            try:
                self.get(name)
            except RegistryError as exc:
                out[name] = str(exc)
        return out


explainers: Registry = Registry("fexbench.explainers", "explainer", "fexbench.core.contract.Explainer")
tasks: Registry = Registry("fexbench.tasks", "task", "fexbench.core.contract.Task")
resources: Registry = Registry("fexbench.resources", "resource")
perf: Registry = Registry("fexbench.perf", "performance benchmark")


def register_explainer(name: str, factory: Callable, override: bool = False) -> Callable:
    return explainers.register(name, factory, override)


def register_task(name: str, factory: Callable, override: bool = False) -> Callable:
    return tasks.register(name, factory, override)


def register_resource(name: str, factory: Callable, override: bool = False) -> Callable:
    return resources.register(name, factory, override)


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
