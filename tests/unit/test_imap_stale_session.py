"""ImapStore: "this folder is missing" is never trusted past the session that said it.

Regression (tests/adversary, seeds 1, 3, 6; more often on a loaded machine): after the adversary
deleted and renamed folders concurrently, Dovecot's list index was corrupted, and the laptop's
long-lived session went on answering that the tablet's inbox did not exist after the tablet had
recreated it. The laptop kept its pairing message in the outbox ("the inbox of ... is missing;
trying again") until the pairing expired, and the tablet never got the accept. A fresh session
saw the folder at once. Here each IMAP session is a scripted fake whose view is fixed when it is
opened, which is what a stale session looks like from the client.
"""

from __future__ import annotations

import imaplib
import time
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.errors import StoreError
from native_host.ports import FolderMissing

F = "_Autocrypt_SMA_0123456789abcdef"


class Session:
    """One IMAP session that believes `F` exists, or not, for its whole life."""

    def __init__(self, sees_folder: bool) -> None:
        self.sees_folder = sees_folder
        self.appended: list[bytes] = []

    def append(self, folder: str, data: bytes, flags: Any = ()) -> bytes:
        if not self.sees_folder:
            raise imaplib.IMAP4.error("append failed: [TRYCREATE] Mailbox doesn't exist")
        self.appended.append(data)
        return b"[APPENDUID 7 %d] Append completed." % len(self.appended)

    def list_folders(
        self, directory: str, pattern: str
    ) -> list[tuple[tuple[bytes, ...], bytes, str]]:
        return [((b"\\HasNoChildren",), b"/", F)] if self.sees_folder and pattern == F else []

    def noop(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def logout(self) -> None:
        pass


class ScriptedStore(ImapStore):
    """An ImapStore whose every new connection is the next scripted session."""

    def __init__(self, views: list[bool]) -> None:
        self.views = views
        self.sessions: list[Session] = []
        super().__init__("127.0.0.1", 143, "user", "password", security="none")

    def _connect(self) -> Any:
        session = Session(self.views.pop(0))
        self.sessions.append(session)
        self._client = session
        self._selected = None
        self._last_used = time.monotonic()
        self._capabilities = frozenset({b"UIDPLUS"})
        self.namespace_prefix, self.delimiter = "", "/"
        return session


def test_a_folder_found_missing_is_looked_up_on_a_fresh_session_next_time() -> None:
    store = ScriptedStore([False, True])  # the first session is stale, the next one is not
    with pytest.raises(FolderMissing):
        store.append(F, b"Subject: accept\r\n\r\nbody\r\n")
    assert store.append(F, b"Subject: accept\r\n\r\nbody\r\n") == 1
    assert len(store.sessions) == 2
    assert store.sessions[1].appended


def test_a_folder_that_is_there_keeps_the_session() -> None:
    store = ScriptedStore([True])
    for n in range(3):
        assert store.append(F, b"Subject: m\r\n\r\nbody\r\n") == n + 1
    assert len(store.sessions) == 1  # no reconnect when nothing was missing


class Recreated(Session):
    """A session whose folder was deleted and created again under it: Dovecot refuses the
    next `failures` APPENDs with "Mailbox was deleted under us"."""

    def __init__(self, failures: int) -> None:
        super().__init__(sees_folder=True)
        self.failures = failures

    def append(self, folder: str, data: bytes, flags: Any = ()) -> bytes:
        if self.failures:
            self.failures -= 1
            raise imaplib.IMAP4.error("append failed: Mailbox was deleted under us")
        return super().append(folder, data, flags)


def test_an_append_to_a_folder_recreated_under_the_session_is_tried_again() -> None:
    """The APPEND failed, so nothing was appended: the same command again opens the new folder
    (tests/adversary seed 8: the laptop's removal right after the attack renamed the
    announcement folder away and back). Two such answers in a row are still absorbed on the
    session."""
    store = ScriptedStore([True])
    store.sessions[0] = store._client = Recreated(failures=2)  # type: ignore[assignment]
    assert store.append(F, b"Subject: m\r\n\r\nbody\r\n") == 1
    assert store.sessions[0].appended == [b"Subject: m\r\n\r\nbody\r\n"]


class ScriptedRecreated(ScriptedStore):
    """Every new session is a Recreated one failing the next `failures[i]` APPENDs."""

    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        super().__init__([True] * len(failures))

    def _connect(self) -> Any:
        super()._connect()
        session = Recreated(self.failures.pop(0))
        self.sessions[-1] = self._client = session
        return session


def test_a_session_that_keeps_saying_deleted_under_us_is_replaced_once() -> None:
    """A session that still says "deleted under us" after three tries, while LIST shows the
    folder, is stale (tests/service/test_inbox_recreated on Dovecot: the phone's APPEND to the
    laptop's recreated inbox): the APPEND runs once more on a new session. If that one says the
    same, the caller hears it."""
    store = ScriptedRecreated([3, 0])
    assert store.append(F, b"Subject: m\r\n\r\nbody\r\n") == 1
    assert [len(s.appended) for s in store.sessions] == [0, 1]
    store = ScriptedRecreated([3, 3])
    with pytest.raises(StoreError, match="deleted under us"):
        store.append(F, b"Subject: m\r\n\r\nbody\r\n")
    assert len(store.sessions) == 2  # one new session, not a loop
