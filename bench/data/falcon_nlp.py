"""The word pipeline of FALCON's released code (NehaKalibhat/falcon-explain, `falcon_utils.py`:
`clean_text`, `parse_captions`, `get_max_score_for_word`), offline and without pickles.

The released code runs TextBlob 0.17.1 on NLTK 3.8.1 with NLTK Data's `averaged_perceptron_tagger`
(the file NLTK 3.8.1 loads) and WordNet 3.0. For one cleaned caption it does, in this order:

1. `clean_text`: lower-case; remove apostrophes; every run of characters other than ASCII letters,
   digits, space and newline becomes one space; `fig<digits>` becomes a space; every match of
   `' . '` (a space, any one character, a space; non-overlapping, left to right) becomes one space;
   split on single spaces and drop every piece that is in the discard list (`''` is in it, so empty
   pieces go too); join with single spaces.
2. TextBlob's `tags`: NLTK's `word_tokenize` (its Punkt sentence split is the identity here: the
   cleaned text holds no `.`, `?` or `!`), then NLTK's averaged-perceptron tagger over the tokens.
3. Keep the tokens tagged NN, NNP, NNS, VB, VBD, VBG, VBN, VBP, VBZ, JJ, JJR or JJS, as a set.
4. Per token: `Word.lemmatize()` = WordNet's morphy with the NOUN part of speech, the shortest
   of its lemmas (the token itself when WordNet has none), so verb forms mostly stay
   ("playing", "parked", "seen") and some change ("does" -> "doe", "was" -> "wa").
5. Keep the lemma when it is not an NLTK English stop word, not in the discard list, has no digit
   and has more than 2 characters. Stop words are thus checked only AFTER lemmatising.

Here the tokeniser and the tagger are NLTK's own code (`nltk.tokenize.word_tokenize`,
`nltk.tag.perceptron.PerceptronTagger`); the tagger's weights and WordNet's noun index and noun
exception list ship with fexbench (`fexbench/data/falcon_words/`, see its README.md for their
origin, checksums and licences), since NLTK's data cannot be downloaded at run time. Morphy for
nouns is transcribed from NLTK 3.8.1's `WordNetCorpusReader._morphy` (the nine noun suffix rules,
the exception list first); tests/test_parity_falcon.py checks it against NLTK's own `_morphy`.
"""
from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from importlib import resources

# The part-of-speech tags whose words the released code keeps (parse_captions' `words_in_cap`).
RELEASED_TAGS = frozenset(("NN", "NNP", "NNS", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "JJ", "JJR", "JJS"))
# WordNet's morphy suffix rules for nouns (NLTK 3.8.1 MORPHOLOGICAL_SUBSTITUTIONS[NOUN], in order).
NOUN_SUBSTITUTIONS = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
                      ("shes", "sh"), ("men", "man"), ("ies", "y"))

_NOT_KEPT = re.compile("[^A-Za-z0-9 \n]+")
_FIG = re.compile(r"fig\d+")
_LONE = re.compile(" . ")


def _data(name: str) -> bytes:
    return gzip.decompress(resources.files("fexbench.data").joinpath("falcon_words", name).read_bytes())


@lru_cache(maxsize=1)
def noun_lemmas() -> frozenset[str]:
    """The lemmas of WordNet 3.0's noun index (index.noun), 117,798 of them."""
    return frozenset(_data("wordnet30_noun_lemmas.txt.gz").decode("utf-8").split())


@lru_cache(maxsize=1)
def noun_exceptions() -> dict[str, tuple[str, ...]]:
    """WordNet 3.0's noun exception list (noun.exc): inflected form -> its base forms."""
    out = {}
    for line in _data("wordnet30_noun.exc.gz").decode("utf-8").splitlines():
        terms = line.split()
        if terms:
            out[terms[0]] = tuple(terms[1:])
    return out


def noun_morphy(form: str) -> list[str]:
    """WordNet's morphy for the noun part of speech: the candidate lemmas of `form`, in order."""
    index = noun_lemmas()

    def apply_rules(forms):
        return [f[:-len(old)] + new for f in forms for old, new in NOUN_SUBSTITUTIONS if f.endswith(old)]

    def filter_forms(forms):
        return list(dict.fromkeys(f for f in forms if f in index))

    exceptions = noun_exceptions()
    if form in exceptions:
        return filter_forms([form, *exceptions[form]])
    forms = apply_rules([form])
    results = filter_forms([form] + forms)
    if results:
        return results
    while forms:
        forms = apply_rules(forms)
        results = filter_forms(forms)
        if results:
            return results
    return []


def noun_lemma(word: str) -> str:
    """TextBlob's `Word(word).lemmatize()`: the shortest noun lemma, or the word itself."""
    lemmas = noun_morphy(word)
    return min(lemmas, key=len) if lemmas else word


@lru_cache(maxsize=1)
def tagger():
    """NLTK's averaged-perceptron tagger with the weights NLTK 3.8.1's `pos_tag` loads."""
    from nltk.tag.perceptron import PerceptronTagger

    data = json.loads(_data("averaged_perceptron_tagger.json.gz"))
    out = PerceptronTagger(load=False)
    out.model.weights = data["weights"]
    out.tagdict = data["tagdict"]
    out.classes = out.model.classes = set(data["classes"])
    return out


def clean_text(text: str, discard: frozenset[str] | set[str]) -> str:
    """The released `clean_text` (step 1 above)."""
    text = text.lower().replace("'", "")
    text = _NOT_KEPT.sub(" ", text)
    text = _FIG.sub(" ", text)
    text = _LONE.sub(" ", text)
    return " ".join(t for t in text.split(" ") if t not in discard)


def tag(text: str) -> list[tuple[str, str]]:
    """TextBlob 0.17.1's `TextBlob(text).tags` for a cleaned caption (steps 2)."""
    from nltk.tokenize import word_tokenize

    if not text.strip():
        return []
    return tagger().tag(word_tokenize(text, preserve_line=True))


def released_words(caption: str, stop: frozenset[str], discard: frozenset[str]) -> set[str]:
    """Steps 1-5: the words the released code scores for one caption."""
    kept = {token for token, t in tag(clean_text(caption, discard)) if t in RELEASED_TAGS}
    out = set()
    for token in kept:
        word = noun_lemma(token)
        if word not in stop and word not in discard and not any(ch.isdigit() for ch in word) and len(word) > 2:
            out.add(word)
    return out
