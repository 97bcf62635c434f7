"""Method cards: every built-in declares one from its paper (or says it is a control or the
oracle), the card's kind is the class's role, and `check-explainer` warns (never fails) when a
method has no card or leaves fields empty."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from fexbench.analysis.comparisons import role
from fexbench.core import registry
from fexbench.core.card import KINDS, MethodCard, Paper, card_of, card_warnings, declared_card, kind_of
from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target

CACHE = Path(os.environ.get("FEXBENCH_TEST_CHECK_CACHE", "/tmp/authors/check-cache"))
BUILTINS = ("random", "class-name", "oracle", "clip-dissect", "falcon", "texplain", "texplain-contrast")


class NoCard(Explainer):
    """Honest and deterministic, but without a method card."""

    name = "no-card"

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        vocab = sorted(context.vocabulary)
        return [Explanation.from_weights(t, {vocab[i]: 1.0 / (i + 1) for i in range(3)}) for t in targets]


class HalfCard(NoCard):
    name = "half-card"
    card = MethodCard(display_name="Half", description="Names three words.", kind="control",
                      code_url="javascript:alert(1)")


class Inherits(HalfCard):
    name = "inherits"


def test_card_module_imports_without_torch():
    out = subprocess.run([sys.executable, "-c", "import sys; import fexbench.core.card as c; "
                          "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch" not in out.stdout


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_cards_are_complete_and_agree_with_the_role(name):
    cls = registry.explainers.get(name)
    card = card_of(cls)
    assert card is not None and declared_card(cls) is cls.card
    assert card_warnings(cls) == [], card_warnings(cls)
    assert card.kind == role(name) == kind_of(cls) and card.kind in KINDS  # the class decides, as the board's roles
    assert card.version == cls.version
    assert card.display_name and len(card.description) > 150 and "\n\n" not in card.description


def test_builtin_cards_carry_their_papers():
    cards = {n: card_of(registry.explainers.get(n)) for n in BUILTINS}
    tex = cards["texplain"]
    assert tex.paper.url == "https://arxiv.org/abs/2309.00733"
    assert tex.paper.title == "Learned Visual Features to Textual Explanations" and tex.paper.year == 2023
    assert tex.authors[0] == "Saeid Asgari Taghanaki" and "no code" in tex.note.lower()
    falcon = cards["falcon"]
    assert falcon.paper.venue == "ICML 2023" and falcon.paper.title == "Identifying Interpretable Subspaces in Image " \
        "Representations"
    assert falcon.code_url == "https://github.com/NehaKalibhat/falcon-explain" and falcon.authors[0] == "Neha Kalibhat"
    clip = cards["clip-dissect"]
    assert clip.paper.venue == "ICLR 2023" and clip.paper.title.startswith("CLIP-Dissect")
    assert clip.code_url == "https://github.com/Trustworthy-ML-Lab/CLIP-dissect"
    assert clip.authors == ("Tuomas Oikarinen", "Tsui-Wei Weng")
    contrast = cards["texplain-contrast"]
    assert contrast.paper == tex.paper and "variant" in contrast.display_name.lower()
    assert "not in the paper" in contrast.description and "this project" in contrast.note
    for name in ("random", "class-name"):
        assert cards[name].kind == "control" and cards[name].paper is None and "control" in cards[name].description
    assert cards["oracle"].kind == "oracle" and cards["oracle"].paper is None and "ceiling" in cards["oracle"].description


def test_card_warnings_name_what_is_missing():
    missing = card_warnings(NoCard)
    assert len(missing) == 1 and "no-card: declares no method card" in missing[0]
    inherited = card_warnings(Inherits)
    assert len(inherited) == 1 and "inherits MethodCard 'Half'" in inherited[0]  # a parent's card is not its own
    half = " | ".join(card_warnings(HalfCard))
    assert "card.kind is 'control'" in half and "make it 'method'" in half  # the flags decide
    assert "card.authors is empty" in half and "card.paper is missing" in half
    assert "'javascript:alert(1)' is not an http(s) link" in half
    assert card_of(HalfCard).kind == "method"
    bad_paper = type("BadPaper", (NoCard,), {"name": "bad-paper", "card": dataclasses.replace(
        HalfCard.card, kind="", authors=("A",), code_url="https://example.org/code",
        paper=Paper(title="T", venue="", year=0, url="arxiv.org/abs/1"))})
    assert card_warnings(bad_paper) == ["bad-paper: card.paper lacks venue, year, url (the url must be http(s))"]
    with pytest.raises(ValueError, match="kind must be one of"):
        MethodCard(display_name="x", description="y", kind="baseline")


def test_check_explainer_warns_but_passes_without_a_card(capsys):
    from fexbench.cli import main

    assert main(["check-explainer", "test_cards:NoCard", "--cache-dir", str(CACHE)]) == 0
    out = capsys.readouterr().out
    assert "warn card no-card: declares no method card" in out
    assert "7/7 checks passed" in out and "1 method-card warning (the site needs the card" in out
    assert main(["check-explainer", "class-name", "--cache-dir", str(CACHE)]) == 0
    assert "warn card" not in capsys.readouterr().out
