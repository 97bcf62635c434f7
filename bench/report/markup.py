"""HTML built from elements, never from strings: every text and attribute value is escaped.

Result files come from submitters, so any string in them (an explainer's name, a word, an error
message, a config value) may be hostile. Pages are therefore assembled only through `el`, which
escapes every child that is not itself an element and every attribute value (`html.escape`),
after `fexbench.core.text.display_text` has removed control characters, ANSI escapes,
bidirectional controls and zero-width characters, so no raw value can reach the page as markup
and none can reorder or hide what a reader sees.
"""
from __future__ import annotations

import html
from typing import Any, Iterable

from fexbench.core.text import display_text

_VOID = {"meta", "link", "img", "br", "hr", "input"}


class Html(str):
    """A fragment that is already safe HTML (made by `el`, `raw` or `join`)."""


def text(value: Any) -> Html:
    """Any value as escaped text."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(display_text(value), quote=True))


def raw(trusted: str) -> Html:
    """Markup written in this package's own code (a doctype, a script) - never data."""
    return Html(trusted)


def _children(items: Iterable[Any]) -> Iterable[Html]:
    for item in items:
        if item is None or item is False:
            continue
        if isinstance(item, (list, tuple)) and not isinstance(item, Html):
            yield from _children(item)
        else:
            yield text(item)


def join(*items: Any) -> Html:
    return Html("".join(_children(items)))


def el(tag: str, *children: Any, **attrs: Any) -> Html:
    """<tag attrs>children</tag>. Attribute names come from code (`class_` for class, `data_x` for
    data-x); their values are escaped; None or False drops an attribute, True writes it bare."""
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        parts.append(name if value is True else f'{name}="{text(value)}"')
    open_tag = f"<{' '.join(parts)}>"
    if tag in _VOID:
        return Html(open_tag)
    return Html(f"{open_tag}{join(*children)}</{tag}>")
