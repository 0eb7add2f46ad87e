"""Our Message-ID format: made in one place, recognised by the same rules."""

from __future__ import annotations

import pytest

from emailrouter.core.ids import is_our_message_id, kind_of, our_message_id


def test_a_message_id_we_make_is_recognised_as_ours_with_its_kind() -> None:
    """What compose makes, the guard recognises (any case), with the kind in its middle part."""
    made = our_message_id("ER-ABC\0rule\x000\0Reply()", "reply", "cc.example.co.id")
    assert made.startswith("<er.") and made.endswith(".reply@cc.example.co.id>")
    assert is_our_message_id(made, "cc.example.co.id") and is_our_message_id(made.upper(), "cc.example.co.id")
    assert kind_of(made) == "reply"
    assert our_message_id("ER-ABC\0rule\x000\0Reply()", "reply", "cc.example.co.id") == made  # deterministic


@pytest.mark.parametrize(
    "other",
    [
        "<er.0123456789abcdef01234567.reply@elsewhere.example>",  # our shape, another router's domain
        "<er.0123.reply@cc.example.co.id>",  # too short a hash
        "<CAF1234@mail.gmail.com>",
        "",
        None,
    ],
)
def test_other_message_ids_are_not_ours(other: str | None) -> None:
    """A customer's, another router's or a malformed Message-ID is never taken for one of ours."""
    assert not is_our_message_id(other, "cc.example.co.id")


def test_the_kind_of_someone_elses_message_id_is_none() -> None:
    """kind_of answers only for our format."""
    assert kind_of("<abc.reply@gmail.com>") is None
