"""The synthetic world's concept vocabulary: its shapes, colours, sizes and backgrounds, with synonyms.

Background concepts carry their waterbirds group (water / land); generic group words (sea, tree,
...) are concepts of their own in that group, so an explanation that says "trees" counts as naming
land. Distractor words give random and vocabulary-scanning explainers something unrelated to pick.
"""
from __future__ import annotations

from functools import lru_cache

from fexbench.data import world
from fexbench.data.concepts import Concept, ConceptVocabulary

GROUP_WORDS = {
    "water": ("water", "sea", "wave", "ocean", "lake", "pond", "river", "shore", "beach", "coast", "wet"),
    "land": ("land", "ground", "grass", "forest", "tree", "wood", "meadow", "field", "lawn", "bamboo", "leaf"),
}
DISTRACTORS = ("car", "music", "cloud", "house", "book", "chair", "city", "computer", "guitar", "bread",
               "window", "train", "clock", "phone", "shoe", "cup", "lamp", "bicycle", "pencil", "key")


@lru_cache(maxsize=None)
def world_vocabulary(class_names: tuple[str, ...] = ()) -> ConceptVocabulary:
    concepts = [Concept(name, "object", tuple(world.SYNONYMS.get(name, ()))) for name in world.SHAPES]
    concepts += [Concept(name, "background", tuple(world.SYNONYMS.get(name, ())), world.BACKGROUND_GROUP.get(name))
                 for name in world.BACKGROUNDS]
    concepts += [Concept(name, "colour", ()) for name in world.COLOURS]
    concepts += [Concept(name, "size", ()) for name in ("small", "large")]
    concepts += [Concept(group, "background", words, group) for group, words in GROUP_WORDS.items()]
    concepts += [Concept(f"class:{name}", "class", (name,)) for name in class_names]
    concepts += [Concept(word, "distractor", ()) for word in DISTRACTORS]
    return ConceptVocabulary(concepts)
