from __future__ import annotations

import time

import pytest

from tests.support.dovecot import Dovecot


def mail(n: int) -> bytes:
    return (
        f"From: Customer {n} <c{n}@example.com>\r\nTo: cs@example.com\r\nSubject: Test {n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\n\r\nBody {n}\r\n"
    ).encode()


def test_append_then_fetch_returns_the_same_bytes(dovecot: Dovecot) -> None:
    """An appended message comes back from FETCH byte for byte."""
    dovecot.append("router", "INBOX", mail(1))
    dovecot.append("router", "INBOX", mail(2))
    assert list(dovecot.fetch_all("router", "INBOX").values()) == [mail(1), mail(2)]
    assert dovecot.fetch_all("other", "INBOX") == {}


def test_append_creates_a_missing_folder_with_flags(dovecot: Dovecot) -> None:
    """append() creates a missing (nested) folder and stores the given flags."""
    dovecot.append("router", "Routed/Done", mail(1), flags=[b"\\Seen", b"$Routed"])
    [(uid, flags)] = dovecot.flags("router", "Routed/Done").items()
    assert {b"\\Seen", b"$Routed"} <= set(flags)
    assert dovecot.uids("router", "Routed/Done", ["SEEN"]) == [uid]


def test_body_peek_does_not_set_seen_but_body_does(dovecot: Dovecot) -> None:
    """Fetching BODY.PEEK[] leaves \\Seen unset, while a plain BODY[] sets it."""
    dovecot.append("router", "INBOX", mail(1))
    with dovecot.client() as imap:
        imap.select_folder("INBOX")
        [uid] = imap.search(["ALL"])
        assert imap.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == mail(1)
        assert b"\\Seen" not in imap.get_flags([uid])[uid]
        imap.fetch([uid], ["BODY[]"])
        assert b"\\Seen" in imap.get_flags([uid])[uid]
    assert dovecot.uids("router", "INBOX", ["UNSEEN"]) == []


def test_keyword_routed_is_stored_and_searchable(dovecot: Dovecot) -> None:
    """The keyword $Routed can be set, and SEARCH NOT KEYWORD $Routed leaves that message out."""
    dovecot.append("router", "INBOX", mail(1))
    dovecot.append("router", "INBOX", mail(2))
    with dovecot.client() as imap:
        selected = imap.select_folder("INBOX")
        assert b"\\*" in selected[b"PERMANENTFLAGS"]  # new keywords allowed
        first, second = imap.search(["ALL"])
        imap.add_flags([first], [b"$Routed"])
        assert imap.search(["NOT", "KEYWORD", "$Routed"]) == [second]
        assert imap.search(["KEYWORD", "$Routed"]) == [first]
    assert b"$Routed" in dovecot.flags("router", "INBOX")[first]


def test_move_uidplus_and_idle_are_advertised_and_move_works(dovecot: Dovecot) -> None:
    """Dovecot advertises MOVE, UIDPLUS and IDLE after login, and UID MOVE moves a message."""
    dovecot.append("router", "INBOX", mail(1))
    dovecot.append("router", "Done", mail(2))
    with dovecot.client() as imap:
        capabilities = set(imap.capabilities())
        assert {b"MOVE", b"UIDPLUS", b"IDLE"} <= capabilities
        imap.select_folder("INBOX")
        [uid] = imap.search(["ALL"])
        imap.move([uid], "Done")
        assert imap.search(["ALL"]) == []
    assert sorted(dovecot.fetch_all("router", "Done").values()) == [mail(1), mail(2)]


def test_idle_sees_exists_from_another_connection_within_3_s(dovecot: Dovecot) -> None:
    """A client in IDLE gets an untagged EXISTS within 3 s of another connection's APPEND."""
    with dovecot.client() as imap:
        imap.select_folder("INBOX")
        imap.idle()
        try:
            dovecot.append("router", "INBOX", mail(1))
            appended = time.monotonic()
            seen: list[object] = []
            while time.monotonic() - appended < 3.0 and not any(
                isinstance(r, tuple) and r[1:2] == (b"EXISTS",) for r in seen
            ):
                seen += imap.idle_check(timeout=max(0.05, 3.0 - (time.monotonic() - appended)))
        finally:
            imap.idle_done()
        assert (1, b"EXISTS") in seen, seen


def test_restart_keeps_port_and_messages(dovecot: Dovecot) -> None:
    """restart() comes back on the same port with the same messages, UIDs and UIDVALIDITY."""
    dovecot.append("router", "INBOX", mail(1))
    port, before = dovecot.port, dovecot.fetch_all("router", "INBOX")
    validity = dovecot.uidvalidity("router", "INBOX")
    dovecot.restart()
    assert dovecot.port == port
    assert dovecot.fetch_all("router", "INBOX") == before
    assert dovecot.uidvalidity("router", "INBOX") == validity


@pytest.mark.parametrize("folder", ["INBOX", "Routed/Done"])
def test_reset_uidvalidity_changes_it_and_keeps_messages(dovecot: Dovecot, folder: str) -> None:
    """reset_uidvalidity() gives the folder a new UIDVALIDITY and keeps its messages, flags and keywords."""
    dovecot.append("router", folder, mail(1), flags=[b"\\Seen", b"$Routed"])
    dovecot.append("router", folder, mail(2))
    dovecot.append("router", "Other", mail(3))
    before = dovecot.uidvalidity("router", folder)
    other = dovecot.uidvalidity("router", "Other")
    after = dovecot.reset_uidvalidity("router", folder)
    assert after != before
    assert dovecot.uidvalidity("router", folder) == after
    assert dovecot.uidvalidity("router", "Other") == other
    assert sorted(dovecot.fetch_all("router", folder).values()) == [mail(1), mail(2)]
    [routed] = dovecot.uids("router", folder, ["KEYWORD", "$Routed"])
    assert dovecot.uids("router", folder, ["SEEN"]) == [routed]
    assert dovecot.fetch_all("router", folder)[routed] == mail(1)


def test_delete_all_empties_the_folder_only(dovecot: Dovecot) -> None:
    """delete_all() expunges every message of one folder and leaves other folders alone."""
    dovecot.append("router", "INBOX", mail(1))
    dovecot.append("router", "INBOX", mail(2))
    dovecot.append("router", "Keep", mail(3))
    dovecot.delete_all("router", "INBOX")
    assert dovecot.uids("router", "INBOX") == []
    assert list(dovecot.fetch_all("router", "Keep").values()) == [mail(3)]
