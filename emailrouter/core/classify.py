"""Intent and hard-complaint classification from weighted, YAML-defined signals. Pure.

Over 400 lines: a signal's matching (words as written, normal and root forms, phrases, near, regexes,
questions), its trace and the index that skips signals with nothing to match are one unit: each fast
path must find exactly what the plain matcher finds, and is tested against it in the same module.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from emailrouter.core.combine import DEFAULT_COMBINE, CombineSettings, combine_hard, combine_intent
from emailrouter.core.model import Classification, Intent, Language, ModelOutput, SignalHit
from emailrouter.core.normalise import MARKERS, QUESTION_END, SENTENCE_END, Normaliser, Settings, describe_tokens
from emailrouter.core.textmodel import TextModel

# Text past this many characters is not scanned: signals live at the top of a mail,
# and a pathological body must not cost more than a normal one.
MAX_SCANNED_CHARS = 20_000
MAX_MATCHES_SHOWN = 5
SHOUTING_SAMPLE = 4_000  # characters looked at for the share of capitals

_ADDRESSES_AND_LINKS = re.compile(r"[^\s<>()\[\]]+@[^\s<>()\[\]]+|\b(?:https?://|www\.)\S+")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_BANGS = re.compile("!+")
# Latin-1 byte tables: counting letters and capitals with bytes.translate runs at C speed.
_NOT_LETTER = bytes(c for c in range(256) if not chr(c).isalpha())
_NOT_UPPER = bytes(c for c in range(256) if not chr(c).isupper())
SENTENCE_MARKERS = frozenset({SENTENCE_END, QUESTION_END})
PLAIN = Normaliser(Settings(elongation=False, reduplication=False))  # words as written, nothing rewritten


def fold(text: str) -> str:
    """Case-folded, typographic apostrophes straightened: what keywords, phrases and regexes see."""
    folded = text.casefold()
    return folded.replace("’", "'").replace("‘", "'") if not folded.isascii() else folded


class Question:
    """What makes a sentence a question: it ends with "?", or it holds one of these words or phrases
    (in any form). Signals with `in_question` weigh differently there ("bagaimana cara berhenti
    berlangganan?" asks how, it does not ask us to terminate)."""

    __slots__ = ("keywords", "phrases")

    def __init__(self, keywords: frozenset[str] = frozenset(), phrases: tuple[Phrase, ...] = ()) -> None:
        self.keywords = keywords
        self.phrases = phrases


NO_QUESTION = Question()


class Text:
    """The customer's own words (subject and text, never the quoted part), prepared once for every signal:
    as written (case-folded) and as normalised (emailrouter/normalise.py: normal form and root)."""

    __slots__ = (
        "_bounds",
        "_counts",
        "_index",
        "_pairs",
        "_positions",
        "_question_places",
        "_questions",
        "any_set",
        "folded",
        "normal_set",
        "original",
        "plain_set",
        "question",
        "root_set",
        "seqs",
        "sets",
        "tokens",
        "word_set",
    )

    def __init__(
        self, subject: str, text: str, normaliser: Normaliser | None = None, question: Question | None = None
    ) -> None:
        original = f"{subject}\n{text}"[:MAX_SCANNED_CHARS]
        if "@" in original or "://" in original or "www." in original:
            original = _ADDRESSES_AND_LINKS.sub(" ", original)  # "info@..." is not a question
        self.original = original
        self.folded = fold(self.original)
        tokens = (normaliser or PLAIN).tokens(self.folded)
        self.tokens = tokens
        self.word_set = frozenset(tokens.words)
        self.normal_set = frozenset(tokens.normal)
        self.root_set = frozenset(tokens.roots)
        self.plain_set = self.normal_set | self.word_set
        self.any_set = self.plain_set | self.root_set
        self.seqs = (tokens.words, tokens.normal, tokens.roots)  # by form: as written, normal, roots
        self.sets = (self.word_set, self.normal_set, self.root_set)
        self.question = question or NO_QUESTION
        self._questions: dict[int, bool] = {}
        self._bounds: list[int] | None = None
        self._counts: Counter[str] | None = None
        self._positions: dict[str, list[int]] = {}  # as written or in normal form (roots=False), by word
        self._index: dict[str, list[int]] | None = None  # in any form, by word
        self._pairs: set[tuple[str, str]] | None = None
        self._question_places: tuple[list[int], list[tuple[int, int]]] | None = None

    def normalised(self, limit: int = 200) -> str:
        """For people: the normal form, each root in brackets where it differs (`explain`)."""
        return describe_tokens(self.tokens, limit)

    def capitals(self) -> tuple[int, int]:
        """(letters, capital letters) in the first SHOUTING_SAMPLE characters (Latin-1 letters)."""
        sample = self.original[:SHOUTING_SAMPLE].encode("latin-1", "ignore")
        letters = sample.translate(None, _NOT_LETTER)
        return len(letters), len(letters.translate(None, _NOT_UPPER))

    def written(self, start: int, stop: int) -> str:
        """The customer's words at positions start..stop (a slang token standing for several words once)."""
        if stop - start == 1 and 0 <= start < len(self.tokens.words):
            return self.tokens.words[start]
        words = self.tokens.words[start:stop]
        return " ".join(w for i, w in enumerate(words) if i == 0 or w != words[i - 1])

    def positions(self, word: str, roots: bool = True) -> list[int]:
        """Every position where `word` stands in any form (roots=False: as written or in normal form), in order
        (the list is shared: do not change it)."""
        index = self._index if self._index is not None else self._indexed()
        found = index.get(word)
        if found is None:
            return []
        if roots or word not in self.root_set:
            return found
        cached = self._positions.get(word)
        if cached is None:
            t = self.tokens
            cached = self._positions[word] = [i for i in found if t.normal[i] == word or t.words[i] == word]
        return cached

    def positions_in(self, k: int, word: str) -> list[int]:
        """Every position where `word` stands in form k (0 as written, 1 normal, 2 root)."""
        seq = self.seqs[k]
        return [i for i in self.positions(word) if seq[i] == word]

    def _indexed(self) -> dict[str, list[int]]:
        """word -> every position where it stands in any form, in order; made in one pass when first needed."""
        index: dict[str, list[int]] = {}
        get = index.get
        t = self.tokens
        for i, (w, n, r) in enumerate(zip(t.words, t.normal, t.roots, strict=True)):
            found = get(r)
            if found is None:
                index[r] = [i]
            else:
                found.append(i)
            if n != r:
                found = get(n)
                if found is None:
                    index[n] = [i]
                else:
                    found.append(i)
            if w != n and w != r:
                found = get(w)
                if found is None:
                    index[w] = [i]
                else:
                    found.append(i)
        self._index = index
        return index

    @property
    def root_pairs(self) -> set[tuple[str, str]]:
        """Every two roots that stand next to each other (where a phrase of two or more words can start)."""
        if self._pairs is None:
            self._pairs = set(itertools.pairwise(self.tokens.roots))
        return self._pairs

    def count(self, words: frozenset[str]) -> int:
        """How often these words stand in the text, as written."""
        found = words & self.word_set
        if not found:
            return 0
        if self._counts is None:
            self._counts = Counter(self.tokens.words)
        return sum(self._counts[w] for w in found)

    def sentence(self, position: int) -> tuple[int, int]:
        """The positions start..stop of the sentence at `position` (sentences end at . ! ? and line breaks)."""
        if self._bounds is None:
            roots = self.tokens.roots  # markers are the same in every form
            ends = {i + 1 for mark in SENTENCE_MARKERS for i in self.positions(mark)}
            self._bounds = sorted(ends | self.tokens.breaks | {0, len(roots)})
        bounds = self._bounds
        k = bisect.bisect_right(bounds, position)
        return bounds[k - 1], bounds[k] if k < len(bounds) else len(self.tokens.roots)

    def in_question(self, position: int) -> bool:
        """Whether the sentence at `position` is a question."""
        start, stop = self.sentence(position)
        cached = self._questions.get(start)
        if cached is None:
            if self._question_places is None:
                q = self.question
                where = set(self.positions(QUESTION_END))
                for word in q.keywords & self.any_set:
                    where.update(self.positions(word))
                self._question_places = sorted(where), [m for p in q.phrases for m in p.find(self)]
            marks, spans = self._question_places
            k = bisect.bisect_left(marks, start)
            cached = (k < len(marks) and marks[k] < stop) or any(start <= b and e <= stop for b, e in spans)
            self._questions[start] = cached
        return cached


def _starts(seq: list[str], words: tuple[str, ...], start: int = 0, stop: int | None = None) -> list[int]:
    """Every position in seq[start:stop] where the word sequence `words` begins."""
    first, n = words[0], len(words)
    end = len(seq) if stop is None else stop
    out: list[int] = []
    i = start - 1
    while True:
        try:
            i = seq.index(first, i + 1, end)
        except ValueError:
            return out
        if n == 1 or (i + n <= end and tuple(seq[i : i + n]) == words):
            out.append(i)


@dataclass(frozen=True)
class Phrase:
    """A word sequence: matches whole words in order within one clause, line breaks and spacing aside;
    as written, in normal form ("gk bisa" -> "tidak bisa") or by roots ("pemasangan baru" -> "pasang baru")."""

    text: str
    forms: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # as written, normal, roots
    sets: tuple[frozenset[str], frozenset[str], frozenset[str]]
    by_roots: bool = True  # False: as written or in normal form only (the signal says `roots: false`)

    @classmethod
    def of(cls, phrase: str, normaliser: Normaliser | None = None, *, roots: bool = True) -> Phrase:
        tokens = (normaliser or PLAIN).tokens(fold(phrase))
        words = [i for i, w in enumerate(tokens.normal) if w not in MARKERS]
        written, normal, root = (tuple(seq[i] for i in words) for seq in (tokens.words, tokens.normal, tokens.roots))
        return cls(phrase, (written, normal, root), (frozenset(written), frozenset(normal), frozenset(root)), roots)

    @property
    def words(self) -> frozenset[str]:
        """The words as written."""
        return self.sets[0]

    @property
    def by(self) -> int:
        """The form it is looked for in: roots (2), which finds every match as written or in normal form too
        (each form is a function of the one before, for the phrase as for the text); a single affixed word
        ("permohonan") in normal form only (1), as a keyword would be; so is every phrase of a signal that
        says `roots: false`."""
        single_affixed = len(self.forms[1]) == 1 and self.forms[1] != self.forms[2]
        return 1 if single_affixed or not self.by_roots else 2

    def find(self, text: Text, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """(start, stop) of every match."""
        k = self.by
        form = self.forms[k]
        if not form or not self.sets[k] <= text.sets[k]:
            return []
        if start or stop is not None:
            return [(i, i + len(form)) for i in _starts(text.seqs[k], form, start, stop)]
        seq, n = text.seqs[k], len(form)
        return [(i, i + n) for i in text.positions_in(k, form[0]) if n == 1 or tuple(seq[i : i + n]) == form]

    def matched_form(self, text: Text, start: int) -> str:
        """The form a match at `start` is in: the customer's words if they are the phrase's, else the
        normal or root words that matched ("gk bisa" -> "tidak bisa", "pemasangan baru" -> "pasang baru")."""
        for k in (0, 1):
            form = self.forms[k]
            if tuple(text.seqs[k][start : start + len(form)]) == form:
                return " ".join(form) if k else text.written(start, start + len(form))
        return " ".join(self.forms[2])


@dataclass(frozen=True)
class Near:
    """Two word lists: matches where a word of each (in any form) stand at most `within` words apart,
    in either order, in one sentence ("saya laporkan ke YLKI", but not "saya baca di koran")."""

    first: frozenset[str]
    second: frozenset[str]
    within: int
    ordered: bool = False  # the word of the second list must come after ("laporkan ke YLKI", not "YLKI melaporkan")
    roots: bool = True  # False: words match as written or in normal form only (`roots: false`)

    def find(self, text: Text) -> list[tuple[int, int]]:
        """(position, position) of each pair, nearest first per word of the first list."""
        present = text.any_set if self.roots else text.plain_set
        firsts = self.first & present
        seconds = self.second & present
        if not firsts or not seconds:
            return []
        seqs, marks, n = text.seqs if self.roots else text.seqs[:2], text.tokens.normal, self.within
        if len(firsts) == 1:
            (word,) = firsts
            places = text.positions(word, self.roots)
        else:
            places = sorted({i for w in firsts for i in text.positions(w, self.roots)})
        pairs: list[tuple[int, int]] = []
        for i in places:
            lo, hi = (i + 1 if self.ordered else max(0, i - n)), min(i + n + 1, len(marks))
            if all(seconds.isdisjoint(seq[lo:hi]) for seq in seqs):
                continue  # the usual case: nothing of the second list near this word
            for j in _nearest(i, lo, hi):  # the nearest one; of two as near, the earlier
                if any(seq[j] in seconds for seq in seqs):
                    if SENTENCE_MARKERS.isdisjoint(marks[min(i, j) : max(i, j)]):
                        pairs.append((i, j))
                    break
        return pairs


def _nearest(i: int, lo: int, hi: int) -> Iterator[int]:
    """The positions lo..hi-1 other than i, nearest to i first; of two as near, the earlier first."""
    for d in range(1, max(i - lo, hi - 1 - i) + 1):
        if i - d >= lo:
            yield i - d
        if i + d < hi:
            yield i + d


@dataclass(frozen=True)
class Contact:
    """An earlier mail from the same sender, as remembered by the state store."""

    at: datetime
    intent: str


@dataclass(frozen=True)
class HistoryRule:
    """Fires when the sender wrote at least `previous` times within `days` (about the same thing)."""

    previous: int
    days: float
    same_intent: bool

    def match(self, history: Sequence[Contact], intent: str, now: datetime) -> tuple[str, ...]:
        since = now - timedelta(days=self.days)
        earlier = [c for c in history if since <= c.at <= now and (not self.same_intent or c.intent == intent)]
        if len(earlier) < self.previous:
            return ()
        about = f" about {intent}" if self.same_intent else ""
        return (f"{len(earlier)} earlier mail(s){about} within {self.days:g} days",)


def _top_level_branches(pattern: str) -> list[str]:
    """`pattern` cut at each "|" outside groups and character classes (one piece: no such "|"); none for a
    fragment that closes a group it did not open ("a)|(?:b" is not one piece)."""
    depth, i, in_class, start, out = 0, 0, False, 0, []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return []
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*out, pattern[start:]]


@dataclass(frozen=True)
class _RegexPlan:
    """How a regex is run: as it is, or (it starts with \\b) without the \\b, the boundary checked by hand,
    and tried only where one of `starts` stands when every match starts with one of them."""

    regex: re.Pattern[str]
    unbounded: re.Pattern[str] | None  # the regex without its leading \b: re scans a leading literal fast
    starts: tuple[str, ...] | None  # strings (rarely in a text) one of which every match of `unbounded` starts with

    @classmethod
    def of(cls, regex: re.Pattern[str]) -> _RegexPlan:
        pattern = regex.pattern
        unbounded = None
        if pattern.startswith("(?:\\b") and _no_top_level_branch(pattern[3:-1]):  # one regex: (?:\b...)
            unbounded = re.compile(pattern[5:-1], regex.flags)
        return cls(regex, unbounded, match_starts(unbounded) if unbounded is not None else None)

    def finditer(self, folded: str) -> Iterator[re.Match[str]]:
        """The regex's matches in text order (what regex.finditer finds)."""
        fast = self.unbounded
        if fast is None:
            yield from self.regex.finditer(folded)
            return
        pos = 0
        if self.starts is not None:  # a match starts where one of these does: tried only there
            places = sorted({i for start in self.starts for i in _occurrences(folded, start)})
            for start in places:
                if start >= pos and (m := fast.match(folded, start)) is not None:
                    before = start > 0 and _is_word(folded[start - 1])
                    after = start < len(folded) and _is_word(folded[start])
                    if before != after:
                        yield m
                        pos = max(m.end(), start + 1)
            return
        while (m := fast.search(folded, pos)) is not None:
            start = m.start()
            before = start > 0 and _is_word(folded[start - 1])
            after = start < len(folded) and _is_word(folded[start])
            if before != after:  # a word boundary: where \b would have matched
                yield m
                pos = max(m.end(), start + 1)
            else:
                pos = start + 1


MAX_BRANCHES_SPLIT = 4  # a signal's regexes (joined by "|") are run apart only up to this many
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")  # a group referred to by number or name: keep it whole


def _branch_plans(
    regex: re.Pattern[str],
) -> tuple[tuple[tuple[str, ...] | None, ...], dict[tuple[bool, ...], _RegexPlan]] | None:
    """For a regex of several top-level branches (a signal's regexes, joined): the strings each branch needs
    (needed_strings), and a plan for every proper subset of branches, by which of them may match. In a text where
    a branch cannot match, the regex without it finds exactly the same matches (an alternative that fails at every
    position changes nothing), and may run much faster (a leading \\b of its own, a literal start).
    None: one branch, too many, a backreference, or no branch needs anything."""
    branches = _top_level_branches(regex.pattern)
    if not 2 <= len(branches) <= MAX_BRANCHES_SPLIT or _BACKREFERENCE.search(regex.pattern):
        return None
    try:
        needs = tuple(needed_strings(re.compile(b, regex.flags)) for b in branches)
    except re.error:
        return None
    if all(n is None for n in needs):
        return None
    plans: dict[tuple[bool, ...], _RegexPlan] = {}
    for key in itertools.product((False, True), repeat=len(branches)):
        if any(key) and not all(key):
            plans[key] = _RegexPlan.of(re.compile("|".join(itertools.compress(branches, key)), regex.flags))
    return needs, plans


def _no_top_level_branch(pattern: str) -> bool:
    """True when `pattern` has no "|" outside groups and character classes (so a leading \\b binds it all)."""
    return len(_top_level_branches(pattern)) == 1


def needed_strings(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings of which every match of `regex` holds at least one, when there are such strings that are rarely in a
    text (of three characters or more, or punctuation): a text without them needs no search. None: no such strings
    (or a pattern this does not read: case-insensitive, a scoped flag, ...)."""
    try:
        parsed = importlib.import_module("re._parser").parse(regex.pattern, regex.flags)
        if parsed.state.flags & re.IGNORECASE:
            return None
        found = _needed(parsed, importlib.import_module("re._constants"))
    except Exception:  # another Python's parser: no shortcut, the regex runs on every text
        return None
    return tuple(sorted(found)) if found else None


def _needed(items: Any, c: Any) -> frozenset[str] | None:
    """For a parsed sequence: the best set of strings one of which each match holds (see needed_strings)."""
    options: list[frozenset[str]] = []
    run: list[str] = []  # consecutive literal characters
    for op, av in [*items, (None, None)]:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        if run:
            options.append(frozenset(["".join(run)]))
            run = []
        found: frozenset[str] | None = None
        if op is c.IN and all(o is c.LITERAL for o, _ in av):
            found = frozenset(chr(a) for _, a in av)
        elif op is c.SUBPATTERN and not av[1] and not av[2]:  # no scoped flags
            found = _needed(av[3], c)
        elif op is c.BRANCH:
            each = [_needed(alternative, c) for alternative in av[1]]
            found = frozenset().union(*each) if all(each) else None  # type: ignore[arg-type]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            found = _needed(av[2], c)
        elif op is c.ATOMIC_GROUP:
            found = _needed(av, c)
        if found:
            options.append(found)
    rare = [o for o in options if all(len(x) >= 3 or not any(ch.isalnum() or ch.isspace() for ch in x) for x in o)]
    return min(rare, key=lambda o: (len(o), -min(map(len, o)), sorted(o))) if rare else None


def match_starts(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings one of which every match of `regex` starts with, each of three characters or more (so rarely in a
    text: the places to try it are found by str.find); None when there are no such strings or the pattern is one
    this does not read."""
    try:
        parsed = importlib.import_module("re._parser").parse(regex.pattern, regex.flags)
        if parsed.state.flags & re.IGNORECASE:
            return None
        found = _starting(list(parsed), importlib.import_module("re._constants"))
    except Exception:  # another Python's parser: no shortcut
        return None
    return tuple(sorted(found)) if found and min(map(len, found)) >= 3 else None


def _starting(items: list[Any], c: Any) -> frozenset[str] | None:
    """For a parsed sequence: the strings one of which each match starts with (None: not known)."""
    if not items:
        return None
    op, av = items[0]
    if op is c.LITERAL:
        run = []
        for o, a in items:
            if o is not c.LITERAL:
                break
            run.append(chr(a))
        return frozenset(["".join(run)])
    if op is c.BRANCH:
        each = [_starting(list(alternative), c) for alternative in av[1]]
        return frozenset().union(*each) if all(each) else None  # type: ignore[arg-type]
    if op is c.SUBPATTERN and not av[1] and not av[2]:  # no scoped flags
        return _starting(list(av[3]), c)
    return None


def _occurrences(text: str, part: str) -> Iterator[int]:
    """Every position where `part` starts in `text` (overlapping ones too)."""
    i = text.find(part)
    while i >= 0:
        yield i
        i = text.find(part, i + 1)


def _is_word(char: str) -> bool:
    """What a regex's word character is: letters, digits and the underscore."""
    return char.isalnum() or char == "_"


def _trace(written: str, form: str) -> str:
    """A matched term as agents see it: the customer's words, and the form that matched if it differs."""
    return written if written == form else f"{written}→{form}"


@dataclass(frozen=True)
class Signal:
    """One named, weighted signal; see config/signals.yaml for the ways it can match."""

    name: str
    group: str  # fault | information | request | hard
    weight: float
    keywords: frozenset[str] = frozenset()
    phrases: tuple[Phrase, ...] = ()
    regex: re.Pattern[str] | None = None  # runs on the case-folded text, as written
    caps_ratio: float | None = None
    min_letters: int = 0
    exclamation_run: int | None = None
    history: HistoryRule | None = None  # matched by classify() against the sender's earlier mail
    near: Near | None = None
    in_question: float | None = None  # the weight when every match stands in a question
    requires: frozenset[str] = frozenset()  # fires only when one of these signals or groups fired before
    unless: frozenset[str] = frozenset()  # fires only when none of these signals or groups fired before
    roots: bool = True  # False: keywords, phrases and near words match as written or in normal form only
    # the first root word of each phrase -> the phrases starting with it (most phrases match by roots);
    # the phrases that match in normal form only (Phrase.by)
    _index: dict[str, tuple[Phrase, ...]] = field(init=False, repr=False, compare=False)
    _firsts: frozenset[str] = field(init=False, repr=False, compare=False)
    _exact: tuple[Phrase, ...] = field(init=False, repr=False, compare=False)
    _exact_firsts: frozenset[str] = field(init=False, repr=False, compare=False)  # their first words, normal form
    # the phrases that match by roots again, by where they can start: the first two roots, or the one root
    _by_pair: dict[tuple[str, str], tuple[Phrase, ...]] = field(init=False, repr=False, compare=False)
    _pair_keys: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)
    _by_word: dict[str, tuple[Phrase, ...]] = field(init=False, repr=False, compare=False)
    _word_keys: frozenset[str] = field(init=False, repr=False, compare=False)
    # a regex that starts with \b, without it: Python's re scans a leading literal fast, a leading \b slowly
    _unbounded: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    # every word one of whose forms must be in the text for the signal to match (None: it may match anyway)
    _trigger: frozenset[str] | None = field(init=False, repr=False, compare=False)
    # strings one of which the case-folded text must hold for the regex to match (None: it may match anyway)
    _needs: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    # for a signal that matches by `near` alone: its second list (a word of it must be in the text too)
    _second: frozenset[str] | None = field(init=False, repr=False, compare=False)
    # strings (rarely in a text) one of which every match of _unbounded starts with (None: no such strings)
    _starts: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    _plan: _RegexPlan | None = field(init=False, repr=False, compare=False)
    # for a regex of a few branches (the signal's regexes): what each needs, and a plan per subset that may match
    _branches: tuple[tuple[tuple[str, ...] | None, ...], dict[tuple[bool, ...], _RegexPlan]] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, tuple[Phrase, ...]] = {}
        for phrase in self.phrases:
            if phrase.forms[2] and phrase.by == 2:
                index[phrase.forms[2][0]] = (*index.get(phrase.forms[2][0], ()), phrase)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_firsts", frozenset(index))
        by_pair: dict[tuple[str, str], tuple[Phrase, ...]] = {}
        by_word: dict[str, tuple[Phrase, ...]] = {}
        for phrases in index.values():
            for phrase in phrases:
                roots = phrase.forms[2]
                if len(roots) == 1:
                    by_word[roots[0]] = (*by_word.get(roots[0], ()), phrase)
                else:
                    by_pair[roots[0], roots[1]] = (*by_pair.get((roots[0], roots[1]), ()), phrase)
        object.__setattr__(self, "_by_pair", by_pair)
        object.__setattr__(self, "_pair_keys", frozenset(by_pair))
        object.__setattr__(self, "_by_word", by_word)
        object.__setattr__(self, "_word_keys", frozenset(by_word))
        object.__setattr__(self, "_exact", tuple(p for p in self.phrases if p.forms[2] and p.by == 1))
        object.__setattr__(self, "_exact_firsts", frozenset(p.forms[1][0] for p in self._exact))
        plan = _RegexPlan.of(self.regex) if self.regex is not None else None
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_unbounded", plan.unbounded if plan is not None else None)
        object.__setattr__(self, "_starts", plan.starts if plan is not None else None)
        object.__setattr__(self, "_branches", _branch_plans(self.regex) if self.regex is not None else None)
        object.__setattr__(self, "_needs", needed_strings(self.regex) if self.regex is not None else None)
        trigger: frozenset[str] | None = None
        if self.regex is None and self.caps_ratio is None and self.exclamation_run is None and self.history is None:
            near = self.near.first if self.near is not None else frozenset()
            trigger = self.keywords | near | self._firsts | {p.forms[1][0] for p in self._exact}
        object.__setattr__(self, "_trigger", trigger)
        # a signal that matches by `near` alone also needs a word of the second list in the text
        only_near = trigger is not None and self.near is not None and not self.keywords and not self.phrases
        object.__setattr__(self, "_second", self.near.second if only_near and self.near is not None else None)

    def _regex_matches(self, folded: str) -> Iterator[re.Match[str]]:
        """The regex's matches in text order (what regex.finditer finds); branches that cannot match in this text
        (none of the strings they need is in it) are left out of the search."""
        assert self._plan is not None
        plan = self._plan
        if self._branches is not None:
            needs, plans = self._branches
            key = tuple(n is None or any(map(folded.__contains__, n)) for n in needs)
            if not any(key):
                return iter(())
            plan = plans.get(key, plan)
        return plan.finditer(folded)

    def _may_match(self, text: Text) -> bool:
        """False when _matches finds nothing for certain: no keyword in the text, no phrase's first root (or
        first two roots, or for a phrase in normal form its first word) there, no word of each list of `near`."""
        present = text.any_set if self.roots else text.plain_set
        if self.keywords and not self.keywords.isdisjoint(present):
            return True
        if self._word_keys and not self._word_keys.isdisjoint(text.root_set):
            return True
        if (
            self._pair_keys
            and not self._firsts.isdisjoint(text.root_set)
            and not self._pair_keys.isdisjoint(text.root_pairs)
        ):
            return True
        if self._exact_firsts and not self._exact_firsts.isdisjoint(text.normal_set):
            return True
        near = self.near
        if near is None:
            return False
        near_present = text.any_set if near.roots else text.plain_set
        return not near.first.isdisjoint(near_present) and not near.second.isdisjoint(near_present)

    def match(self, text: Text) -> tuple[str, ...]:
        """The terms that made this signal fire (empty: it did not)."""
        return tuple(term for term, _ in self._matches(text)[:MAX_MATCHES_SHOWN])

    def fire(self, text: Text, fired: set[str]) -> SignalHit | None:
        """The hit, with the weight that applies (`in_question`), or None; `fired`: signals and groups so far."""
        if self._trigger is not None and self._trigger.isdisjoint(text.any_set):
            return None  # the usual case: none of its words is in the text
        if self._second is not None and self._second.isdisjoint(text.any_set):
            return None
        if self._trigger is not None and not self._may_match(text):
            return None  # none of its keywords, phrases or pairs of near words can match
        if (self.requires and self.requires.isdisjoint(fired)) or not self.unless.isdisjoint(fired):
            return None
        matches = self._matches(text)
        if not matches:
            return None
        terms = tuple(term for term, _ in matches[:MAX_MATCHES_SHOWN])
        weight = self.weight
        if self.in_question is not None and all(
            text.in_question(p) for _, where in matches for p in self._places(text, where)
        ):
            weight = self.in_question
            terms = (*terms[: MAX_MATCHES_SHOWN - 1], "(in a question)")
        return SignalHit(self.name, self.group, weight, terms)

    def fired(self, hit: SignalHit) -> tuple[str, ...]:
        """What `requires` and `unless` of later signals see of this hit: its name, and its group when it
        counted fully toward it (a negative weight or a match inside a question is no report of that kind)."""
        return (self.name, self.group) if 0 < hit.weight == self.weight else (self.name,)

    def _places(self, text: Text, where: int | str) -> list[int]:
        """Where a match stands: a position, or every position of a keyword."""
        return text.positions(where, self.roots) if isinstance(where, str) else [where]

    def _matches(self, text: Text) -> list[tuple[str, int | str]]:
        """Each matched term with where it stands: a position, or the keyword (every place it stands)."""
        found: list[tuple[str, int | str]] = []
        present = text.any_set if self.roots else text.plain_set
        if self.keywords and not self.keywords.isdisjoint(present):
            t = text.tokens
            hits = sorted(self.keywords & present)
            as_written = {k for k in hits if k in text.word_set}
            for keyword in hits:
                if keyword in as_written:
                    found.append((keyword, keyword))
                    continue
                seq = t.normal if keyword in text.normal_set else t.roots
                word = t.words[seq.index(keyword)]
                if word not in as_written:  # "perbaikan" listed too: said once, as written
                    found.append((_trace(word, keyword), keyword))
        if self.phrases:
            # ties (two phrases over the same words) stay in the order the signal lists them: they have the same
            # first root, or the same two first roots
            matches: list[tuple[int, int, Phrase]] = []
            roots, present = text.tokens.roots, text.root_set
            if not self._word_keys.isdisjoint(present):
                for word in self._word_keys & present:
                    places = text.positions_in(2, word)
                    for phrase in self._by_word[word]:
                        matches.extend((i, i + 1, phrase) for i in places)
            if self._pair_keys and not self._firsts.isdisjoint(present):
                pairs = text.root_pairs
                if not self._pair_keys.isdisjoint(pairs):
                    for pair in self._pair_keys & pairs:
                        for phrase in self._by_pair[pair]:
                            if phrase.sets[2] <= present:
                                form, n = phrase.forms[2], len(phrase.forms[2])
                                for i in text.positions_in(2, pair[0]):
                                    if tuple(roots[i : i + n]) == form:
                                        matches.append((i, i + n, phrase))
            for phrase in self._exact:
                if phrase.sets[1] <= text.normal_set:
                    form, n, normal = phrase.forms[1], len(phrase.forms[1]), text.tokens.normal
                    for i in text.positions_in(1, form[0]):
                        if tuple(normal[i : i + n]) == form:
                            matches.append((i, i + n, phrase))
            end = -1
            for start, stop, _ in sorted(matches, key=lambda m: (m[0], -m[1])):
                if stop > end:  # in text order; a phrase inside a longer match is not repeated
                    written = text.written(start, stop)
                    forms = [p.matched_form(text, start) for b, e, p in matches if (b, e) == (start, stop)]
                    found.append((_trace(written, written if written in forms else forms[0]), start))
                    end = stop
        if self.near is not None:
            for i, j in self.near.find(text):
                lo, hi = min(i, j), max(i, j)
                gap = " … " if hi - lo > 1 else " "
                found.append((f"{text.written(lo, lo + 1)}{gap}{text.written(hi, hi + 1)}", lo))
        if self.regex is not None and (self._needs is None or any(s in text.folded for s in self._needs)):
            for m in self._regex_matches(text.folded):
                term = " ".join(m.group(0).split())
                if all(term != f for f, _ in found):
                    found.append((term, -1))
                if len(found) >= MAX_MATCHES_SHOWN:
                    break
        if self.caps_ratio is not None:
            letters, upper = text.capitals()
            if letters and letters >= self.min_letters and upper / letters >= self.caps_ratio:
                found.append((f"{round(100 * upper / letters)}% capitals", -1))
        if self.exclamation_run is not None and "!" * self.exclamation_run in text.original:
            runs, run, original = 0, "!" * self.exclamation_run, text.original
            i = original.find(run)
            while i >= 0:  # each run of at least that many "!" once (what re.findall("!{n,}") counts)
                runs += 1
                i = original.find(run, _BANGS.match(original, i).end())  # type: ignore[union-attr]
            found.append((f"{runs}x {run}", -1))
        return found


@dataclass(frozen=True)
class Signals:
    """Everything classification needs, validated at load (see config/signals.yaml)."""

    intent_signals: tuple[Signal, ...]
    intent_threshold: float
    intent_margin: float
    hard_signals: tuple[Signal, ...]
    hard_threshold: float
    default_language: Language
    english_words: frozenset[str]
    indonesian_words: frozenset[str]
    english_min: int
    model: TextModel | None = None  # the learned model (`model:` in signals.yaml); None: signals alone
    combine: CombineSettings = DEFAULT_COMBINE  # how the model and the signals combine (`combine:`)
    normaliser: Normaliser = PLAIN  # `normalise:` (slang, spelling, roots); PLAIN: words as written only
    question: Question = NO_QUESTION  # what makes a sentence a question (`intent.question`)

    def prepare(self, subject: str, text: str) -> Text:
        """The subject and text as every signal reads them (normalised once)."""
        return Text(subject, text, self.normaliser, self.question)

    @property
    def history_days(self) -> float:
        """How far back classification looks into a sender's history (0: not at all)."""
        return max((s.history.days for s in self.hard_signals if s.history), default=0.0)


def detect_language(text: Text, signals: Signals) -> Language:
    """English when English marker words clearly outnumber Indonesian ones; otherwise the default."""
    english = text.count(signals.english_words)
    indonesian = text.count(signals.indonesian_words)
    if english >= signals.english_min and english > indonesian:
        return "en"
    if indonesian > english:
        return "id"
    return signals.default_language


def classify(
    subject: str,
    text: str,
    signals: Signals,
    history: Sequence[Contact] = (),
    now: datetime | None = None,
    automated: bool = False,
) -> Classification:
    """Score intent and hard complaint over the subject and the customer's own text (never the quoted part).
    `automated` (an out-of-office reply, a bounce: see guard.automated_reason): never a hard complaint."""
    prepared = signals.prepare(subject, text)
    hits: list[SignalHit] = []
    scores: dict[str, float] = {"fault": 0.0, "information": 0.0, "request": 0.0}
    fired: set[str] = set()  # names and groups of the signals that fired, for `requires`
    present = prepared.any_set
    for signal in signals.intent_signals:
        if signal._trigger is not None and signal._trigger.isdisjoint(present):
            continue  # what fire() finds first: none of its words is in the text
        hit = signal.fire(prepared, fired)
        if hit is not None:
            scores[signal.group] += hit.weight
            hits.append(hit)
            fired.update(signal.fired(hit))
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, best_score), (_, runner_up) = ranked[0], ranked[1]
    intent: Intent = "unknown"
    if best_score >= signals.intent_threshold and best_score - runner_up >= signals.intent_margin:
        intent = best  # type: ignore[assignment]
    # without a text of the customer's own (attachments under a subject line) the signals alone decide: the
    # model learned from messages that all have one, and a subject names a topic more than what is wanted
    prediction = signals.model.predict(subject, text) if signals.model is not None and text.strip() else None
    verdict = combine_intent(scores, prediction.intent_probabilities, signals.combine) if prediction else None
    if verdict is not None:
        intent = verdict.intent
    hard_score = 0.0
    for signal in signals.hard_signals:
        if signal.history is not None:
            matched = signal.history.match(history, intent, now) if now is not None else ()
            hit = SignalHit(signal.name, "hard", signal.weight, matched) if matched else None
        elif signal._trigger is not None and signal._trigger.isdisjoint(present):
            hit = None
        else:
            hit = signal.fire(prepared, fired)
        if hit is not None:
            hard_score += hit.weight
            hits.append(hit)
            fired.update(signal.fired(hit) if signal.history is None else (signal.name, "hard"))
    hard = hard_score >= signals.hard_threshold
    output = None
    if prediction is not None and verdict is not None:
        hard_verdict = combine_hard(hard_score, prediction.hard_probability, signals.combine)
        hard = hard_verdict.hard
        output = ModelOutput(
            model=signals.model.short_id if signals.model else "",
            probabilities=prediction.intent_probabilities,
            hard_probability=prediction.hard_probability,
            combined=verdict.probabilities,
            confidence=verdict.confidence,
            threshold=signals.combine.threshold,
            hard_confidence=hard_verdict.confidence,
            hard_threshold=signals.combine.hard_threshold,
            intent_features=prediction.top_features(intent),
            hard_features=prediction.top_features("hard"),
        )
    if automated:  # a machine's mail complains of nothing, whatever its words (the stats count hard complaints)
        hard = False
    return Classification(
        intent=intent,
        intent_scores=scores,
        hard=hard,
        hard_score=hard_score,
        hard_threshold=signals.hard_threshold,
        signals=tuple(hits),
        language=detect_language(prepared, signals),
        reading=prepared.normalised,
        model=output,
    )
