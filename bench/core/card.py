"""An explainer's method card: who made the method, where it was published, what it does.

Every explainer class declares one as the class attribute `card` (a frozen `MethodCard`), the way a
model on a hub carries its model card. The published site reads it for names, links and
descriptions (never a result file); `fexbench check-explainer` warns when a method has none or
leaves fields empty. The card is presentation only: nothing in it enters a job key or a score.

Two fields are the class's own, so the card can never contradict the code:

- `kind` (method, control or oracle) follows the class's `is_oracle` and `control` flags
  (`kind_of`, the rule `fexbench.analysis.comparisons.role` uses). A card may state it, which
  `check-explainer` compares with the flags; the flags win.
- `version` follows the class's `version` (the behaviour version in every job key).

A card describes one class: a subclass that declares none has none (it does not inherit its
parent's, which would describe another method); it may copy it with `dataclasses.replace`.

This module imports nothing heavy (no torch, no numpy): a card is read wherever the class is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

KINDS = ("method", "control", "oracle")


@dataclass(frozen=True)
class Paper:
    """The publication a method comes from."""

    title: str
    venue: str  # "ICML 2023", "arXiv preprint"
    year: int
    url: str  # https: the paper's page (arXiv, proceedings, OpenReview)


@dataclass(frozen=True)
class MethodCard:
    """What the site and `check-explainer` say about an explainer; see the module docstring."""

    display_name: str
    description: str  # one paragraph: what the method does, in words a reader of the board needs
    kind: str = ""  # "", or one of KINDS; the class's flags decide (kind_of)
    paper: Paper | None = None
    code_url: str = ""  # https: the method's code as its authors released it; "" when none was
    authors: tuple[str, ...] = ()
    version: int | None = None  # None: the class's `version`
    docs_url: str = ""  # https: documentation outside fexbench's own docs/explainers/<name>.md
    note: str = ""  # one line on how this implementation relates to the paper (a port, a variant)

    def __post_init__(self) -> None:
        if self.kind not in ("", *KINDS):
            raise ValueError(f"MethodCard.kind must be one of {', '.join(KINDS)} (or empty), not {self.kind!r}")
        if isinstance(self.authors, str):  # a bare string would be read as its letters
            object.__setattr__(self, "authors", (self.authors,))
        else:
            object.__setattr__(self, "authors", tuple(self.authors))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kind_of(cls: Any) -> str:
    """The role of an explainer class from its flags: "oracle" (reads the ground truth: the
    ceiling), "control" (a reference point such as random words) or "method" (compared)."""
    if getattr(cls, "is_oracle", False):
        return "oracle"
    return "control" if getattr(cls, "control", False) else "method"


def declared_card(cls: Any) -> MethodCard | None:
    """The card the class itself declares (not one inherited from a parent), or None."""
    card = vars(cls).get("card") if isinstance(cls, type) else None
    return card if isinstance(card, MethodCard) else None


def card_of(cls: Any) -> MethodCard | None:
    """The class's card with `kind` and `version` taken from the class; None when it declares none."""
    card = declared_card(cls)
    if card is None:
        return None
    version = getattr(cls, "version", None)
    return dataclasses.replace(card, kind=kind_of(cls), version=version if isinstance(version, int) else card.version)


def _https(url: str) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://")) and " " not in url


def is_link(url: Any) -> bool:
    """Whether a card's URL may be shown as a link (http or https only: never javascript:, data:
    or a file path)."""
    return _https(url)


def card_warnings(cls: Any) -> list[str]:
    """What is missing or wrong in an explainer class's card, one line each ([] when complete).

    A method (neither control nor oracle) needs a display name, a description, authors, a paper
    (title, venue, year, link) and a code link; a control or the oracle needs a display name and
    a description (what it is), and no paper."""
    name = getattr(cls, "name", "") or getattr(cls, "__name__", "?")
    card = declared_card(cls)
    if card is None:
        inherited = getattr(cls, "card", None)
        hint = (f" (it inherits {type(inherited).__name__} {getattr(inherited, 'display_name', '')!r} from a parent "
                "class, which describes another method)") if isinstance(inherited, MethodCard) else ""
        return [f"{name}: declares no method card{hint}; add `card = MethodCard(display_name=..., description=..., "
                "paper=Paper(...), code_url=..., authors=(...))` (fexbench.core.card) so the site can name and link it"]
    kind = kind_of(cls)
    out = []
    if not str(card.display_name).strip():
        out.append(f"{name}: card.display_name is empty")
    description = str(card.description).strip()
    if not description:
        out.append(f"{name}: card.description is empty; say in one paragraph what the method does")
    elif "\n\n" in description:
        out.append(f"{name}: card.description has several paragraphs; the card holds one")
    if card.kind and card.kind != kind:
        out.append(f"{name}: card.kind is {card.kind!r} but the class's flags (is_oracle, control) make it {kind!r}; "
                   "the flags decide")
    version = getattr(cls, "version", None)
    if card.version is not None and card.version != version:
        out.append(f"{name}: card.version is {card.version!r} but the class's version is {version!r}; the class's "
                   "version decides (it is in every job key)")
    if kind == "method":
        if not card.authors or not all(isinstance(a, str) and a.strip() for a in card.authors):
            out.append(f"{name}: card.authors is empty")
        if card.paper is None:
            out.append(f"{name}: card.paper is missing (title, venue, year, url); a method without a paper should "
                       "say so in card.note and link its write-up in card.docs_url")
        else:
            p = card.paper
            missing = [f for f, ok in (("title", str(p.title).strip()), ("venue", str(p.venue).strip()),
                                       ("year", isinstance(p.year, int) and 1900 < p.year < 2200),
                                       ("url", _https(p.url))) if not ok]
            if missing:
                out.append(f"{name}: card.paper lacks {', '.join(missing)} (the url must be http(s))")
        if not card.code_url and "no code" not in card.note.lower():
            out.append(f"{name}: card.code_url is empty (link the authors' code, or say \"no code\" was released "
                       "in card.note)")
    for field_name in ("code_url", "docs_url"):
        url = getattr(card, field_name)
        if url and not _https(url):
            out.append(f"{name}: card.{field_name} {url!r} is not an http(s) link; the site shows it as text")
    return out
