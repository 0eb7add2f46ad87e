"""classify: intent and hard complaint from weighted YAML signals over the subject and the customer's own text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emailrouter.classify import Contact, classify
from emailrouter.config import Config
from emailrouter.parse import parse
from tests.conftest import eml


@pytest.mark.parametrize(
    ("subject", "text", "intent"),
    [
        ("Internet mati", "Sejak pagi internet di rumah mati total.", "fault"),
        ("inet lemot", "min inet sy lemot bgt", "fault"),
        ("wifi", "gk bisa konek wifi dr tadi pagi", "fault"),
        ("Connection down", "Our office line is down since this morning.", "fault"),
        ("Tanya paket", "Mau tanya harga paket 100 Mbps untuk kantor?", "information"),
        ("Question", "How much does the 50 Mbps business package cost?", "information"),
        ("Pasang baru", "Kami ingin pasang baru di cabang Bandung.", "request"),
        ("Relocation", "We need a relocation of our line to the new office.", "request"),
        ("Upgrade", "Mohon diproses upgrade kecepatan ke 200 Mbps.", "request"),
        ("Halo", "Selamat siang.", "unknown"),
        # fault and information equally strong: not clear enough
        ("", "internet mati, apa ada promo", "unknown"),
    ],
)
def test_intent(config: Config, subject: str, text: str, intent: str) -> None:
    """The best-scoring intent wins when it reaches the threshold with a margin; otherwise unknown."""
    assert classify(subject, text, config.signals).intent == intent


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Kalau tidak diperbaiki saya viralkan!", "media_threat"),
        ("Saya akan lapor ke YLKI.", "consumer_body_threat"),
        ("Saya akan menempuh jalur hukum lewat pengacara.", "legal_threat"),
        ("I will contact my lawyer and take legal action.", "legal_threat"),
        ("I will post this on social media.", "media_threat"),
    ],
)
def test_single_strong_threat_is_a_hard_complaint(config: Config, text: str, signal: str) -> None:
    """A threat to go to the media, consumer bodies or lawyers alone reaches the threshold."""
    result = classify("Internet mati", text, config.signals)
    assert result.hard
    assert signal in [s.name for s in result.hard_signals]


def test_weak_signals_add_up_to_a_hard_complaint(config: Config) -> None:
    """Repeated reports (2) and shouting (2) together reach the threshold of 4; either alone does not."""
    repeated = classify("internet", "sudah berkali-kali lapor, internet masih mati", config.signals)
    assert not repeated.hard and repeated.hard_score == 2
    shouting = classify("INTERNET MATI", "INTERNET SAYA MATI TOLONG DIPERBAIKI", config.signals)
    assert not shouting.hard and [s.name for s in shouting.hard_signals] == ["shouting"]
    both = classify("INTERNET MATI", "SUDAH BERKALI-KALI LAPOR INTERNET SAYA MATI", config.signals)
    assert both.hard and both.hard_score == 4
    assert {s.name for s in both.hard_signals} == {"repeated_report", "shouting"}


def test_compensation_and_insults_are_signals(config: Config) -> None:
    """Demands for compensation and insults are reported with the words that matched."""
    result = classify("", "Pelayanan payah!!! Saya minta ganti rugi.", config.signals)
    by_name = {s.name: s for s in result.hard_signals}
    assert by_name["compensation_demand"].matched == ("ganti rugi",)
    assert by_name["insult"].matched == ("payah",)
    assert by_name["exclamations"].matched == ("1x !!!",)
    assert result.hard and result.hard_score == 7


def test_short_capitals_are_not_shouting(config: Config) -> None:
    """Too few letters (an acronym like 'ONT LOS') is not shouting."""
    result = classify("ONT LOS", "", config.signals)
    assert "shouting" not in [s.name for s in result.hard_signals]


def test_keywords_match_whole_words_only(config: Config) -> None:
    """'mati' does not fire inside 'matikan', and 'info' not inside 'informal'."""
    result = classify("", "tolong matikan notifikasi informal", config.signals)
    assert result.signals == ()


def test_phrases_match_across_any_whitespace(config: Config) -> None:
    """'gk  bisa' across two spaces or a line break still matches the phrase 'gk bisa'."""
    result = classify("", "wifi gk\n  bisa", config.signals)
    assert [(s.name, s.matched) for s in result.signals] == [("fault_cannot", ("gk bisa",))]


def test_quoted_history_does_not_count(config: Config) -> None:
    """Threats and fault words in the quoted part of a reply leave the classification untouched."""
    raw = eml(
        "From: a@example.com",
        "Subject: Pertanyaan",
        body="Mau tanya harga paket 50 Mbps?\n\nOn Mon, 1 Jan 2026, CS wrote:\n> internet mati, saya viralkan!!!",
    )
    view = parse(raw)
    result = classify(view.subject, view.text, config.signals)
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
def test_language_detection(config: Config, text: str, language: str) -> None:
    """Replies go out in English only when the customer clearly wrote English."""
    assert classify("", text, config.signals).language == language


def test_every_fired_signal_and_score_are_reported(config: Config) -> None:
    """The classification lists each signal with its weight and the matched terms, and the scores."""
    result = classify("inet lemot", "udah 3x lapor dr kmrn gk ada perbaikan", config.signals)
    fired = {s.name: (s.group, s.weight, s.matched) for s in result.signals}
    assert fired == {
        "fault_outage": ("fault", 3.0, ("lemot",)),
        "repeated_report": ("hard", 2.0, ("dr kmrn",)),
        "repeated_count": ("hard", 2.0, ("udah 3x",)),
    }
    assert result.intent_scores == {"fault": 3.0, "information": 0.0, "request": 0.0}
    assert result.hard_score == 4 and result.hard


@pytest.mark.parametrize(
    "text",
    [
        "Mohon dikirim paling lambat hari Jumat. Terima kasih.",  # "at the latest", not slowness
        "No internet: 131500778812. Terima kasih.",  # how customers give their internet number
        "Salam, Budi | budi@info.example.com | info@example.co.id | https://info.example.com/harga",
        "Saya sudah berlangganan 5 tahun, terima kasih.",
    ],
)
def test_common_false_positives_do_not_fire(config: Config, text: str) -> None:
    """Everyday phrases, signatures and links that contain signal words do not count as signals."""
    assert classify("", text, config.signals).signals == ()


def test_typographic_apostrophes_match_plain_ones(config: Config) -> None:
    """'can’t connect' (curly apostrophe) matches the phrase "can't connect"."""
    result = classify("", "I can’t connect since this morning", config.signals)
    assert [(s.name, s.matched) for s in result.signals] == [("fault_cannot", ("can't connect",))]


def test_third_mail_about_the_same_thing_within_a_week_counts_toward_hard(config: Config) -> None:
    """Two earlier fault mails in 7 days fire repeated_contact (+2); older ones or other intents do not."""
    now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    recent = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=6), "fault")]
    result = classify("internet mati", "sudah berkali-kali lapor", config.signals, recent, now)
    assert [s.name for s in result.hard_signals] == ["repeated_report", "repeated_contact"]
    assert result.hard and result.hard_score == 4
    old = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=8), "fault")]
    assert "repeated_contact" not in [s.name for s in classify("internet mati", "", config.signals, old, now).signals]
    other = [Contact(now - timedelta(days=1), "fault"), Contact(now - timedelta(days=2), "information")]
    assert "repeated_contact" not in [s.name for s in classify("internet mati", "", config.signals, other, now).signals]
