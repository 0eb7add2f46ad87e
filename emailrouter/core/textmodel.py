"""The learned text model: features, inference and a safe file format. Pure Python, no dependencies.

A linear model over the customer's own words (subject and text, never the quoted part): for each
word, the word itself and its character n-grams (so `lemottt`, `lemot` and `lemotnya` share most of
their features); for each word inside a question, the word as asked (`question_words`: "upgrade saya
sudah diproses belum?" asks about an upgrade, "tolong upgrade" asks for one); optionally word bigrams
("tidak bisa"; off by default: no better than question words in leave-one-writer-out cross-validation,
and a third slower); and one shape feature (no words at all). Four intent outputs (a softmax) and one
hard-complaint output (a sigmoid).

Only words that can be evidence of what a customer wants count (feature version tm2): not function
words, pronouns, particles, greetings and forms of address (STOP_WORDS, Indonesian and English), not
the closing line and the signature after it (`Terima kasih,` / `Rina Kusumawati` / `Staf Umum`),
not a capitalised word inside a sentence that the model never learned as a word (it is taken for a
name: `Saya Rina dari ...`, `Jl. Braga`), not bare numbers. What a corpus's writers habitually put
around their messages (a name, a greeting, a way of signing) is so not learned, and not shown to
agents as a reason. Neither capitals nor "!!!" count: the signals judge shouting. A sentence is a question
when it ends with "?" or holds a question word (QUESTION_WORDS: `apakah`, `berapa`, `gimana`, `how`,
`tanya` ...); its words count once more, as asked (a fault report may ask when it is fixed: the model
learns which asked words say what).

Only the first `max_chars` characters count, so inference costs the same for a 16 KB mail as for a
2 KB one. Every word contributes one pre-summed weight vector (cached per word), which makes
inference a few hundred additions, and makes the explanation natural: the words with the largest
contribution toward the verdict are the features shown to agents.

The model file is JSON data and never code: `model_from_bytes` reads it with the JSON parser only,
accepts exactly the keys below (no others), checks the format version, the labels, every shape, that
every number is finite, and a SHA-256 checksum over the content, and raises `ModelError(key, reason)`
otherwise. A pickle or an .npz file is refused with a message saying so.

    {"format": "emailrouter-textmodel", "format_version": 1,
     "intents": ["fault", "information", "request", "unknown"], "outputs": [... intents ..., "hard"],
     "features": {"version": "tm2", "max_chars": 2000, "char_ngrams": [3, 5], "word_bigrams": false,
                  "question_words": true},
     "bias": [5 numbers], "weights": {"FEATURE": [5 numbers], ...},
     "training": {...figures, seed, counts...}, "checksum": "sha256:..."}

Feature names: `w:WORD` (a whole word; every word the model knows has one), `c:NGRAM` (a character
n-gram of a word padded with `<` and `>`), `q:WORD` (a word inside a question; explanations show it as
`WORD?`), `b:WORD WORD` (a bigram), `d:NAME` (a shape feature). A file without `question_words` (written
before it existed) has none.
Feature version `tm2` fixes the normalisation: case-folding, addresses and links removed, words
split at anything that is not a letter or digit (`can't` -> `can not`), `kata2` -> `kata kata`,
digit runs -> `0`, runs of one letter -> that letter once (`lemottt`, `lemott` -> `lemot`; also
`maaf` -> `maf`: explanations show words in this spelling), and the words left out above. It is
deliberately the model's own and does not follow the ops-editable slang map: a change to that map
must not silently change what a trained model sees. A model of another feature version is refused
(train it again).

Over 400 lines: features, inference, the explanation of a verdict and the safe file format change
together (a feature added is a field of the file, a step of inference and a line of the explanation).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from emailrouter.core.errors import EmailRouterError
from emailrouter.core.model import INTENTS

FORMAT = "emailrouter-textmodel"
FORMAT_VERSION = 1
FEATURE_VERSION = "tm2"
OUTPUTS: tuple[str, ...] = (*INTENTS, "hard")
HARD = len(INTENTS)  # index of the hard output
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_CHARS_LIMIT = 20_000
TOP_FEATURES = 5
_WORD_CACHE_LIMIT = 200_000  # words whose summed vector is remembered (a bound on memory, not on results)

_REPEATED_LETTER = re.compile(r"([^\W\d_])\1+")
_DIGITS = re.compile(r"\d+")
_TOKEN = re.compile(r"[^\W_]+")

# Words that say nothing about what a customer wants, whoever writes: function words, pronouns, particles,
# greetings and forms of address, the politeness that opens requests, faults and questions alike (`mohon`,
# `please`: the verb after it says what is wanted), the provider's name in our corpus and place names (a
# place says where, not what). Indonesian and English, as written or in the normalised spelling. A stop word
# gives no feature at all, so no writer's habits are learned from it.
_STOP_WORDS = """
    yang yg dan dn di ke dari dr untuk utk buat dengan dgn sama pada dalam atau ato juga jg itu ini tsb tersebut
    adalah ialah merupakan bahwa agar supaya sehingga karena karna krn jadi jd maka serta namun tapi tetapi tp
    tpi sebagai secara hal tentang mengenai terhadap antara oleh bagi para si sang pun kah lah
    saya sy aku aq gue gua gw gwe kami kita kamu anda dia ia beliau mereka nya ku mu
    ya iya yah ye sih dong deh nih tuh kan aja saja sj kok loh lho ah eh oh wah
    pak bapak bpk ibu bu mas mbak mba kak ka kakak min mimin admin gan agan sis bro sob om bang tim team
    yth kepada kpd hormat selamat assalamualaikum asalamualaikum wr wb wassalamualaikum salam halo hallo hai
    hi hello hey dear sir madam mr mrs ms regards best mohon please pls plz kindly
    indinet jakarta bandung surabaya medan semarang bekasi depok tangerang bogor makassar denpasar bali
    yogyakarta jogja malang solo palembang balikpapan batam pekanbaru padang manado pontianak banjarmasin
    samarinda lampung cirebon sidoarjo kediri jember ubud jabodetabek jawa sumatera kalimantan sulawesi papua
    the an to of and or in on at by for from with as is are was were be been being am it its this that these
    those there here me my mine we us our ours you your yours he him his she her they them their so do does did
    have has had will shall would should could may might must also just very like about into which who whom
    whose then than too such some any all each every both re ve ll
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_KEEP = frozenset({"off", "ass"})  # not stop words, though their normalised spelling is one (`of`, `as`)
_CONTRACTION = re.compile(r"(?:can|won|shan)['\u2019]t\b|n['\u2019]t\b|['\u2019](?:s|d|m|re|ve|ll)\b")
_CONTRACTIONS = {"can't": "can not", "won't": "will not", "shan't": "shall not"}
_APOSTROPHES = str.maketrans({"\u2019": "'"})

# A line of at most 8 words, all of them CLOSING_WORDS and one of them a CLOSING_MARK, closes a text
# ("Terima kasih,", "Best regards", "Hormat kami,", "Makasih min"): what follows it is a signature.
_CLOSING_MARKS = "regards salam hormat wassalam wassalamualaikum kasih terimakasih makasih trims thanks thank thx"
_CLOSING_WORDS = """
    sincerely cheers ttd rgds best kind warm wishes kami saya terima you in advance many yours atas perhatiannya
    perhatian dan kerja samanya sama kerjasamanya bantuannya mohon ucapkan ya very much again sukses for your
    help attention the cooperation and banyak sekali sebelumnya responnya a lot so min kak pak bu bapak ibu mas
    mbak team tim gan sis bro all semua
"""
CLOSING_MARKS = frozenset(_CLOSING_MARKS.split()) | {"sincerely", "cheers", "ttd", "rgds"}
CLOSING_WORDS = CLOSING_MARKS | frozenset(_CLOSING_WORDS.split())
SIGNATURE_LINES = 6  # at most this many lines after a closing are its signature (more: the text goes on)

# Shape features: name -> what agents read in an explanation. Not shouting (capitals, "!!!"): the signals
# `shouting` and `exclamations` judge that, with weights ops can tune; a model would learn how often the
# corpus writers shouted. Not the length of a mail either: that says more about the corpus than the customer.
DENSE_FEATURES = {
    "d:nowords": "no words at all",
}

# A sentence holding one of these (as written, case-folded; Indonesian, English, the usual chat spellings) is a
# question, as is one that ends with "?". Not `kalau`, `jika`, `when`, `if` (a fault report says "lemot kalau
# malam"), nor `apa`, `mana` ("tidak apa-apa", "mana jawabannya"): with "?" they ask all the same. Fixed with the
# model's features (not the ops-editable slang map: a change there must not change what a trained model sees).
_QUESTION_WORDS = """
    apakah bagaimana bgmn gimana gmn gmna berapa brp kapan kpn dimana dmn kemana bisakah bolehkah adakah kenapa knp
    mengapa tanya nanya bertanya menanyakan how what where whether why wonder
"""
QUESTION_WORDS = frozenset(_QUESTION_WORDS.split())
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")  # a sentence and the marks that end it


class ModelError(EmailRouterError):
    """A model file that cannot be used; `key` says where in the file (a JSON path), `reason` what is wrong."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class FeatureSettings:
    """How text becomes features. Stored in the model file; a model is only used with its own settings."""

    version: str = FEATURE_VERSION
    max_chars: int = 2000  # only the first this many characters of subject + text count
    char_min: int = 3
    char_max: int = 5
    word_bigrams: bool = False  # "tidak bisa": no better in cross-validation than question words, a third slower
    question_words: bool = True  # the words of a question count once more, as asked (`q:WORD`)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "max_chars": self.max_chars,
            "char_ngrams": [self.char_min, self.char_max],
            "word_bigrams": self.word_bigrams,
        }
        if self.question_words:  # absent when off: a file written before the setting existed reads the same
            out["question_words"] = True
        return out


@dataclass(frozen=True)
class Document:
    """A text as the model sees it: its distinct words in order, its bigrams, shape features and scale."""

    words: tuple[str, ...]  # distinct normalised words, first occurrence order
    bigrams: tuple[str, ...]  # distinct "word word" pairs, first occurrence order
    dense: tuple[str, ...]  # the shape features that are on
    scale: float  # every word, question word and bigram feature is multiplied by this (1 / sqrt(distinct words))
    questions: tuple[str, ...] = ()  # distinct words (of `words`) that stand in a question, first occurrence order


def _is_stop(part: str, word: str) -> bool:
    """A part of a token (as written, case-folded) that says nothing: a stop word, one letter, only digits."""
    if part in _KEEP:
        return False
    return len(word) < 2 or word in STOP_WORDS or part in STOP_WORDS or word == "0"


def content_words(token: str) -> str:
    """The normalised words of one case-folded, whitespace-free token that count as features, space-separated:
    no stop words, no single letters, no bare numbers (`saya` -> "", `lemottt` -> "lemot", `hari2` -> "hari
    hari", `can't` -> "can not", `0812-555` -> "", `4g` -> "0g", `a.b` -> "")."""
    if "'" in token:
        token = _CONTRACTION.sub(_expand, token)
    out: list[str] = []
    for part in _TOKEN.findall(token):
        if len(part) > 2 and part[-1] == "2" and part[:-1].isalpha():
            word = _REPEATED_LETTER.sub(r"\1", part[:-1])
            if not _is_stop(part[:-1], word):
                out += (word, word)
        else:
            word = _REPEATED_LETTER.sub(r"\1", _DIGITS.sub("0", part))
            if not _is_stop(part, word):
                out.append(word)
    return " ".join(out)


def _expand(match: re.Match[str]) -> str:
    return _CONTRACTIONS.get(match.group(0), " not" if match.group(0).endswith("t") else " ")


class _TokenCache(dict[str, str]):
    """token as written -> content_words(case-folded token), filled on first use; bounded (a full cache
    computes, not stores)."""

    def __missing__(self, token: str) -> str:
        value = content_words(token.casefold())
        if len(self) < _WORD_CACHE_LIMIT:
            self[token] = value
        return value


_TOKENS = _TokenCache()
_PUNCTUATION = str.maketrans(dict.fromkeys("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", " "))
_OPENING = "\"'([{<*_-\u201c\u2018"
_INNER_PUNCTUATION = str.maketrans(dict.fromkeys("\"#$%&'()*+,-/:;<=>@[\\]^_`{|}~", " "))  # all but . ! ?
_SENTENCE_END = ".!?:"
_PARAGRAPH = "\x00"  # marks a blank line between the tokens (it stands for no word)
_CLOSING_HINTS = ("regard", "salam", "hormat", "kasih", "trims", "thank", "thx", "sincerely", "cheers", "ttd", "rgds")


def read(text: str, known: frozenset[str] | None = None) -> tuple[list[str], set[str]]:
    """The words of a text that can count as features, in order (feature version tm2: see the module
    docstring), and those of them written capitalised inside a sentence (`Rina`, `Braga`, `IndiNet`; not a
    word that opens the text, a sentence or a paragraph, not one in capitals) that are not `known`: these
    may be names. Not the signature after a closing, not addresses and links."""
    if "\u2019" in text:
        text = text.translate(_APOSTROPHES)
    cut = _signature_start(text)
    if cut is not None:
        text = text[:cut]
    raw = (text.replace("\n\n", "\n\x00\n") if "\n\n" in text else text).split()
    if "@" in text or "://" in text or "www." in text.lower():  # addresses and links are not words
        raw = [t for t in raw if not ("@" in t or "://" in t or t.lower().startswith("www."))]
    words = " ".join(map(_TOKENS.__getitem__, raw)).split()
    capitalised: set[str] = set()
    if not text.islower():
        for token in set(filter(str.istitle, raw)):  # "Rina", "Braga,", "Jl." (not "IP", not "IndiNet")
            found = _TOKENS[token].split()
            if not found or (known is not None and known.issuperset(found)):
                continue  # no feature, or only words the model knows: names or not, they count
            i = raw.index(token)
            while not _inside_sentence(raw, i):
                try:
                    i = raw.index(token, i + 1)
                except ValueError:
                    break
            else:
                capitalised.update(found)
    return words, capitalised


def _inside_sentence(raw: list[str], i: int) -> bool:
    """Whether token i stands inside a sentence: after a token that ends no sentence, and not after a blank
    line. The point of a short capitalised abbreviation ends no sentence ("Jl. Braga", "Mr. Fajar")."""
    if i == 0:
        return False
    before = raw[i - 1]
    if before == _PARAGRAPH:
        return False
    if before[-1] not in _SENTENCE_END:
        return True
    word = before[:-1].lstrip(_OPENING)
    return before[-1] == "." and 0 < len(word) <= 3 and word[0].isupper() and word[1:] == word[1:].lower()


def _signature_start(text: str) -> int | None:
    """Where the closing starts: the first closing line (`Best regards,`, `Salam,`, `Hormat kami,`, `Terima
    kasih.` ...) that follows some text and has at most SIGNATURE_LINES lines after it. The closing and the
    signature after it (name, job, company, phone) say nothing about what the customer wants: mail of every
    kind ends so."""
    tail = text[-800:].lower()
    if not any(map(tail.__contains__, _CLOSING_HINTS)):
        return None  # the usual chat message: no closing near the end
    lines = text.splitlines()
    last: list[int] = []  # the last lines with something on them, last first
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] and not lines[i].isspace():
            last.append(i)
            if len(last) > SIGNATURE_LINES + 1:
                break
    candidates = last[: SIGNATURE_LINES + 1]
    if len(last) <= SIGNATURE_LINES + 1:
        candidates.pop()  # the first line with something on it: no text before it
    for i in reversed(candidates):
        line = lines[i]
        if len(line) <= 80 and line.count(" ") < 8 and _is_closing(line):
            return _offset(text, i)
    return None


def _offset(text: str, count: int) -> int:
    """Where line `count` starts (line breaks of any kind)."""
    return sum(len(line) for line in text.splitlines(keepends=True)[:count])


def _is_closing(line: str) -> bool:
    words = line.casefold().translate(_PUNCTUATION).split()
    return len(words) <= 8 and not CLOSING_MARKS.isdisjoint(words) and CLOSING_WORDS.issuperset(words)


def words_of(text: str, known: frozenset[str] | None = None) -> list[str]:
    """The words of a text that count as features, in order. A word written capitalised inside a sentence
    counts only if it is in `known` (the words the model learned as words): otherwise it is taken for a
    name (of a person, a street, a company), and it counts nowhere in the text. `known` None: all count."""
    words, capitalised = read(text, known)
    if known is None or not capitalised:
        return words
    return list(itertools.filterfalse(capitalised.__contains__, words))


def document(subject: str, text: str, settings: FeatureSettings, known: frozenset[str] | None = None) -> Document:
    """The features of the customer's own words (subject and text), from the first max_chars characters."""
    full = f"{subject}\n{text}"[: settings.max_chars]
    found = words_of(full, known)
    words = tuple(dict.fromkeys(found))
    bigrams: tuple[str, ...] = ()
    if settings.word_bigrams and len(found) > 1:
        bigrams = tuple(dict.fromkeys(map(" ".join, itertools.pairwise(found))))
    questions = question_words(full, frozenset(words)) if settings.question_words and words else ()
    dense = () if words else ("d:nowords",)
    return Document(words, bigrams, dense, 1.0 / math.sqrt(len(words)) if words else 1.0, questions)


def question_words(text: str, words: frozenset[str]) -> tuple[str, ...]:
    """The distinct words of `words` that stand in a question of the text: a sentence (ended by . ! ? or a line
    break) that ends with "?" or holds one of QUESTION_WORDS. In first occurrence order (of the sentences)."""
    folded = text.casefold()
    by_word = not QUESTION_WORDS.isdisjoint(words)  # a question word is a feature word wherever it stands
    if not by_word and "?" not in folded:
        return ()  # the usual statement: no question at all
    if by_word:
        asked = [
            sentence
            for sentence in _SENTENCE.findall(folded.translate(_INNER_PUNCTUATION))
            if sentence[-1] == "?" or not QUESTION_WORDS.isdisjoint(sentence.rstrip(".!?").split())
        ]
    else:
        asked = [sentence for sentence in _SENTENCE.findall(folded) if sentence[-1] == "?"]
    if not asked:
        return ()
    found = " ".join(map(_TOKENS.__getitem__, " ".join(asked).split())).split()
    return tuple(dict.fromkeys(w for w in found if w in words))


def word_features(word: str, settings: FeatureSettings) -> list[str]:
    """The features one word contributes: itself and its character n-grams (with repeats)."""
    padded = f"<{word}>"
    out = [f"w:{word}"]
    for n in range(settings.char_min, settings.char_max + 1):
        out.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
    return out


def feature_values(doc: Document, settings: FeatureSettings) -> dict[str, float]:
    """The document's feature vector as a mapping, exactly what inference multiplies the weights with."""
    values: dict[str, float] = {}
    for word in doc.words:
        for f in word_features(word, settings):
            values[f] = values.get(f, 0.0) + doc.scale
    for word in doc.questions:
        values["q:" + word] = doc.scale
    for bigram in doc.bigrams:
        values["b:" + bigram] = doc.scale
    for name in doc.dense:
        values[name] = 1.0
    return values


@dataclass(frozen=True)
class Prediction:
    """What the model says about one text, with what is needed to explain it."""

    intent_probabilities: dict[str, float]  # over INTENTS, sums to 1
    hard_probability: float
    # the features that fired: words and bigrams (their weights count times `scale`), then shape features
    names: tuple[str, ...] = field(repr=False, default=())
    vectors: tuple[tuple[float, ...], ...] = field(repr=False, default=())
    scale: float = field(repr=False, default=1.0)
    dense: tuple[tuple[str, tuple[float, ...]], ...] = field(repr=False, default=())

    def top_features(self, output: str, k: int = TOP_FEATURES) -> tuple[tuple[str, float], ...]:
        """The k features that pushed hardest toward `output` (an intent or "hard"), strongest first.

        Intent weights are centred per feature (they sum to 0 over the intents), so a positive
        contribution to an intent is a push toward it and away from the others."""
        index = OUTPUTS.index(output)
        scale = self.scale
        weights = list(map(operator.itemgetter(index), self.vectors))
        best = sorted(range(len(weights)), key=weights.__getitem__, reverse=True)[:k]  # in C: quicker than heapq
        ranked = [(weights[i] * scale, self.names[i]) for i in best]
        ranked += [(v[index], name) for name, v in self.dense]
        ranked.sort(reverse=True)
        return tuple((name, round(w, 3)) for w, name in ranked[:k] if w > 0)


class TextModel:
    """A loaded model: weights per feature, for the intent softmax and the hard-complaint sigmoid."""

    def __init__(
        self,
        settings: FeatureSettings,
        bias: Sequence[float],
        weights: Mapping[str, Sequence[float]],
        training: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.bias = tuple(float(b) for b in bias)
        self.weights = {
            name: ws if type(ws) is tuple else tuple(float(w) for w in ws)  # from the loader: tuples already
            for name, ws in weights.items()
        }
        self.training = dict(training or {})
        self._words: dict[str, tuple[float, ...]] = {}
        self._bigrams = {name[2:]: ws for name, ws in self.weights.items() if name.startswith("b:")}
        self._questions = {name[2:]: ws for name, ws in self.weights.items() if name.startswith("q:")}
        # the words the model knows as words: a capitalised word inside a sentence counts only if it is one
        self.known = frozenset(name[2:] for name in self.weights if name.startswith("w:"))
        self.checksum = checksum(self._content())

    # -- inference

    def _word_vector(self, word: str) -> tuple[float, ...]:
        vector = self._words.get(word)
        if vector is not None:
            return vector
        total = [0.0] * len(OUTPUTS)
        weights = self.weights
        for f in word_features(word, self.settings):
            ws = weights.get(f)
            if ws is not None:
                for i, w in enumerate(ws):
                    total[i] += w
        vector = tuple(total)
        if len(self._words) < _WORD_CACHE_LIMIT:
            self._words[word] = vector
        return vector

    def predict(self, subject: str, text: str) -> Prediction:
        """Intent probabilities and hard-complaint probability of the customer's own words."""
        doc = document(subject, text, self.settings, self.known)
        cached = list(map(self._words.get, doc.words))
        if None in cached:  # words not seen before: their vectors are summed once and remembered
            vectors = [v or self._word_vector(w) for v, w in zip(cached, doc.words, strict=True)]
        else:
            vectors = cast(list[tuple[float, ...]], cached)
        names = list(doc.words)
        if doc.questions:
            asked = list(map(self._questions.get, doc.questions))
            names += (word + "?" for word in itertools.compress(doc.questions, asked))
            vectors += filter(None, asked)
        if doc.bigrams:
            found = list(map(self._bigrams.get, doc.bigrams))
            names += itertools.compress(doc.bigrams, found)
            vectors += filter(None, found)
        scale = doc.scale
        sums = [sum(column) * scale for column in zip(*vectors, strict=True)] if vectors else [0.0] * len(OUTPUTS)
        s0, s1, s2, s3, s4 = (total + b for total, b in zip(sums, self.bias, strict=True))
        dense: list[tuple[str, tuple[float, ...]]] = []
        get = self.weights.get
        for name in doc.dense:
            d = get(name)
            if d is not None:
                s0 += d[0]
                s1 += d[1]
                s2 += d[2]
                s3 += d[3]
                s4 += d[4]
                dense.append((f"({DENSE_FEATURES[name]})", d))
        top = max(s0, s1, s2, s3)
        e0, e1, e2, e3 = math.exp(s0 - top), math.exp(s1 - top), math.exp(s2 - top), math.exp(s3 - top)
        total = e0 + e1 + e2 + e3
        probabilities: dict[str, float] = dict(
            zip(INTENTS, (e0 / total, e1 / total, e2 / total, e3 / total), strict=True)
        )
        hard = 1.0 / (1.0 + math.exp(-s4)) if s4 > -700 else 0.0
        return Prediction(probabilities, hard, tuple(names), tuple(vectors), scale, tuple(dense))

    # -- the file

    def _content(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "intents": list(INTENTS),
            "outputs": list(OUTPUTS),
            "features": self.settings.as_json(),
            "bias": list(self.bias),
            "weights": {name: list(ws) for name, ws in sorted(self.weights.items())},
            "training": self.training,
        }

    def dumps(self) -> bytes:
        """The model file: JSON, one feature per line, keys sorted, checksum last. Byte-identical for equal models."""
        content = self._content()
        head = {k: v for k, v in content.items() if k not in ("weights", "training")}
        lines = ["{"]
        for key, value in head.items():
            lines.append(f"{json.dumps(key)}: {_compact(value)},")
        lines.append(f'"training": {_compact(content["training"])},')
        lines.append('"weights": {')
        items = list(content["weights"].items())
        for i, (name, ws) in enumerate(items):
            lines.append(
                f"{json.dumps(name, ensure_ascii=False)}: {_compact(ws)}" + ("," if i < len(items) - 1 else "")
            )
        lines.append("},")
        lines.append(f'"checksum": "{self.checksum}"')
        lines.append("}")
        return ("\n".join(lines) + "\n").encode("utf-8")

    @property
    def short_id(self) -> str:
        """The first hex digits of the checksum: which model decided, as shown in traces."""
        return self.checksum.removeprefix("sha256:")[:12]


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "), allow_nan=False)


def checksum(content: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of everything in the file but the checksum itself."""
    canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- loading, safely


def _refuse_constant(name: str) -> float:
    raise ModelError("", f"{name} is not a number a model file may contain (only finite numbers)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ModelError(key, "key appears twice")
        out[key] = value
    return out


def _finite_numbers(values: Any, key: str, length: int) -> tuple[float, ...]:
    # the common case quickly: a list of floats whose sum is finite (a NaN or an infinity makes it not)
    if (
        type(values) is list
        and len(values) == length
        and all(type(v) is float or type(v) is int for v in values)
        and math.isfinite(sum(values))
    ):
        return tuple(map(float, values))
    if not isinstance(values, list) or len(values) != length:
        raise ModelError(key, f"expected a list of {length} numbers, got {_describe(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"{key}[{i}]", f"expected a number, got {_describe(v)}")
        if not math.isfinite(v):
            raise ModelError(f"{key}[{i}]", "not a finite number")
    return tuple(float(v) for v in values)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {str(value)[:40]!r}"


_KEYS = {"format", "format_version", "intents", "outputs", "features", "bias", "weights", "training", "checksum"}


def model_from_bytes(data: bytes) -> TextModel:
    """Parse and verify a model file's bytes. Only JSON data is read; anything else raises ModelError."""
    if len(data) > MAX_FILE_BYTES:
        raise ModelError("", f"{len(data):,} bytes is more than a model file may have ({MAX_FILE_BYTES:,})")
    if data.startswith(b"\x80") or data[:2] in (b"(d", b"(l", b"}q", b"]q", b"cc"):
        raise ModelError("", "this is a Python pickle: refused, model files are JSON data and are never unpickled")
    if data.startswith(b"PK\x03\x04"):
        raise ModelError("", "this is a zip/npz archive: refused, model files are JSON data (see `emailrouter train`)")
    if data.startswith(b"\x93NUMPY"):
        raise ModelError("", "this is a numpy array file: refused, model files are JSON data")
    try:
        text = data.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ModelError("", f"not UTF-8 text, so not a JSON model file: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ModelError("", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return _model_from_doc(doc)


def _model_from_doc(doc: Any) -> TextModel:
    if not isinstance(doc, dict):
        raise ModelError("", f"expected a JSON object at the top level, got {_describe(doc)}")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ModelError(unknown[0], f"unknown key (a model file has only: {', '.join(sorted(_KEYS))})")
    missing = sorted(_KEYS - set(doc))
    if missing:
        raise ModelError(missing[0], "missing")
    if doc["format"] != FORMAT:
        raise ModelError("format", f"expected {FORMAT!r}, got {_describe(doc['format'])}")
    if doc["format_version"] != FORMAT_VERSION or isinstance(doc["format_version"], bool):
        raise ModelError(
            "format_version",
            f"this emailrouter reads format version {FORMAT_VERSION}, the file has {_describe(doc['format_version'])}"
            " (train the model again with this version)",
        )
    if doc["intents"] != list(INTENTS):
        raise ModelError("intents", f"expected exactly {list(INTENTS)}, got {doc['intents']!r}")
    if doc["outputs"] != list(OUTPUTS):
        raise ModelError("outputs", f"expected exactly {list(OUTPUTS)}, got {doc['outputs']!r}")
    settings = _settings(doc["features"])
    bias = _finite_numbers(doc["bias"], "bias", len(OUTPUTS))
    weights_doc = doc["weights"]
    if not isinstance(weights_doc, dict):
        raise ModelError(
            "weights", f"expected a mapping of feature to {len(OUTPUTS)} numbers, got {_describe(weights_doc)}"
        )
    weights: dict[str, tuple[float, ...]] = {}
    for name, ws in weights_doc.items():
        key = f"weights.{name}"
        if not _valid_feature(name):
            raise ModelError(key, "not a feature name (w:, c:, q:, b: or a known d: feature)")
        weights[name] = _finite_numbers(ws, key, len(OUTPUTS))
    if not isinstance(doc["training"], dict):
        raise ModelError("training", f"expected a mapping, got {_describe(doc['training'])}")
    _plain_data(doc["training"], "training")
    given = doc["checksum"]
    if not isinstance(given, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", given):
        raise ModelError("checksum", "expected 'sha256:' and 64 hex digits")
    model = TextModel(settings, bias, weights, doc["training"])
    if model.checksum != given:
        raise ModelError("checksum", "does not match the content: the file was changed after training")
    return model


def _plain_data(value: Any, key: str) -> None:
    """Figures about the training, nothing that looks like a serialised object (`__reduce__`, `py/object`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("__") or k.startswith("py/") or k.startswith("!!"):
                raise ModelError(f"{key}.{k}", "looks like a serialised Python object: refused, a model file is data")
            _plain_data(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _plain_data(v, f"{key}[{i}]")


def _valid_feature(name: str) -> bool:
    if name.startswith("d:"):
        return name in DENSE_FEATURES
    return len(name) > 2 and name[:2] in ("w:", "c:", "b:", "q:")


def _settings(node: Any) -> FeatureSettings:
    if not isinstance(node, dict):
        raise ModelError("features", f"expected a mapping, got {_describe(node)}")
    allowed = {"version", "max_chars", "char_ngrams", "word_bigrams", "question_words"}
    optional = {"question_words"}  # absent in files written before it existed: off
    for key in sorted(set(node) - allowed):
        raise ModelError(f"features.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
    for key in sorted(allowed - optional - set(node)):
        raise ModelError(f"features.{key}", "missing")
    if node["version"] != FEATURE_VERSION:
        raise ModelError(
            "features.version",
            f"this emailrouter computes features {FEATURE_VERSION!r}, the model needs {node['version']!r}",
        )
    max_chars = node["max_chars"]
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or not 1 <= max_chars <= MAX_CHARS_LIMIT:
        raise ModelError("features.max_chars", f"expected a whole number from 1 to {MAX_CHARS_LIMIT}")
    ngrams = node["char_ngrams"]
    if (
        not isinstance(ngrams, list)
        or len(ngrams) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in ngrams)
        or not 1 <= ngrams[0] <= ngrams[1] <= 8
    ):
        raise ModelError("features.char_ngrams", "expected [min, max] with 1 <= min <= max <= 8")
    if not isinstance(node["word_bigrams"], bool):
        raise ModelError("features.word_bigrams", "expected true or false")
    questions = node.get("question_words", False)
    if not isinstance(questions, bool):
        raise ModelError("features.question_words", "expected true or false")
    return FeatureSettings(FEATURE_VERSION, max_chars, ngrams[0], ngrams[1], node["word_bigrams"], questions)


def rounded(values: Iterable[float], digits: int = 4) -> list[float]:
    """Weights as stored: rounded, so files stay small and equal training gives byte-identical files."""
    return [round(float(v), digits) + 0.0 for v in values]  # + 0.0 turns -0.0 into 0.0
