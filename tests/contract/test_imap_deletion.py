"""The Gmail deletion path (move to the special-use Trash, UID EXPUNGE exactly those there) on a
real server: Dovecot with a ``special_use = \\Trash`` folder, UIDPLUS and MOVE.

Dovecot cannot play Gmail's labels (that half is tests/unit/test_imap_deletion.py); what runs
here is every IMAP command of the path, COPYUID parsing from real answers, and the FolderStore
contract's deletion tests on a store forced to that strategy, in both namespace flavours.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapStore
from tests.contract.test_folder_store import (  # the contract, rerun on the trash strategy
    test_delete_messages_removes_exactly_those,  # noqa: F401
    test_operations_on_a_missing_folder_raise_folder_missing,  # noqa: F401
    test_recreated_folder_has_new_uidvalidity_and_fetch_resets,  # noqa: F401
)
from tests.servers.dovecot_server import DovecotServer

A = "_Autocrypt_SMA"


class TrashAccount:
    """An account whose stores delete through Trash (as on Gmail)."""

    def __init__(self, server: DovecotServer) -> None:
        self.server = server
        self.username, self.password = server.new_account()
        self._stores: list[ImapStore] = []

    def store(self, deletion: Any = "trash") -> ImapStore:
        store = ImapStore(
            self.server.host,
            self.server.port,
            self.username,
            self.password,
            security="none",
            timeout=15.0,
            deletion=deletion,
        )
        self._stores.append(store)
        return store

    def close(self) -> None:
        for store in self._stores:
            store.close()


@pytest.fixture(scope="module", params=["default", "inbox-prefix"])
def _server(request: pytest.FixtureRequest) -> Iterator[DovecotServer]:
    with DovecotServer(namespace=request.param, trash=True) as server:
        yield server


@pytest.fixture
def account(_server: DovecotServer) -> Iterator[TrashAccount]:
    acc = TrashAccount(_server)
    try:
        yield acc
    finally:
        acc.close()


def _trash(store: ImapStore) -> dict[bytes, tuple[bytes, ...]]:
    """Subject -> flags of everything in the Trash folder."""
    client = store._client
    trash = store.server_name("Trash")
    client.select_folder(trash, readonly=True)
    try:
        uids = client.search(["ALL"])
        items = client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    finally:
        client.unselect_folder()
    return {
        item[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip(): tuple(
            flag
            for flag in item[b"FLAGS"]
            if flag != b"\\Recent"  # \Recent is per session
        )
        for item in items.values()
    }


def _fill(store: ImapStore, count: int) -> list[int]:
    store.create_folder(A)
    uids = [store.append(A, b"Subject: sma %d\r\n\r\nbody\r\n" % n) for n in range(count)]
    assert all(uid is not None for uid in uids)
    return [uid for uid in uids if uid is not None]


def _users_trash(store: ImapStore) -> dict[bytes, tuple[bytes, ...]]:
    trash = store.server_name("Trash")
    store._client.append(trash, b"Subject: user's\r\n\r\nx\r\n")
    store._client.append(trash, b"Subject: user's deleted\r\n\r\nx\r\n", flags=[b"\\Deleted"])
    return _trash(store)


@pytest.mark.parametrize("move", [True, False], ids=["MOVE", "COPY"])
def test_deletion_goes_through_trash_and_touches_nothing_else_there(
    account: TrashAccount, move: bool
) -> None:
    store = account.store()
    assert store.deletion.name == "trash"
    if not move:  # the COPY + \Deleted + UID EXPUNGE path of servers without MOVE
        store._capabilities = store._capabilities - {b"MOVE"}
    uids = _fill(store, 3)
    before = _users_trash(store)
    trash_uidnext = store.status("Trash").uidnext
    store.delete_messages(A, [uids[0], uids[2]])
    assert [m.uid for m in store.fetch(A, None, limit=10, max_size=10_000).messages] == [uids[1]]
    assert store.status("Trash").uidnext == trash_uidnext + 2  # they went through Trash
    assert _trash(store) == before  # and exactly those were expunged there


def test_deleting_a_folder_empties_it_through_trash_first(account: TrashAccount) -> None:
    store = account.store()
    _fill(store, 2)
    before = _users_trash(store)
    trash_uidnext = store.status("Trash").uidnext
    assert store.delete_folder(A) is True
    assert store.status("Trash").uidnext == trash_uidnext + 2
    assert store.list_folders(A) == []
    assert _trash(store) == before
    assert store.delete_folder(A) is False


def test_auto_chooses_expunge_in_place_on_a_server_that_is_not_gmail(
    account: TrashAccount,
) -> None:
    store = account.store(deletion="auto")
    assert store.deletion.name == "expunge"
    uids = _fill(store, 2)
    before = _users_trash(store)
    store.delete_messages(A, uids[:1])
    assert store.status(A).messages == 1
    assert _trash(store) == before
