"""Concept vocabulary: maps an explanation's free words onto concepts with synonym sets.

Scoring reads words through this one place: lower-case, keep letters, drop stop words, lemmatise,
then look the lemma up in synonym sets (water: water, ocean, lake, sea, wave, ...). A word may
belong to several concepts; its weight is then split evenly between them.

Lemmas come from lemminflect, an English lemmatiser that knows each dictionary word's parts of
speech and ships its data (NLTK's and spaCy's data cannot be downloaded offline). A word is read
as a noun when it is a known noun ("leaves" -> leaf, "crosses" -> cross), else as the first part
of speech it is known as ("playing" -> play, "smaller" -> small); an unknown word goes through
lemminflect's noun rules ("annuli" -> annulus). Explanations name things, so the noun reading wins.
"""
from __future__ import annotations

import numpy as np

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from lemminflect import getAllLemmas, getAllLemmasOOV
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from fexbench.core.contract import Explanation

EXTRA_STOP_WORDS = frozenset({"photo", "picture", "image", "shape", "there", "object", "thing", "look", "like"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | EXTRA_STOP_WORDS
_LETTERS = re.compile(r"[a-z]+")


# Parts of speech tried after NOUN, in order, for a word that is not a known noun.
_OTHER_POS = ("PROPN", "VERB", "ADJ", "ADV", "AUX")
# Function words lemminflect's dictionary lacks: "an" is a form of the article "a" (as in spaCy).
# The embedded CLIP's word tokenizer has one token per lemma, so this also keeps its vocabulary.
_EXCEPTIONS = {"an": "a"}


@lru_cache(maxsize=65536)
def lemma(word: str) -> str:
    """The lemma of one lower-cased word: its noun lemma when it is a known noun, else its first
    known part of speech's lemma, else lemminflect's out-of-vocabulary noun rule."""
    word = word.lower()
    if word in _EXCEPTIONS:
        return _EXCEPTIONS[word]
    known = getAllLemmas(word)
    nouns = known.get("NOUN", ())
    if nouns:
        # "grounds" -> (ground, grounds): prefer an inflection's lemma over the word itself;
        # "leaves" -> (leave, leaf): prefer the lemma that is not also its verb reading.
        candidates = [n for n in nouns if n != word] or list(nouns)
        verbs = set(known.get("VERB", ()))
        return next((n for n in candidates if n not in verbs), candidates[0]).lower()
    for pos in _OTHER_POS:
        if known.get(pos):
            return known[pos][0].lower()
    oov = getAllLemmasOOV(word, "NOUN").get("NOUN", ())
    return (oov[0] if oov else word).lower()


def content_words(text: str) -> list[str]:
    """Lower-cased, lemmatised words of `text` without stop words or non-letters."""
    words = (lemma(w) for w in _LETTERS.findall(text.lower()) if w not in STOP_WORDS)
    return [w for w in words if w not in STOP_WORDS and len(w) > 1]


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # object | background | colour | size | distractor | class
    synonyms: tuple[str, ...]
    group: str | None = None  # e.g. "water" / "land" for backgrounds of the waterbirds layout


class ConceptVocabulary:
    """Synonym sets over lemmas; the bridge from an explanation's words to ground-truth concepts."""

    def __init__(self, concepts: Iterable[Concept]):
        self.concepts = tuple(concepts)
        self._by_name = {c.name: c for c in self.concepts}
        if len(self._by_name) != len(self.concepts):
            raise ValueError("concept names must be unique")
        index: dict[str, list[Concept]] = {}
        for concept in self.concepts:
            # a "kind:" prefix of a name (class:round) is a namespace, not a word
            for phrase in (concept.name.rsplit(":", 1)[-1], *concept.synonyms):
                for word in content_words(phrase):
                    if concept not in index.setdefault(word, []):
                        index[word].append(concept)
        self._index = index

    def __getitem__(self, name: str) -> Concept:
        return self._by_name[name]

    def words(self, kinds: Sequence[str] | None = None) -> list[str]:
        """Every lemma the vocabulary knows (of the given concept kinds), sorted."""
        return sorted(w for w, cs in self._index.items() if kinds is None or any(c.kind in kinds for c in cs))

    def lookup(self, text: str) -> list[Concept]:
        """Concepts named by a word or phrase (each content word looked up)."""
        found: list[Concept] = []
        for word in content_words(text):
            for concept in self._index.get(word, ()):
                if concept not in found:
                    found.append(concept)
        return found

    def concept_weights(self, explanation: Explanation | Mapping[str, float]) -> dict[str, float]:
        """Share of the explanation's total weight that lands on each concept (sums to <= 1)."""
        weights = explanation.weights if isinstance(explanation, Explanation) else dict(explanation)
        total = sum(weights.values())
        shares: dict[str, float] = {}
        if total <= 0:
            return shares
        for text, weight in weights.items():
            hits = [(w, self._index[w]) for w in content_words(text) if w in self._index]
            for _, concepts in hits:
                for concept in concepts:
                    share = weight / total / len(hits) / len(concepts)
                    shares[concept.name] = shares.get(concept.name, 0.0) + share
        return shares

    def share(self, explanation: Explanation | Mapping[str, float], kind: str, group: str | None = None) -> float:
        """Weight share on concepts of one kind (and optionally one group)."""
        return sum(v for name, v in self.concept_weights(explanation).items()
                   if self[name].kind == kind and (group is None or self[name].group == group))


def concept_shares(vocab: "ConceptVocabulary", explanation: Any, names: Sequence[str]) -> dict[str, float]:
    """Share of an explanation's weight on each of the concepts `names` (a class concept counts as its shape).

    Unlike the vocabulary's own split, a word's weight is split only among the concepts in `names`
    that it names: "grass" also names the group concept `land`, which is no background type, and
    must not halve grass against "lava", which names no group. A word that names several of them
    ("water": ocean and lake) splits evenly, so "water" alone ties ocean with lake, while "calm
    water" (a lake synonym) still puts lake first. Words that name none of them weigh nothing.
    """
    wanted, shares = set(names), {}
    total = sum(w for _, w in explanation.concepts)
    if total <= 0:
        return shares
    for text, weight in explanation.concepts:
        hits = []
        for word in content_words(text):
            found = {c.name.removeprefix("class:") for c in vocab.lookup(word)} & wanted
            if found:
                hits.append(sorted(found))
        for found in hits:
            for name in found:
                shares[name] = shares.get(name, 0.0) + weight / total / len(hits) / len(found)
    return shares


def hit_at_k(shares: Mapping[str, float], truth: str, k: int) -> float:
    """1 if `truth` is among the k heaviest concepts, 0 if not; a tie across the cut gets the share
    of the tied places that fall inside it, so no tie-breaking order favours anyone."""
    mine = shares.get(truth, 0.0)
    if mine <= 0:
        return 0.0
    above = sum(1 for v in shares.values() if v > mine)
    tied = sum(1 for v in shares.values() if v == mine)
    return float(np.clip((k - above) / tied, 0.0, 1.0))
