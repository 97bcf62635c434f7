"""What tasks and explainers declare (descriptions, metric definitions), read from their source
without importing them.

Importing a task pulls in torch and its models (over 10 s on a loaded machine), which would
make publishing slow; and building a site should not run plugin code at all. The declarations
are plain literals in the source (`Metric("name", "description", ...)`, a class attribute
`description = "..."`), so Python's own parser reads them; a declaration that is not a literal
is shown with its placeholders, and a task whose source cannot be found gets no descriptions.
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path


@dataclass(frozen=True)
class Declared:
    description: str
    metrics: dict[str, str]  # metric name -> its description


def _constants(tree: ast.Module) -> dict[str, object]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                pass
    return out


def _text(node: ast.AST, constants: dict[str, object]) -> str | None:
    """A string literal, an f-string (module constants filled in, others as {name}), or a + of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue):
                name = ast.unparse(v.value)
                parts.append(str(constants[name]) if name in constants else "{" + name + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, constants), _text(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@lru_cache(maxsize=None)
def declared(group: str, name: str) -> Declared:
    """The declarations of the entry point `name` in `group` (e.g. fexbench.tasks, waterbirds-spurious)."""
    eps = [ep for ep in entry_points(group=group) if ep.name == name]
    if not eps:
        return Declared("", {})
    module, _, attr = eps[0].value.partition(":")
    path = _source(module)
    if path is None:
        return Declared("", {})
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return Declared("", {})
    constants = _constants(tree)
    metrics: dict[str, str] = {}
    description = ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Metric":
            args = list(node.args) + [k.value for k in node.keywords if k.arg in ("name", "description")]
            name_, text = (_text(args[0], constants), _text(args[1], constants)) if len(args) >= 2 else (None, None)
            if name_ and text is not None:
                metrics.setdefault(name_, text)
        if isinstance(node, ast.ClassDef) and node.name == attr.split(".")[0]:
            for item in node.body:
                if (isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "description" for t in item.targets)
                        and (text := _text(item.value, constants)) is not None):
                    description = text
    return Declared(description, metrics)
