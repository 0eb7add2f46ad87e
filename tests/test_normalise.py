"""normalise: the customer's words as the signals read them (slang, spelling, reduplication, roots)."""

from __future__ import annotations

import pytest

from emailrouter.config.loader import Config
from emailrouter.config.slang import read_slang, sastrawi_dictionary
from emailrouter.config.yamlfile import Reader, load_yaml
from emailrouter.core import normalise
from emailrouter.core.errors import Problem
from emailrouter.core.normalise import (
    Normaliser,
    Settings,
    Slang,
    describe_tokens,
    rules_stemmer,
)


@pytest.fixture(scope="module")
def shipped(config: Config) -> Normaliser:
    """The shipped normaliser: config/slang.yaml and PySastrawi."""
    return config.signals.normaliser


@pytest.mark.parametrize(
    ("word", "normal"),
    [
        ("lemotttt", "lemot"),
        ("parahhh", "parah"),
        ("kapannnn", "kapan"),
        ("tolonggg", "tolong"),
        ("lemott", "lemot"),  # a doubled letter in an unknown word whose single form is known
        ("goooogle", "google"),  # 3+ letters become two when only that is a known word
        ("bgttt", "banget"),  # undone, then the slang table
    ],
)
def test_elongation_is_undone(shipped: Normaliser, word: str, normal: str) -> None:
    """Letters repeated for emphasis are written once (or twice, where that is the known word)."""
    assert shipped.normal(word) == (normal,)


@pytest.mark.parametrize(
    "word",
    ["maaf", "taat", "saat", "tunggu", "mall", "google", "speed", "zoom", "coffee", "tanggal", "assalamualaikum"],
)
def test_legitimate_double_letters_stay(shipped: Normaliser, word: str) -> None:
    """Known words with double letters, and unknown ones whose single form is no word either, stay as written."""
    assert shipped.normal(word) == (word,)


@pytest.mark.parametrize(
    ("word", "normal"),
    [
        ("berkali2", "berkali-kali"),
        ("hari2", "hari-hari"),
        ("kadang2", "kadang-kadang"),
        ("diam2", "diam-diam"),
        ("terus2an", "terus-terusan"),
        ("kdg2", "kadang-kadang"),  # the slang table first, then the reduplication
    ],
)
def test_reduplication_with_2_is_written_out(shipped: Normaliser, word: str, normal: str) -> None:
    """'kata2' is 'kata-kata'; a prefix is not repeated ('berkali2' is 'berkali-kali')."""
    assert shipped.normal(word) == (normal,)


@pytest.mark.parametrize(
    ("slang", "normal"),
    [
        ("gk", "tidak"), ("ga", "tidak"), ("gak", "tidak"), ("nggak", "tidak"), ("ngga", "tidak"), ("tdk", "tidak"),
        ("blm", "belum"), ("udh", "sudah"), ("udah", "sudah"), ("dah", "sudah"), ("sy", "saya"), ("aq", "saya"),
        ("gw", "saya"), ("gue", "saya"), ("bgt", "banget"), ("bngt", "banget"), ("tp", "tapi"), ("yg", "yang"),
        ("dgn", "dengan"), ("dg", "dengan"), ("krn", "karena"), ("jd", "jadi"), ("skrg", "sekarang"),
        ("tlg", "tolong"), ("mhn", "mohon"), ("min", "admin"), ("lemod", "lemot"), ("ngelag", "lag"),
        ("inetnya", "internetnya"),  # a slang word with a suffix
    ],
)  # fmt: skip
def test_slang_and_abbreviations_read_as_the_standard_word(shipped: Normaliser, slang: str, normal: str) -> None:
    """The shipped slang table maps what customers type onto the standard word."""
    assert shipped.normal(slang) == (normal,)


def test_one_slang_token_may_stand_for_several_words(shipped: Normaliser) -> None:
    """'gaada' is 'tidak ada': two positions, each with the customer's token as written."""
    tokens = shipped.tokens("gaada sinyal")
    assert tokens.normal == ["tidak", "ada", "sinyal"]
    assert tokens.words == ["gaada", "gaada", "sinyal"]
    assert len(tokens.roots) == 3


def test_positions_stay_aligned_with_line_breaks_and_expansions(shipped: Normaliser) -> None:
    """A line break and a slang token of two words in one text: the three sequences still line up."""
    tokens = shipped.tokens("halo\ninternet gaada sinyal")
    assert tokens.words == ["halo", "internet", "gaada", "gaada", "sinyal"]
    assert tokens.normal == ["halo", "internet", "tidak", "ada", "sinyal"]
    assert tokens.breaks == frozenset({1})


@pytest.mark.parametrize("word", ["minggu", "minta", "admin", "mint", "minimal"])
def test_a_slang_token_matches_only_as_a_whole_word(shipped: Normaliser, word: str) -> None:
    """'min' is 'admin' only on its own: words that start with it are left alone."""
    assert shipped.tokens(word).normal == [word]


@pytest.mark.parametrize(
    ("word", "root"),
    [
        ("terputus", "putus"),
        ("diputus", "putus"),
        ("putusnya", "putus"),
        ("penambahan", "tambah"),
        ("pemasangan", "pasang"),
        ("dipasang", "pasang"),
        ("gangguannya", "ganggu"),
        ("lemotnya", "lemot"),  # a colloquial root the stemmer learns from `keep:`
        ("wifinya", "wifi"),
    ],
)
def test_affixed_forms_reduce_to_their_root(shipped: Normaliser, word: str, root: str) -> None:
    """Ops write a root once and its affixed forms match it."""
    assert shipped.form(word).roots == (root,)


@pytest.mark.parametrize(
    ("word", "root"),
    [
        ("matikan", "matikan"),  # switch off, not "mati" (dead)
        ("diperbaiki", "perbaiki"),  # repair, not "baik" (good)
        ("pengacara", "pengacara"),  # a lawyer, not "acara" (an event)
        ("permohonan", "permohonan"),  # an application, not "mohon" (please)
    ],
)
def test_root_overrides_keep_a_words_own_meaning(shipped: Normaliser, word: str, root: str) -> None:
    """slang.yaml's `roots:` wins over the stemmer where the stemmer would change the meaning."""
    assert shipped.form(word).roots == (root,)


@pytest.mark.parametrize(
    "word", ["meeting", "streaming", "terminate", "speed", "download", "connection", "buffering", "loading"]
)
def test_english_words_are_not_stemmed(shipped: Normaliser, word: str) -> None:
    """English words keep their shape in every form."""
    assert shipped.form(word).normal == (word,) and shipped.form(word).roots == (word,)


def test_short_words_are_never_stemmed() -> None:
    """Words shorter than min_stem_length reach no stemmer at all."""
    seen: list[str] = []

    def stemmer(word: str) -> str:
        seen.append(word)
        return word[2:]

    n = Normaliser(Settings(stem="sastrawi", min_stem_length=5), stemmer=stemmer)
    assert n.form("dia").roots == ("dia",) and n.form("ditambah").roots == ("tambah",)
    assert seen == ["ditambah"]


def test_case_is_folded_and_punctuation_becomes_markers(shipped: Normaliser) -> None:
    """Capitals fold; '!!!' ends a sentence ('.'), '?' a question, ',' a clause; line breaks are kept apart."""
    tokens = shipped.tokens("internet MATI!!! kapan\nbisa, min?".casefold())
    assert tokens.normal == ["internet", "mati", ".", "kapan", "bisa", ",", "admin", "?"]
    assert tokens.words[2] == "!!!"
    assert tokens.breaks == frozenset({4})


def test_the_readable_form_shows_roots_in_brackets(shipped: Normaliser) -> None:
    """describe_tokens: the normal words, each root in brackets where it differs, markers attached."""
    assert shipped.text("Sy udh LAPOR, internet terputus lg!!!") == "saya sudah lapor, internet terputus[putus] lagi."
    assert describe_tokens(shipped.tokens("satu dua tiga"), limit=2) == "satu dua …"


def test_the_memo_is_bounded_and_never_changes_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_MEMO distinct words the memo starts afresh; every answer stays what it was."""
    monkeypatch.setattr(normalise, "MAX_MEMO", 3)
    n = Normaliser(Settings(slang=Slang({"gk": ("tidak",)})))
    first = [n.form(w) for w in ("gk", "a", "b", "c", "d", "gk")]
    assert len(n._memo) <= 3
    assert first[0] == first[-1] and first[0].normal == ("tidak",)


def test_our_own_affix_rules_find_known_roots() -> None:
    """The `rules` stemmer strips a prefix (with meN-/peN- sound changes) and suffixes down to a known root."""
    stem = rules_stemmer(sastrawi_dictionary())
    assert [stem(w) for w in ("terputus", "pemasangan", "dipasang", "penambahan", "memperbaiki", "putus-putus")] == [
        "putus",
        "pasang",
        "pasang",
        "tambah",
        "baik",
        "putus",
    ]
    assert stem("meeting") == "meeting"


def test_a_bad_slang_file_names_file_line_and_key() -> None:
    """Every bad entry of slang.yaml is a problem at its own line."""
    text = "slang:\n  gk: tidak\n  two words: x\n  blm: ''\nkeep: [zoom, 3.5]\nroots:\n  matikan: [x]\n"
    problems: list[Problem] = []
    doc = load_yaml(text, "slang.yaml", problems)
    assert read_slang(Reader("slang.yaml", problems), doc) is None
    found = {(p.line, p.key) for p in problems}
    assert found == {(3, "slang.two words"), (4, "slang.blm"), (5, "keep[1]"), (7, "roots.matikan")}


def test_nothing_is_rewritten_by_the_plain_normaliser() -> None:
    """Without settings, every word reads as written: the behaviour of a config without `normalise:`."""
    n = Normaliser(Settings(elongation=False, reduplication=False))
    assert n.identity
    assert n.tokens("gk lemottt berkali2").normal == ["gk", "lemottt", "berkali2"]
