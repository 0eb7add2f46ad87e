"""The customer's words as the signals read them: case-folded, de-elongated, reduplication written out,
slang and abbreviations expanded, and each word's root (Indonesian affixes removed). Pure: the only state
is a memo of words already seen, which never changes an answer.

Each word the customer wrote has three forms, and a signal matches any of them:

    as written   "gk"        "lemottt"   "berkali2"       "terputusnya"
    normal       "tidak"     "lemot"     "berkali-kali"   "terputusnya"
    root         "tidak"     "lemot"     "kali"           "putus"

The normal form comes from config/slang.yaml (one token may become several words: "gaada" -> "tidak ada")
and two spelling rules: a letter repeated 3+ times is written once or twice, whichever is a known word
("lemottt" -> "lemot", "goooogle" -> "google"), a doubled letter is written once only when the word is
unknown and the single form is known ("lemott" -> "lemot", but "maaf", "saat", "zoom" stay); "kata2" is
"kata-kata", "berkali2" "berkali-kali". The root is the stemmer's (PySastrawi, or a few rules of our
own), never for short words, English words or words listed under `keep:`.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

Stem = Literal["sastrawi", "rules", "none"]
STEMMERS: tuple[Stem, ...] = ("sastrawi", "rules", "none")

# What signals see as one word (as classify._WORD), plus the punctuation that ends a clause or sentence.
TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*|[.!?]+|[,;:()\"]|\n")
_TOKEN_ASCII = re.compile(r"[a-zA-Z0-9]+(?:['-][a-zA-Z0-9]+)*|[.!?]+|[,;:()\"]|\n")  # TOKEN on ASCII text, faster
WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_RUN = re.compile(r"([^\W\d_])\1+")
_REDUPLICATED = re.compile(r"([^\W\d_]{2,})2(nya|an|kan|lah|pun|in|i|ku|mu)?")
_CLITIC = re.compile(r"(.{2,}?)(nya|lah|kah|pun|ku|mu)")
_PREFIXES_OF_REDUPLICATION = ("ber", "ter", "se", "me", "di", "ke")
SENTENCE_END = "."
QUESTION_END = "?"
CLAUSE_END = ","
MARKERS = frozenset({SENTENCE_END, QUESTION_END, CLAUSE_END})
MAX_MEMO = 200_000  # distinct words remembered; past that the memo starts afresh (answers never change)
MAX_STEMMED_LENGTH = 24  # longer tokens are no Indonesian words (and the stemmer's cost grows with length)
MAX_RUNS = 4  # elongated runs in one word tried in combination; more than that: each run written once
_V = TypeVar("_V")


@dataclass(frozen=True)
class Slang:
    """What config/slang.yaml says: token -> the words it stands for, words kept as written, root overrides."""

    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keep: frozenset[str] = frozenset()  # known as written: never de-elongated or stemmed (English, brands, ...)
    roots: Mapping[str, str] = field(default_factory=dict)  # word -> its root, where the stemmer is wrong


@dataclass(frozen=True)
class Settings:
    """The `normalise:` section of signals.yaml."""

    slang: Slang = Slang()
    stem: Stem = "none"
    min_stem_length: int = 5  # shorter words are never stemmed
    elongation: bool = True
    reduplication: bool = True
    checksum: str = ""  # of the slang file: part of the config version


@dataclass(frozen=True)
class Form:
    """One token, and what it reads as: its normal words and the root of each (a line break: none)."""

    written: tuple[str, ...]  # the token as written, once per normal word
    normal: tuple[str, ...]
    roots: tuple[str, ...]


_LINE_BREAK = Form((), (), ())


@dataclass
class Tokens:
    """A text as three parallel word sequences (as written, normal, root) with punctuation markers between.

    A slang token that stands for several words fills several positions, each with the token as written.
    Markers sit at the same position in all three: as written the punctuation itself ("!!!"), in the normal
    and root sequences "." (the end of a sentence), "?" (of a question) or "," (of a clause).
    `breaks` holds the positions where a line break falls (a line break is no marker: mail is hard-wrapped).
    """

    words: list[str]
    normal: list[str]
    roots: list[str]
    forms: list[Form] = field(default_factory=list, repr=False)  # one per token, line breaks included
    _breaks: frozenset[int] | None = field(default=None, repr=False)
    _raw: list[str] | None = field(default=None, repr=False, compare=False)  # the tokens, if one position each

    @property
    def breaks(self) -> frozenset[int]:
        """The positions where a line break falls (worked out when first asked)."""
        if self._breaks is None and self._raw is not None:  # one position per token: count the breaks off
            raw, lines, i = self._raw, [], -1
            for k in range(raw.count("\n")):
                i = raw.index("\n", i + 1)
                lines.append(i - k)
            self._breaks = frozenset(lines)
        if self._breaks is None:
            forms = self.forms
            lines = [i for i, f in enumerate(forms) if f is _LINE_BREAK]
            if len(self.normal) + len(lines) == len(forms):  # one position per token: count the breaks off
                self._breaks = frozenset(i - k for k, i in enumerate(lines))
            else:
                out: set[int] = set()
                position = 0
                for f in forms:
                    if f is _LINE_BREAK:
                        out.add(position)
                    position += len(f.normal)
                self._breaks = frozenset(out)
        return self._breaks


def _marker(token: str) -> str:
    if token[0] in ".!?":
        return QUESTION_END if "?" in token else SENTENCE_END
    return CLAUSE_END


class Normaliser:
    """Turns case-folded tokens into their forms (memoised per token)."""

    def __init__(
        self,
        settings: Settings = Settings(),
        *,
        lexicon: Iterable[str] = (),
        stemmer: Callable[[str], str] | None = None,
    ) -> None:
        """`lexicon`: words known as they are (the stemmer's dictionary, the signals' words);
        `stemmer`: word -> root."""
        self.settings = settings
        slang = settings.slang
        self._slang = slang.words
        self._keep = slang.keep
        self._roots = slang.roots
        self._stemmer = stemmer if settings.stem != "none" else None
        known = set(lexicon) | set(slang.words) | set(slang.keep) | set(slang.roots) | set(slang.roots.values())
        for words in slang.words.values():
            known.update(words)
        self.known = frozenset(known)
        self._memo: dict[str, Form] = {}
        # of each token memoised that fills one position (a word or a marker): its normal word and its root
        self._normal1: dict[str, str] = {}
        self._root1: dict[str, str] = {}

    @property
    def identity(self) -> bool:
        """True when nothing is ever rewritten (no slang, no spelling rules, no stemmer)."""
        s = self.settings
        return not (self._slang or self._roots or self._stemmer or s.elongation or s.reduplication)

    # ----------------------------------------------------------------------- one token

    def form(self, token: str) -> Form:
        """The forms of one case-folded token (a word, or a marker)."""
        memo = self._memo
        found = memo.get(token)
        if found is None:
            if len(memo) >= MAX_MEMO:
                memo.clear()
                self._normal1.clear()
                self._root1.clear()
            if token == "\n":
                found = _LINE_BREAK
            elif token[0] in '.!?,;:()"':
                found = Form((token,), (_marker(token),), (_marker(token),))
            else:
                normal = self.normal(token)
                found = Form((token,) * len(normal), normal, tuple(self.root(w) for w in normal))
            memo[token] = found
            if len(found.normal) == 1:
                self._normal1[token] = found.normal[0]
                self._root1[token] = found.roots[0]
        return found

    def normal(self, word: str) -> tuple[str, ...]:
        """The words a case-folded word stands for: slang expanded, elongation and reduplication undone."""
        slang = self._slang
        if word in slang:
            return slang[word]
        s = self.settings
        if s.reduplication and "2" in word and (m := _REDUPLICATED.fullmatch(word)):
            return (self._reduplicated(m.group(1), m.group(2) or ""),)
        if word in self.known:
            return (word,)
        if not word.isalpha():
            return (word,)
        if s.elongation and _RUN.search(word):
            collapsed = self._deelongated(word)
            if collapsed != word:
                return slang.get(collapsed, (collapsed,))
        if (m := _CLITIC.fullmatch(word)) and len(slang.get(m.group(1), ())) == 1:
            return (slang[m.group(1)][0] + m.group(2),)  # "inetnya" -> "internetnya"
        return (word,)

    def _deelongated(self, word: str) -> str:
        """Runs of a letter: 3+ -> one (or two, if only that is a known word); 2 -> one if only that is known."""
        runs = list(_RUN.finditer(word))
        if len(runs) > MAX_RUNS:
            return _RUN.sub(lambda m: m.group(1) * (1 if len(m.group(0)) > 2 else 2), word)
        options = [(1, 2) if len(m.group(0)) > 2 else (2, 1) for m in runs]
        first = ""
        for counts in itertools.product(*options):
            parts: list[str] = []
            end = 0
            for m, n in zip(runs, counts, strict=True):
                parts.append(word[end : m.start()] + m.group(1) * n)
                end = m.end()
            candidate = "".join(parts) + word[end:]
            if candidate in self.known or candidate in self._slang:
                return candidate
            first = first or candidate
        return first

    def _reduplicated(self, base: str, suffix: str) -> str:
        """ "hari2" -> "hari-hari", "berkali2" -> "berkali-kali", "terus2an" -> "terus-terusan"."""
        expanded = self._slang.get(base, ())
        if len(expanded) == 1:
            base = expanded[0]
        second = base
        for prefix in _PREFIXES_OF_REDUPLICATION:  # "berkali" -> "kali", "sedikit" -> "dikit"; "diam" stays
            rest = base[len(prefix) :]
            if base.startswith(prefix) and len(rest) >= 4 and rest in self.known:
                second = rest
                break
        return f"{base}-{second}{suffix}"

    def root(self, word: str) -> str:
        """The root of a normal word: the override, else the stemmer's, never for short or kept words."""
        override = self._roots.get(word)
        if override is not None:
            return override
        stemmer = self._stemmer
        if (
            stemmer is None
            or word in self._keep
            or not self.settings.min_stem_length <= len(word) <= MAX_STEMMED_LENGTH
            or not word.replace("-", "").isalpha()
        ):
            return word
        return stemmer(word) or word

    # ----------------------------------------------------------------------- a text

    def tokens(self, folded: str) -> Tokens:
        """The three word sequences of a case-folded text."""
        memo = self._memo
        raw = (_TOKEN_ASCII if folded.isascii() else TOKEN).findall(folded)
        try:
            forms = _pick(memo, raw)
        except KeyError:  # new tokens: their forms first (the memo may start afresh meanwhile)
            for token in set(raw).difference(memo):
                self.form(token)
            forms = [memo.get(t) or self.form(t) for t in raw]
        lines = raw.count("\n")
        written = [t for t in raw if t != "\n"] if lines else raw
        try:  # the usual case: every token fills one position
            return Tokens(written, _pick(self._normal1, written), _pick(self._root1, written), forms, _raw=raw)
        except KeyError:  # a slang token standing for several words (or the memo started afresh meanwhile)
            pass
        normal = [w for f in forms for w in f.normal]
        breaks = raw.count("\n")
        if len(normal) != len(raw) - breaks:  # a slang token standing for several words
            words = [w for f in forms for w in f.written]
        elif breaks:
            words = [t for t in raw if t != "\n"]
        else:
            words = raw
        return Tokens(words, normal, [w for f in forms for w in f.roots], forms)

    def text(self, text: str) -> str:
        """A readable normal form of a text (case-folded): each word's root in brackets where it differs."""
        return describe_tokens(self.tokens(text.casefold()))


def _pick(table: Mapping[str, _V], keys: list[str]) -> list[_V]:
    """table[key] for each key, at C speed (KeyError if one is missing)."""
    if len(keys) < 2:  # itemgetter of one key gives the value itself, of none it is no getter
        return [table[k] for k in keys]
    return list(operator.itemgetter(*keys)(table))


def describe_tokens(tokens: Tokens, limit: int = 0) -> str:
    """The normal words with their roots in brackets where they differ ("terputus[putus]"), markers attached."""
    normal, roots = tokens.normal, tokens.roots
    if limit and len(normal) > limit:
        normal, roots = normal[:limit], roots[:limit]
    text = " ".join([n if n == r else f"{n}[{r}]" for n, r in zip(normal, roots, strict=True)])
    text = text.replace(" .", ".").replace(" ?", "?").replace(" ,", ",")
    return text + " …" if limit and len(tokens.normal) > limit else text


# --------------------------------------------------------------------------- stemmers


_RULE_SUFFIXES = ("lah", "kah", "tah", "pun", "nya", "ku", "mu", "kan", "an", "i")
_RULE_PREFIXES = (
    ("memper", ""), ("menye", "s"), ("meng", ""), ("meng", "k"), ("meny", "s"), ("mem", "p"), ("mem", ""),
    ("men", "t"), ("men", ""), ("me", ""), ("peng", ""), ("peng", "k"), ("peny", "s"), ("pem", "p"), ("pem", ""),
    ("pen", "t"), ("pen", ""), ("per", ""), ("pe", ""), ("ber", ""), ("be", ""), ("ter", ""), ("di", ""),
    ("ke", ""), ("se", ""),
)  # fmt: skip


def rules_stemmer(lexicon: frozenset[str]) -> Callable[[str], str]:
    """Our own affix rules: strip one prefix (with meN-/peN- sound changes) and up to two suffixes,
    and take the first candidate that is a known root."""

    def stem(word: str) -> str:
        if word in lexicon:
            return word
        if "-" in word:
            first, _, second = word.partition("-")
            a, b = stem(first), stem(second)
            return a if a == b or first == second else word
        bodies = [word]
        for _ in range(2):
            for body in list(bodies):
                for suffix in _RULE_SUFFIXES:
                    if body.endswith(suffix) and len(body) - len(suffix) >= 3:
                        bodies.append(body[: -len(suffix)])
        for body in bodies:
            if body in lexicon:
                return body
            for prefix, sound in _RULE_PREFIXES:
                if body.startswith(prefix):
                    candidate = sound + body[len(prefix) :]
                    if len(candidate) >= 3 and candidate in lexicon:
                        return candidate
        return word

    return stem
