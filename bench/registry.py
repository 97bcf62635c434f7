"""Registries of explainers and tasks, filled from entry points.

Built-ins register through the package's own entry points, exactly as a third-party package
would (`[project.entry-points."fexbench.explainers"]`). `register_explainer` / `register_task`
are the public call for code that is not installed as a distribution (a notebook, a test).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

EXPLAINER_GROUP = "fexbench.explainers"
TASK_GROUP = "fexbench.tasks"


class RegistryError(LookupError):
    pass


class Registry(Generic[T]):
    def __init__(self, group: str, what: str):
        self.group, self.what = group, what
        self._extra: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> Callable[..., T]:
        self._extra[name] = factory
        return factory

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._extra))

    def get(self, name: str) -> Callable[..., T]:
        if name in self._extra:
            return self._extra[name]
        eps = self._entry_points()
        if name not in eps:
            known = ", ".join(self.names()) or "none (is fexbench installed? run: pip install -e .)"
            raise RegistryError(f"unknown {self.what} {name!r}; known: {known}")
        try:
            return eps[name].load()
        except Exception as exc:
            raise RegistryError(f"{self.what} {name!r} (entry point {eps[name].value}) failed to load: {exc}") from exc


explainers: Registry = Registry(EXPLAINER_GROUP, "explainer")
tasks: Registry = Registry(TASK_GROUP, "task")


def register_explainer(name: str, factory: Callable) -> Callable:
    return explainers.register(name, factory)


def register_task(name: str, factory: Callable) -> Callable:
    return tasks.register(name, factory)
