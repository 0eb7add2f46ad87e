"""The learned text model: features, inference, and a model file that is data and never code."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from emailrouter.config.modelfile import load_model, save_model
from emailrouter.core.textmodel import (
    FeatureSettings,
    ModelError,
    TextModel,
    document,
    model_from_bytes,
    words_of,
)

SETTINGS = FeatureSettings()


def tiny_model(**settings: Any) -> TextModel:
    """A hand-made model: `mati` means fault, `harga` information, `pasang` request, `bodoh` a hard complaint."""
    weights = {
        "w:mati": [6.0, -2.0, -2.0, -2.0, 0.0],
        "w:harga": [-2.0, 6.0, -2.0, -2.0, 0.0],
        "w:pasang": [-2.0, -2.0, 6.0, -2.0, 0.0],
        "w:bodoh": [0.0, 0.0, 0.0, 0.0, 9.0],
        "b:tidak bisa": [3.0, -1.0, -1.0, -1.0, 0.0],
        "d:nowords": [-1.0, -1.0, -1.0, 3.0, 0.0],
    }
    features = FeatureSettings(**{"word_bigrams": True, **settings})
    return TextModel(features, [0.0, 0.0, 0.0, 1.0, -3.0], weights, {"note": "hand-made"})


def test_elongation_reduplication_digits_and_addresses_are_normalised() -> None:
    """`lemottt` reads as `lemot`, `berkali2` as two words, digits in a word as 0; stop words, bare numbers,
    single letters, addresses and links are not words; `can't` is `can not`."""
    words = words_of("Inet LEMOTTT, berkali2 lapor ke cs@provider.example https://x.example/y 0812-3456!! 3x, I can't")
    assert words == ["inet", "lemot", "berkali", "berkali", "lapor", "0x", "can", "not"]


def test_function_words_greetings_closings_and_signatures_say_nothing() -> None:
    """Stop words of both languages, forms of address, the closing line and the signature after it give no
    feature; a closing in the middle of a text does not cut it."""
    mail = (
        "Selamat siang Bapak/Ibu,\n\nSaya mau tanya harga paket untuk kantor kami di Bandung.\n\n"
        "Terima kasih,\nRina Kusumawati\nStaf Umum, CV Maju\n0812-0000-0000"
    )
    assert words_of(mail) == ["siang", "mau", "tanya", "harga", "paket", "kantor"]
    assert words_of("Dear team, I'd like to know the price of your packages. Best regards, John") == [
        "know",
        "price",
        "packages",
        "john",
    ]
    assert words_of("terima kasih, internet sudah normal\nmakasih ya min") == [
        "terima",
        "kasih",
        "internet",
        "sudah",
        "normal",
    ]
    assert words_of("Halo\n\nTerima kasih.\n" + "baris\n" * 10) == ["terima", "kasih", *["baris"] * 10]


def test_a_capitalised_word_the_model_never_learned_is_taken_for_a_name() -> None:
    """Inside a sentence a capitalised unknown word (a person, a street) counts nowhere in the text; a known one,
    one that opens a sentence or a paragraph, one in capitals, or one after an abbreviation's point counts."""
    known = frozenset({"internet", "mati", "lapor", "los"})
    text = "Saya Budi, Internet di Jl. Braga mati.\n\nBudi sudah lapor LOS. Jalan lain juga"
    assert words_of(text) == [
        "budi",
        "internet",
        "jl",
        "braga",
        "mati",
        "budi",
        "sudah",
        "lapor",
        "los",
        "jalan",
        "lain",
    ]
    assert words_of(text, known) == ["internet", "mati", "sudah", "lapor", "los", "jalan", "lain"]
    assert words_of("internet mati. Budi lapor", known) == ["internet", "mati", "budi", "lapor"]


def test_only_the_first_max_chars_characters_count() -> None:
    """A decisive word past max_chars changes nothing: a 16 KB mail costs what its first characters cost."""
    model = tiny_model(max_chars=40)
    head = "halo selamat pagi, saya mau bertanya"
    assert model.predict("", head).intent_probabilities == model.predict("", head + " mati" * 2000).intent_probabilities
    assert model.predict("", "mati " + head).intent_probabilities["fault"] > 0.5


def test_prediction_and_top_features_follow_the_weights() -> None:
    """The most probable intent is the one the words weigh toward, and the features shown are those words."""
    model = tiny_model()
    p = model.predict("Gangguan", "internet mati, tidak bisa dipakai, bodoh")
    assert max(p.intent_probabilities, key=p.intent_probabilities.__getitem__) == "fault"
    assert abs(sum(p.intent_probabilities.values()) - 1) < 1e-9
    assert p.hard_probability > 0.5
    assert [name for name, _ in p.top_features("fault")] == ["mati", "tidak bisa"]
    assert [name for name, _ in p.top_features("hard")] == ["bodoh"]
    assert p.top_features("request") == ()  # nothing pushed toward request


def test_shouting_is_left_to_the_signals_and_no_words_is_a_shape_feature() -> None:
    """Capitals and "!!!" change nothing for the model (the signals judge shouting); a "?" only adds the asked
    words the model has weights for (none here); a text without words is a feature, shown in words."""
    model = tiny_model()
    assert model.predict("", "INTERNET SAYA MATI TOTAL!!!") == model.predict("", "internet saya mati total")
    assert model.predict("", "harga paket berapa?") == model.predict("", "harga paket berapa")
    assert document("", "halo min?", SETTINGS).dense == ("d:nowords",)
    assert ("(no words at all)", 3.0) in model.predict("", "halo min?").top_features("unknown")


def test_the_words_of_a_question_count_once_more_as_asked() -> None:
    """A sentence ending in "?" or holding a question word gives its words as asked as well; a statement (also
    one with `kalau` or `apa-apa`) does not; the model weighs an asked word on its own ("upgrade?" asks about
    one, "tolong upgrade" asks for one)."""
    text = "Upgrade saya sudah diproses belum? Tolong upgrade modemnya juga. Kalau bisa hari ini"
    assert document("", text, SETTINGS).questions == ("upgrade", "sudah", "diproses", "belum")
    assert document("", "internet mati. kapan normal", SETTINGS).questions == ("kapan", "normal")
    assert document("", "Kami mau tanya prosedur pasang", SETTINGS).questions == ("mau", "tanya", "prosedur", "pasang")
    assert document("", "internet lemot kalau malam, tidak apa-apa", SETTINGS).questions == ()  # no question word
    assert document("", "tolong upgrade modemnya", SETTINGS).questions == ()
    assert document("", text, FeatureSettings(question_words=False)).questions == ()
    weights = {"w:upgrade": [-1.0, -1.0, 3.0, -1.0, 0.0], "q:upgrade": [-1.0, 5.0, -3.0, -1.0, 0.0]}
    model = TextModel(SETTINGS, [0.0] * 5, weights)
    asked, told = model.predict("", "upgrade sudah diproses?"), model.predict("", "tolong upgrade")
    assert max(asked.intent_probabilities, key=asked.intent_probabilities.__getitem__) == "information"
    assert max(told.intent_probabilities, key=told.intent_probabilities.__getitem__) == "request"
    assert [name for name, _ in asked.top_features("information")] == ["upgrade?"]


def test_a_model_file_from_before_question_words_reads_with_them_off() -> None:
    """A file whose features have no `question_words` (written before it existed) loads, checksum intact, with
    question words off; a value that is not true or false is refused naming the key."""
    old = tiny_model(question_words=False)
    doc = _doc(old)
    assert "question_words" not in doc["features"]
    loaded = model_from_bytes(old.dumps())
    assert loaded.settings.question_words is False and loaded.checksum == old.checksum
    assert _doc(tiny_model())["features"]["question_words"] is True
    doc["features"]["question_words"] = "yes"
    with pytest.raises(ModelError) as error:
        model_from_bytes(_rebuilt(doc))
    assert error.value.key == "features.question_words"


def test_model_file_round_trip_gives_identical_bytes_and_predictions(tmp_path: Path) -> None:
    """save -> load gives the same model: the same bytes again, the same checksum, the same predictions."""
    model = tiny_model()
    path = tmp_path / "model.json"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.dumps() == path.read_bytes()
    assert loaded.checksum == model.checksum
    for text in ("internet mati", "berapa harga paket", "tolong pasang baru", "halo", "BODOH!!!"):
        assert loaded.predict("", text) == model.predict("", text)


def _doc(model: TextModel) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(model.dumps())
    return loaded


def _rebuilt(doc: dict[str, Any]) -> bytes:
    """The document with a checksum that matches its (changed) content: only the content check can refuse it."""
    content = {k: v for k, v in doc.items() if k != "checksum"}
    from emailrouter.core.textmodel import checksum

    return json.dumps({**content, "checksum": checksum(content)}).encode()


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.target,))  # what unpickling would run

    def __init__(self, target: Path) -> None:
        self.target = target


def test_a_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    """A pickle whose loading would run code is refused as a pickle, and the code never runs."""
    target = tmp_path / "pwned"
    data = pickle.dumps(_Boom(target))
    with pytest.raises(ModelError, match="pickle"):
        model_from_bytes(data)
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(ModelError):
            model_from_bytes(pickle.dumps(_Boom(target), protocol=protocol))
    assert not target.exists()


def test_an_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    """An .npz archive (here holding an object array, which only unpickling could read) is refused."""
    np = pytest.importorskip("numpy")
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.array([_Boom(tmp_path / "pwned")], dtype=object))
    with pytest.raises(ModelError, match="npz"):
        model_from_bytes(buffer.getvalue())
    assert not (tmp_path / "pwned").exists()


def test_json_shaped_like_a_serialised_object_is_refused() -> None:
    """`__reduce__`-style or jsonpickle-style content is refused, at the top level and inside `training`."""
    doc = _doc(tiny_model())
    with pytest.raises(ModelError) as top:
        model_from_bytes(_rebuilt({**doc, "__reduce__": ["os.system", ["touch pwned"]]}))
    assert top.value.key == "__reduce__"
    for key in ("__reduce__", "py/object"):
        with pytest.raises(ModelError, match="serialised Python object") as inner:
            model_from_bytes(_rebuilt({**doc, "training": {"nested": [{key: "os.system"}]}}))
        assert inner.value.key == f"training.nested[0].{key}"


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (lambda d: d.update(format_version=2), "format_version", "format version 1"),
        (lambda d: d.update(intents=["fault", "information", "request", "spam"]), "intents", "expected exactly"),
        (lambda d: d["weights"].update({"w:mati": [1.0, 2.0]}), "weights.w:mati", "list of 5 numbers"),
        (lambda d: d["weights"].update({"w:mati": [1.0, 2.0, "x", 0, 0]}), "weights.w:mati[2]", "expected a number"),
        (lambda d: d["weights"].update({"x:odd": [0, 0, 0, 0, 0]}), "weights.x:odd", "not a feature name"),
        (lambda d: d["bias"].pop(), "bias", "list of 5 numbers"),
        (lambda d: d["features"].update(version="tm1"), "features.version", "'tm2'"),
        (lambda d: d["features"].update(max_chars=0), "features.max_chars", "whole number"),
        (lambda d: d.pop("training"), "training", "missing"),
    ],
)
def test_a_model_file_with_bad_content_is_refused_naming_the_key(change: Any, key: str, reason: str) -> None:
    """Wrong version, unknown labels, bad shapes or types: refused with the JSON key that is wrong."""
    doc = _doc(tiny_model())
    change(doc)
    with pytest.raises(ModelError) as error:
        model_from_bytes(_rebuilt(doc))
    assert error.value.key == key
    assert reason in error.value.reason


def test_nan_and_infinity_are_refused() -> None:
    """JSON has no NaN; Python's parser would accept it, the model loader does not."""
    text = tiny_model().dumps().decode()
    for constant in ("NaN", "Infinity", "-Infinity"):
        bad = text.replace('"w:mati": [6.0,', f'"w:mati": [{constant},', 1)
        assert bad != text
        with pytest.raises(ModelError, match="finite"):
            model_from_bytes(bad.encode())


def test_a_changed_weight_breaks_the_checksum() -> None:
    """Editing a number after training is detected: the checksum no longer matches."""
    text = tiny_model().dumps().decode()
    bad = text.replace('"w:mati": [6.0,', '"w:mati": [60.0,', 1)
    assert bad != text
    with pytest.raises(ModelError) as error:
        model_from_bytes(bad.encode())
    assert error.value.key == "checksum"


def test_duplicate_keys_and_non_json_are_refused() -> None:
    """A key given twice (the second would silently win in plain json.loads) and non-JSON bytes are refused."""
    text = tiny_model().dumps().decode()
    doubled = text.replace('"w:mati": [', '"w:mati": [1, 1, 1, 1, 1],\n"w:mati": [', 1)
    with pytest.raises(ModelError, match="twice"):
        model_from_bytes(doubled.encode())
    with pytest.raises(ModelError, match="not JSON"):
        model_from_bytes(b"model: yaml?")
    with pytest.raises(ModelError, match="UTF-8"):
        model_from_bytes(b"\xff\xfe{}")
