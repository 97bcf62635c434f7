"""Words to concepts: plural and inflected forms of every world concept reach that concept.

The expected concept of each form is written by hand from English (a plural names what its
singular names), not read from the lemmatiser, so a lemmatiser that mangles a form fails here.
"""
from __future__ import annotations

import pytest

from fexbench.data import world
from fexbench.data.concepts import content_words, lemma
from fexbench.data.world_concepts import GROUP_WORDS, world_vocabulary

# form -> the concept it must name (a form may name others too, e.g. "trees": forest and land)
FORMS = {
    # shapes and their synonyms
    "circles": "circle", "disks": "circle", "dots": "circle",
    "rings": "ring", "donuts": "ring", "hoops": "ring", "annuli": "ring",
    "crescents": "crescent", "moons": "crescent", "sickles": "crescent",
    "squares": "square", "boxes": "square", "blocks": "square",
    "triangles": "triangle", "pyramids": "triangle",
    "crosses": "cross", "signs": "cross",
    "stars": "star",
    "bars": "bar", "sticks": "bar", "rods": "bar", "strips": "bar",
    "hearts": "heart",
    # backgrounds and their synonyms
    "oceans": "ocean", "seas": "ocean", "waves": "ocean",
    "lakes": "lake", "ponds": "lake",
    "forests": "forest", "woods": "forest", "trees": "forest",
    "grasses": "grass", "meadows": "grass", "lawns": "grass",
    "sands": "sand", "beaches": "sand", "dunes": "sand", "deserts": "sand",
    "snows": "snow", "snowfields": "snow",
    "rocks": "rock", "gravels": "rock",
    "bricks": "brick", "walls": "brick", "brickworks": "brick",
    "lavas": "lava", "magmas": "lava",
    # colours (as nouns, and comparatives) and sizes
    "reds": "red", "redder": "red", "greens": "green", "greener": "green", "blues": "blue",
    "yellows": "yellow", "purples": "purple", "oranges": "orange", "whites": "white", "whiter": "white",
    "pinks": "pink",
    "smaller": "small", "smallest": "small", "larger": "large", "largest": "large",
    # the land / water groups and their words
    "waters": "water", "wettest": "water", "rivers": "water", "shores": "water", "coasts": "water",
    "lands": "land", "grounds": "land", "fields": "land", "bamboos": "land", "leaves": "land",
}
GROUP_FORMS = {"water": ("seas", "waves", "oceans", "lakes", "ponds", "beaches"),
               "land": ("grasses", "forests", "trees", "woods", "meadows", "lawns")}


def test_every_world_concept_has_forms_in_the_list():
    vocab = world_vocabulary()
    named = set(FORMS.values()) | set(GROUP_FORMS)
    wanted = {c.name for c in vocab.concepts if c.kind in ("object", "background", "colour", "size")}
    assert wanted <= named, sorted(wanted - named)
    for group, words in GROUP_WORDS.items():   # every group word has a form that reaches the group
        forms = [f for f, c in FORMS.items() if c == group] + list(GROUP_FORMS[group])
        reached = {lemma(f) for f in forms}
        assert set(words) <= reached | {group}, (group, sorted(set(words) - reached))


@pytest.mark.parametrize("form, concept", sorted(FORMS.items()))
def test_a_form_names_its_concept(form, concept):
    names = {c.name for c in world_vocabulary().lookup(form)}
    assert concept in names, (form, lemma(form), names)


@pytest.mark.parametrize("group, forms", sorted(GROUP_FORMS.items()))
def test_plural_background_words_name_their_group(group, forms):
    vocab = world_vocabulary()
    for form in forms:
        assert group in {c.name for c in vocab.lookup(form)}, (form, lemma(form))


def test_lemmas_of_forms_simplemma_mangled():
    assert lemma("crosses") == "cross" and lemma("playing") == "play" and lemma("leaves") == "leaf"
    assert lemma("grasses") == "grass" and lemma("Trees") == "tree" and lemma("an") == "a"


def test_base_forms_are_their_own_lemmas():
    # every word the world vocabulary knows is already a lemma (lemmatising twice changes nothing)
    for word in world_vocabulary().words():
        assert lemma(word) == word, word


def test_a_sentence_reaches_each_concept_it_names():
    vocab = world_vocabulary()
    text = "Two red crosses among the leaves, smaller hoops floating on ocean waves"
    assert content_words(text) == ["red", "cross", "leaf", "small", "hoop", "float", "ocean", "wave"]
    names = {c.name for c in vocab.lookup(text)}
    assert {"red", "cross", "land", "small", "ring", "ocean", "water"} <= names
    assert not names & set(world.SHAPES) - {"cross", "ring"}
