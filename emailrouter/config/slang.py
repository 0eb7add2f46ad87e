"""config/slang.yaml and the stemmer's dictionary -> the core's Normaliser (see core/normalise.py).

Reading the slang file (every bad entry a problem naming its line) and PySastrawi's installed word list
is done here, once, when the config loads; the normaliser itself is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from emailrouter.config.yamlfile import LineDict, LineList, Reader, describe
from emailrouter.core.normalise import WORD, Normaliser, Settings, Slang, rules_stemmer


def sastrawi_stemmer(extra_words: Iterable[str] = ()) -> tuple[Callable[[str], str], frozenset[str]]:
    """PySastrawi's stemmer for one word, with `extra_words` added to its dictionary; and that dictionary."""
    from Sastrawi.Stemmer.StemmerFactory import StemmerFactory  # type: ignore[import-untyped]

    cached = StemmerFactory().create_stemmer()
    stemmer = cached.delegatedStemmer  # the uncached one: we memoise per word ourselves
    dictionary = stemmer.get_dictionary()
    dictionary.add_words(set(extra_words))
    stem_word: Callable[[str], str] = stemmer.stem_word
    return stem_word, frozenset(dictionary.words)


def sastrawi_dictionary() -> frozenset[str]:
    """The root words PySastrawi ships (about 30,000)."""
    text = resources.files("Sastrawi.Stemmer").joinpath("data/kata-dasar.txt").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.split("\n") if w.strip())


def make_normaliser(settings: Settings, vocabulary: Iterable[str] = ()) -> Normaliser:
    """A normaliser for these settings; `vocabulary` (the signals' words) counts as known words.
    Reads the stemmer's dictionary from the installed PySastrawi package when a stemmer is used."""
    vocabulary = frozenset(vocabulary)
    # roots the stemmer should know besides its own: the kept words ("lemot", so "lemotnya" -> "lemot")
    roots = settings.slang.keep | frozenset(settings.slang.roots.values())
    if settings.stem == "sastrawi":
        stem, dictionary = sastrawi_stemmer(w for w in roots if w.replace("-", "").isalpha())
        return Normaliser(settings, lexicon=dictionary | vocabulary, stemmer=stem)
    if settings.stem == "rules":
        dictionary = sastrawi_dictionary() | roots
        return Normaliser(settings, lexicon=dictionary | vocabulary, stemmer=rules_stemmer(dictionary))
    return Normaliser(settings, lexicon=vocabulary)


def read_slang(r: Reader, doc: Any) -> Slang | None:
    """config/slang.yaml -> Slang; every bad entry is a problem naming its line."""
    if not isinstance(doc, LineDict):
        r.fail(doc, None, "", f"expected a mapping with slang, keep, roots, got {describe(doc)}")
        return None
    r.known_keys(doc, "", {"slang", "keep", "roots"})
    ok = True
    words: dict[str, tuple[str, ...]] = {}
    node = r.get(doc, "slang", "", LineDict, required=False) or LineDict()
    for key, value in node.items():
        path = f"slang.{key}"
        token = str(key).casefold()
        if not WORD.fullmatch(token):
            r.fail(node, key, path, "a slang entry is one word as customers write it (letters, digits, ' or -)")
            ok = False
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            r.fail(node, key, path, f"expected the word(s) it stands for, got {describe(value)}")
            ok = False
            continue
        expansion = tuple(str(value).casefold().split())
        bad = [w for w in expansion if not WORD.fullmatch(w)]
        if bad:
            r.fail(node, key, path, f"not a word: {bad[0]!r}")
            ok = False
            continue
        if expansion == (token,):
            r.fail(node, key, path, "stands for itself: leave it out", warning=True)
            continue
        words[token] = expansion
    keep: set[str] = set()
    keep_node = r.get(doc, "keep", "", LineList, required=False) or LineList()
    for i, path, item in r.items(keep_node, "keep"):
        if not isinstance(item, str) or not WORD.fullmatch(item.casefold()):
            r.fail(keep_node, i, path, f"expected one word, got {describe(item)}")
            ok = False
            continue
        keep.add(item.casefold())
        if item.casefold() in words:
            r.fail(keep_node, i, path, f"{item!r} is also a slang entry: the slang entry wins", warning=True)
    roots: dict[str, str] = {}
    roots_node = r.get(doc, "roots", "", LineDict, required=False) or LineDict()
    for key, value in roots_node.items():
        path = f"roots.{key}"
        if not WORD.fullmatch(str(key).casefold()) or not isinstance(value, str) or not WORD.fullmatch(value):
            r.fail(roots_node, key, path, f"expected word: root (one word each), got {describe(value)}")
            ok = False
            continue
        roots[str(key).casefold()] = value.casefold()
    return Slang(words, frozenset(keep), roots) if ok else None
