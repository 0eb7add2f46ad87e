"""classify: intent and hard complaint from weighted YAML signals over the subject and the customer's own text.

These tests exercise the signals alone (the shipped config without its learned model), so each answer can be
re-derived from config/signals.yaml by hand.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailrouter.config.loader import Config, load_config
from emailrouter.core.classify import Contact, Signal, Signals, classify
from emailrouter.core.errors import ConfigError
from emailrouter.core.parse import parse
from tests.conftest import eml


@pytest.fixture(scope="module")
def signals(config: Config) -> Signals:
    """The shipped signals, without the learned model: the signals alone decide."""
    return dataclasses.replace(config.signals, model=None)


def _fired(result: object) -> dict[str, tuple[str, ...]]:
    return {s.name: s.matched for s in result.signals}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("subject", "text", "intent"),
    [
        ("Internet mati", "Sejak pagi internet di rumah mati total.", "fault"),
        ("inet lemot", "min inet sy lemot bgt", "fault"),
        ("wifi", "gk bisa konek wifi dr tadi pagi", "fault"),
        ("Connection down", "Our office line is down since this morning.", "fault"),
        ("", "ping ML gw 200ms tiap malem, ngelag parah pas war", "fault"),
        ("", "streaming netflix patah2 terus, buffering mulu", "fault"),
        ("", "wifi ngelag parah pas meeting zoom, please fix asap", "fault"),
        ("Tanya paket", "Mau tanya harga paket 100 Mbps untuk kantor?", "information"),
        ("Question", "How much does the 50 Mbps business package cost?", "information"),
        ("", "ada paket unlimited tanpa FUP gak sih?", "information"),
        ("", "berapa biaya pasang baru di Bekasi?", "information"),
        ("Pasang baru", "Kami ingin pasang baru di cabang Bandung.", "request"),
        ("Relocation", "We need a relocation of our line to the new office.", "request"),
        ("Upgrade", "Mohon diproses upgrade kecepatan ke 200 Mbps.", "request"),
        ("", "tolong dinaikin ke 50 mbps mulai besok ya kak", "request"),
        ("", "CABUT AJA LANGGANAN GW!!! MUAK!!!", "request"),
        ("Halo", "Selamat siang.", "unknown"),
        ("", "makasih min, udah normal lagi", "unknown"),
        ("", "min?", "unknown"),
        # a fault report that also asks something is a fault report
        ("", "internet mati dari pagi, apa ada promo?", "fault"),
        # fault (tidak bisa +2) and request (reschedule +2) equally strong: not clear enough
        ("", "tidak bisa login, reschedule", "unknown"),
    ],
)
def test_intent(signals: Signals, subject: str, text: str, intent: str) -> None:
    """The best-scoring intent wins when it reaches the threshold with a margin; otherwise unknown."""
    assert classify(subject, text, signals).intent == intent


def test_asking_how_to_terminate_is_information_not_a_termination_request(signals: Signals) -> None:
    """'bagaimana cara berhenti berlangganan?' asks how: the request signal weighs less inside the question."""
    asking = classify("", "Bagaimana cara berhenti berlangganan?", signals)
    assert asking.intent == "information"
    hit = next(s for s in asking.signals if s.name == "request_service_change")
    assert hit.weight == 1 and hit.matched[-1] == "(in a question)"
    telling = classify("", "Saya ingin berhenti berlangganan mulai bulan depan.", signals)
    assert telling.intent == "request"
    assert next(s for s in telling.signals if s.name == "request_service_change").weight == 4


def test_a_statement_next_to_a_question_keeps_its_weight(signals: Signals) -> None:
    """Only the sentence that asks is a question: a request stated on its own line counts fully."""
    result = classify("", "Kami ingin pasang baru di ruko kami.\nApakah teknisi bisa datang hari Sabtu?", signals)
    assert result.intent == "request"


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Kalau tidak diperbaiki akan saya viralkan!", "media_threat"),
        ("Saya akan lapor ke YLKI.", "consumer_body_threat"),
        ("kalau gak beres gw laporin ke ylki", "consumer_body_threat"),
        ("Saya akan menempuh jalur hukum lewat pengacara.", "legal_threat"),
        ("I will contact my lawyer and take legal action.", "legal_threat"),
        ("I will post this on social media.", "media_threat"),
        ("Sudah lapor berkali-kali tidak direspon", "repeated_report"),
        ("udh lapor berkali2 ga ada yg dateng", "repeated_report"),
        ("ini keempat kalinya saya email soal ini", "repeated_report"),
        ("Saya minta ganti rugi atas gangguan ini.", "compensation_demand"),
        ("provider sampah", "insult"),
        ("CS kalian goblok", "insult"),
        ("INTERNET SAYA MATI TOLONG DIPERBAIKI SEKARANG", "shouting"),
        ("anjing internet mati lagi", "profanity"),
        ("Please escalate to your manager, we will raise this with your CEO.", "escalation_threat"),
        ("pelayanan kalian sialan, f*** this company", "masked_profanity"),
    ],
)
def test_one_strong_signal_is_a_hard_complaint(signals: Signals, text: str, signal: str) -> None:
    """A threat, a repeated unresolved report, a compensation demand, an insult or shouting alone is enough."""
    result = classify("Internet", text, signals)
    assert result.hard, _fired(result)
    assert signal in [s.name for s in result.hard_signals]


@pytest.mark.parametrize(
    "text",
    [
        "Saya baca di koran ada promo baru, apakah berlaku di Depok?",
        "Seperti diberitakan media, ada gangguan kabel laut. Apakah daerah saya terdampak?",
        "Sesuai aturan Kominfo, apakah registrasi perlu KTP?",
        "anjir cepet banget sekarang, mantap",
        "anjir baru pasang seminggu udah mati, tolong dibenerin ya min",
        "agak kecewa sih, mohon segera dicek ya",
        "Internet mati!",
        "WOW MANTAP!!! SPEED NAIK JADI 100 MBPS, MAKASIH MIN!!!",
        "Mohon dipertimbangkan potongan tagihan karena internet mati 5 hari bulan lalu.",
        "Kami dari Dinas Kominfo melaporkan bahwa WiFi publik di taman kota tidak dapat diakses.",
        "Jaringan di kantor Pengadilan Agama mati sejak pagi, sidang online tertunda.",
    ],
)
def test_calm_mentions_and_mild_frustration_are_not_hard(signals: Signals, text: str) -> None:
    """Media and regulators mentioned calmly, swearing that is praise, mild frustration: no hard complaint."""
    result = classify("", text, signals)
    assert not result.hard, _fired(result)


def test_calm_media_mention_fires_no_threat_signal(signals: Signals) -> None:
    """'saya baca di koran' names a newspaper without threatening to go to one: no media signal at all."""
    result = classify("", "Saya baca di koran promo baru, masih berlaku?", signals)
    assert not {"media_threat", "consumer_body_threat"} & {s.name for s in result.hard_signals}


def test_weak_signals_add_up_to_a_hard_complaint(signals: Signals) -> None:
    """Nobody answering (+2) and asking for an escalation (+2) reach the threshold of 4 together; alone, not."""
    unanswered = classify("internet", "sudah seminggu tidak ada tanggapan", signals)
    assert not unanswered.hard and unanswered.hard_score == 2
    both = classify("internet", "sudah seminggu tidak ada tanggapan, please escalate", signals)
    assert both.hard and both.hard_score == 4
    assert {s.name for s in both.hard_signals} == {"unresolved", "escalation"}


def test_compensation_and_insults_report_the_words_that_matched(signals: Signals) -> None:
    """Demands for compensation and insults are reported with the words that matched."""
    result = classify("", "Pelayanan busuk!!! Saya minta ganti rugi.", signals)
    by_name = {s.name: s for s in result.hard_signals}
    assert by_name["compensation_demand"].matched == ("ganti rugi",)
    assert by_name["insult"].matched == ("busuk", "pelayanan busuk")
    assert by_name["exclamations"].matched == ("1x !!!",)
    assert result.hard and result.hard_score == 9


def test_asking_about_compensation_is_no_demand(signals: Signals) -> None:
    """'apakah ada kompensasi?' asks; the signal weighs 1 inside the question."""
    result = classify("", "Apakah ada kompensasi untuk gangguan minggu lalu?", signals)
    assert not result.hard
    assert next(s for s in result.hard_signals if s.name == "compensation_ask").weight == 1


def test_short_capitals_are_not_shouting(signals: Signals) -> None:
    """Too few letters (an acronym like 'ONT LOS') is not shouting."""
    result = classify("ONT LOS", "", signals)
    assert "shouting" not in [s.name for s in result.hard_signals]


def test_keywords_match_whole_words_only(signals: Signals) -> None:
    """'mati' does not fire inside 'matikan' (switch off, a root of its own), and 'info' not inside 'informal'."""
    result = classify("", "tolong matikan notifikasi informal", signals)
    assert result.intent_scores["fault"] == 0 and result.intent_scores["information"] == 0


def test_phrases_match_across_any_whitespace_and_say_the_form_that_matched(signals: Signals) -> None:
    """'gk  bisa' across two spaces and a line break matches 'tidak bisa' in normal form, and says so."""
    result = classify("", "modem gk\n  bisa", signals)
    assert _fired(result)["fault_cannot"] == ("gk bisa→tidak bisa",)


@pytest.mark.parametrize(
    ("text", "signal", "term"),
    [
        ("internet lemotnya parah", "fault_outage", "lemotnya→lemot"),
        ("sinyalnya jelek banget", "fault_state", "sinyalnya jelek"),
        ("internet lemottt bgt", "fault_outage", "lemottt→lemot"),
        ("internet lemot", "fault_outage", "lemot"),
        ("mohon pemasangan baru di ruko", "request_service_change", "pemasangan baru→pasang baru"),
        ("udh lapor berkali2", "repeated_report", "lapor berkali2"),
    ],
)
def test_the_trace_says_which_form_matched(signals: Signals, text: str, signal: str, term: str) -> None:
    """A matched term shows the customer's word and, if it differs, the normal form or root that matched."""
    assert term in _fired(classify("", text, signals))[signal]


def test_classification_shows_the_text_as_the_signals_read_it(signals: Signals) -> None:
    """The normalised text: slang expanded, elongation undone, roots in brackets where they differ."""
    result = classify("", "Min inet sy terputus lg, lemottt bgt", signals)
    assert result.normalised == "admin internet saya terputus[putus] lagi, lemot banget"


def test_every_fired_signal_and_score_are_reported(signals: Signals) -> None:
    """The classification lists each signal with its weight and the matched terms, and the scores."""
    result = classify("inet lemot", "udah 3x lapor dr kmrn gk ada perbaikan", signals)
    fired = {s.name: (s.group, s.weight, s.matched) for s in result.signals}
    assert fired == {
        "fault_outage": ("fault", 3.0, ("lemot",)),
        "fault_fix": ("fault", 2.0, ("perbaikan",)),
        "topic": ("information", 0.0, ("inet→internet",)),
        "repeated_report": ("hard", 4.0, ("3x lapor",)),
        "repeated_count": ("hard", 2.0, ("udah 3x",)),
    }
    assert result.intent_scores == {"fault": 5.0, "information": 0.0, "request": 0.0}
    assert result.hard_score == 6 and result.hard


def test_quoted_history_does_not_count(signals: Signals) -> None:
    """Threats and fault words in the quoted part of a reply leave the classification untouched."""
    raw = eml(
        "From: a@example.com",
        "Subject: Pertanyaan",
        body="Mau tanya harga paket 50 Mbps?\n\nOn Mon, 1 Jan 2026, CS wrote:\n> internet mati, saya viralkan!!!",
    )
    view = parse(raw)
    result = classify(view.subject, view.text, signals)
    assert result.intent == "information"
    assert not result.hard and result.hard_score == 0


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Dear team, my internet has been down since this morning. Please help.", "en"),
        ("Selamat pagi, internet saya mati sejak tadi pagi. Mohon bantuannya.", "id"),
        ("min inet sy lemot bgt dr kmrn", "id"),
        ("Internet down", "id"),  # too little English to be sure: the default
        ("Tolong please, my internet mati dari kemarin, sudah restart modem", "id"),
    ],
)
def test_language_detection(signals: Signals, text: str, language: str) -> None:
    """Replies go out in English only when the customer clearly wrote English."""
    assert classify("", text, signals).language == language


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("Mohon dikirim paling lambat hari Jumat. Terima kasih.", "fault"),  # "at the latest", not slowness
        ("No internet: 131500778812. Terima kasih.", "fault"),  # how customers give their internet number
        ("Salam, Budi | budi@info.example.com | info@example.co.id | https://info.example.com/harga", "information"),
        ("Saya sudah berlangganan 5 tahun, terima kasih.", "request"),
        ("Maaf mengganggu, selamat siang.", "fault"),  # "mengganggu" is politeness, not "gangguan"
        ("Saya baca di koran promo baru.", "request"),
    ],
)
def test_common_false_positives_do_not_fire(signals: Signals, text: str, group: str) -> None:
    """Everyday phrases, signatures and links that contain signal words do not count toward that intent."""
    result = classify("", text, signals)
    assert result.intent_scores[group] == 0, _fired(result)
    assert result.intent != group


def test_typographic_apostrophes_match_plain_ones(signals: Signals) -> None:
    """'can’t connect' (curly apostrophe) matches the phrase "can't connect"."""
    result = classify("", "I can’t connect since this morning", signals)
    assert _fired(result)["fault_cannot"] == ("can't connect",)


def test_third_mail_about_the_same_thing_within_a_week_counts_toward_hard(signals: Signals) -> None:
    """Two earlier fault mails in 7 days fire repeated_contact (+2); older ones or other intents do not."""
    now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    recent = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=6), "fault")]
    result = classify("internet mati", "sudah seminggu tidak ada tanggapan", signals, recent, now)
    assert [s.name for s in result.hard_signals] == ["unresolved", "repeated_contact"]
    assert result.hard and result.hard_score == 4
    old = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=8), "fault")]
    assert "repeated_contact" not in _fired(classify("internet mati", "", signals, old, now))
    other = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=2), "information")]
    assert "repeated_contact" not in _fired(classify("internet mati", "", signals, other, now))


# --------------------------------------------------------------------------- signals.yaml: new ways to match


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_requires_must_name_a_signal_above(config_copy: Path) -> None:
    """`requires` naming a signal that is not above this one is an error at its line."""
    signals = config_copy.parent / "signals.yaml"
    _edit(signals, "requires: [fault, complaint_mood, unresolved]", "requires: [fault, cancel_threat]")
    problems = _problems(config_copy)
    assert any("requires[1]: unknown signal 'cancel_threat'" in p for p in problems), problems


def test_in_question_is_only_for_placed_matches(config_copy: Path) -> None:
    """`in_question` on a shouting signal (no place in the text) is refused."""
    signals = config_copy.parent / "signals.yaml"
    _edit(signals, "      caps_ratio: 0.6", "      in_question: 1\n      caps_ratio: 0.6")
    problems = _problems(config_copy)
    assert any(".in_question: only for keywords, near, phrases signals" in p for p in problems), problems


def test_near_needs_both_word_lists(config_copy: Path) -> None:
    """A `near` without its second list names the signal and the missing key."""
    signals = config_copy.parent / "signals.yaml"
    text = signals.read_text()
    start = text.index("        with: [ylki")
    stop = text.index("\n", start)
    signals.write_text(text[:start] + text[stop + 1 :])
    problems = _problems(config_copy)
    assert any("hard_complaint.signals[1].near.with: expected a non-empty list of words" in p for p in problems)


def test_a_bad_slang_entry_names_its_line(config_copy: Path) -> None:
    """A slang entry that stands for nothing is reported at its line in slang.yaml."""
    slang = config_copy.parent / "slang.yaml"
    _edit(slang, "  gaada: tidak ada\n", "  gaada: tidak ada\n  bad entry: tidak\n")
    line = next(i for i, text in enumerate(slang.read_text().splitlines(), 1) if text.startswith("  bad entry:"))
    problems = _problems(config_copy)
    assert any(p.startswith(f"{slang}:{line}: slang.bad entry: a slang entry is one word") for p in problems), problems


def test_an_unknown_stemmer_is_refused(config_copy: Path) -> None:
    """`normalise.stem` must name a stemmer that exists."""
    signals = config_copy.parent / "signals.yaml"
    _edit(signals, "  stem: sastrawi", "  stem: porter")
    problems = _problems(config_copy)
    assert any("normalise.stem: unknown stemmer 'porter' (known: sastrawi, rules, none)" in p for p in problems)


def test_slang_added_by_ops_takes_effect(config_copy: Path) -> None:
    """A word ops add to slang.yaml is read as the word it stands for, and changes the config version."""
    before = load_config(config_copy)
    slang = config_copy.parent / "slang.yaml"
    _edit(slang, "  gaada: tidak ada\n", "  gaada: tidak ada\n  modar2an: mati\n")
    after = load_config(config_copy)
    assert after.version != before.version
    result = classify("", "internet modar2an", dataclasses.replace(after.signals, model=None))
    assert _fired(result)["fault_outage"] == ("modar2an→mati",)


@pytest.mark.parametrize(
    "text", ["sudah 3x lapor", "xsudah 3x, sudah 4x", "kesudah 3 kali", "udah 2 kali_sudah 5x", "", "sudah"]
)
def test_a_leading_word_boundary_finds_what_the_plain_regex_finds(text: str) -> None:
    """The fast path for regexes starting with \\b (checked by hand) matches exactly what re would."""
    expression = r"\b(?:sudah|udah)\s+\d+\s*(?:x|kali)\b"
    signal = Signal("s", "hard", 1.0, regex=re.compile(f"(?:{expression})"))
    assert signal._unbounded is not None
    assert [m.group(0) for m in signal._regex_matches(text)] == re.findall(expression, text)


def test_joined_regexes_keep_the_plain_path() -> None:
    """Several regexes joined with | are run as they are (a leading \\b binds only the first)."""
    signal = Signal("s", "hard", 1.0, regex=re.compile(r"(?:\bfoo)|(?:bar)"))
    assert signal._unbounded is None
    assert [m.group(0) for m in signal._regex_matches("xfoo bar")] == ["bar"]


def test_a_note_that_needs_nothing_done_counts_against_every_intent(signals: Signals) -> None:
    """A thank-you or a "never mind" that tells the story of a fault asks for nothing: `no_ask` (and `resolved`)
    lower every intent, so it is left unknown or to the model."""
    done = classify("", "kemarin wifi mati, udah nyala lagi sekarang, gausah dicek ya min", signals)
    assert done.intent == "unknown" and {"no_ask", "no_ask_request", "no_ask_information"} <= set(_fired(done))
    thanks = classify("", "Saya ingin berterima kasih kepada teknisi yang memperbaiki kabel putus kemarin.", signals)
    assert thanks.intent_scores == {"fault": 3 + 2 - 3, "information": -3, "request": -3}  # putus, perbaiki, no_ask


def test_spam_and_phishing_count_against_fault_too(signals: Signals) -> None:
    """A phishing mail uses fault words ("diblokir"); its shape counts against fault as well as the others."""
    result = classify("", "Akun Anda akan diblokir. Segera verifikasi data Anda, klik link di bawah ini.", signals)
    assert result.intent == "unknown" and "not_for_us_fault" in _fired(result)


@pytest.mark.parametrize(
    ("text", "intent", "signal"),
    [
        ("bisa dimundurin jadwal pasangnya ke minggu depan?", "request", "request_move_date"),
        ("upgrade yang saya ajukan minggu lalu sudah diproses belum?", "information", "information_status"),
        ("tolong proses kompensasi saya untuk bulan lalu", "request", "request_compensation"),
        ("mohon kompensasinya, internet mati 5 hari", "fault", "request_compensation"),  # the report still leads
    ],
)
def test_dates_status_and_compensation(signals: Signals, text: str, intent: str, signal: str) -> None:
    """Moving a date is a request even as a question; the status of an application is a question; compensation is
    asked of us, but a fault report that asks for it stays a fault report."""
    result = classify("", text, signals)
    assert result.intent == intent and signal in _fired(result)


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("dasar tukang tipu, internet mati lagi", "insult"),
        ("besok gw dateng ke kantor kalian sambil live ig", "media_threat"),
    ],
)
def test_more_ways_to_insult_and_to_threaten_are_hard(signals: Signals, text: str, signal: str) -> None:
    """An insult ("tukang tipu") and a live video at the office (a media threat) are each hard on their own."""
    result = classify("", text, signals)
    assert result.hard and signal in _fired(result)


def test_a_count_of_tickets_counts_toward_hard(signals: Signals) -> None:
    """A count of tickets ("4 nomer tiket") says it was reported again and again: two points, like "sudah 3x"."""
    result = classify("", "halo kalian masih idup? 4 nomer tiket, nol teknisi", signals)
    assert _fired(result)["repeated_count"] == ("4 nomer tiket",)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:\b(?:sudah|udah|udh|sdh)\s+\d+\s*(?:x|kali)\b)",
        r"(?:\b(?:sudah|udah)\s*(?:lapor|\d+))",
        r"(?:\bkirim(?:kan)?\b)",
    ],
)
def test_a_regex_tried_only_where_a_match_can_start_finds_what_finditer_finds(pattern: str) -> None:
    """A regex whose every match starts with one of a few strings is tried only where they stand: the same
    matches, in the same order, as finditer over the whole text (overlapping starts, word boundaries)."""
    signal = Signal("r", "hard", 1.0, regex=re.compile(pattern))
    assert signal._starts is not None
    rng = random.Random(5)
    pieces = ["sudah", "udah", "udh", "sdh", "ssudah", " ", " ", "3", "12", "x", "kali", "lapor", "kirim", "kan", "\n"]
    for _ in range(2_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        found = [(m.start(), m.group(0)) for m in signal._regex_matches(text)]
        assert found == [(m.start(), m.group(0)) for m in signal.regex.finditer(text)], text  # type: ignore[union-attr]


def test_a_signal_passed_over_before_matching_would_have_matched_nothing(signals: Signals) -> None:
    """Over the corpus texts, every signal that the quick test says cannot match finds no match indeed."""
    root = Path(__file__).resolve().parent.parent / "corpus" / "train"
    texts = [json.loads(line) for line in (root / "a.jsonl").read_text(encoding="utf-8").splitlines()[:400]]
    passed_over = 0
    for item in texts:
        prepared = signals.prepare(item["subject"], item["text"])
        for signal in (*signals.intent_signals, *signals.hard_signals):
            if signal._trigger is not None and not signal._may_match(prepared):
                passed_over += 1
                assert signal._matches(prepared) == [], (signal.name, item["id"])
    assert passed_over > 1_000


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:\b(?:sudah|udah|udh|sdh)\s+\d+\s*(?:x|kali)\b)|(?:\b[2-9]\s*(?:nomor tiket|nomer tiket|tiket|tickets)\b)",
        r"(?:kali)|(?:\bsudah\s*\d)|(?:x\s*kali)",
        r"(?:\d+)|(?:sudah lapor)",
    ],
)
def test_regexes_joined_find_what_finditer_finds_with_the_branches_that_cannot_match_left_out(pattern: str) -> None:
    """A signal's regexes joined by "|" are searched without the ones whose needed strings are not in the text:
    the same matches, in the same order, as finditer over the whole text with every branch."""
    signal = Signal("r", "hard", 1.0, regex=re.compile(pattern))
    assert signal._branches is not None
    rng = random.Random(7)
    pieces = ["sudah", "udh", "sdh", " ", " ", "3", "12", "x", "kali", "lapor", "tiket", "nomer tiket", "\n"]
    for _ in range(2_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        found = [(m.start(), m.group(0)) for m in signal._regex_matches(text)]
        assert found == [(m.start(), m.group(0)) for m in signal.regex.finditer(text)], text  # type: ignore[union-attr]
