"""IMAP-specific behaviour of ImapStore, beyond the shared FolderStore contract.

Runs against servers the suite starts itself: pymap, Dovecot with the default namespace and
Dovecot with the Courier-style `INBOX.` namespace. A raw imapclient connection plays the server's
(or another mail client's) view.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapLoginError, ImapStore
from native_host.ports import FolderMissing, StoreError, Watermark
from tests.servers.accounts import KINDS, ImapAccount, ImapAccountFactory
from tests.servers.common import free_port
from tests.servers.dovecot_server import DovecotServer

pytestmark = pytest.mark.imap

A = "_Autocrypt_SMA"
B = "_Autocrypt_SMA_0123456789abcdef"
PREFIX = {"pymap": "", "dovecot": "", "dovecot-inbox-prefix": "INBOX."}
DELIMITER = {"pymap": "/", "dovecot": "/", "dovecot-inbox-prefix": "."}


def message(n: int, body: bytes = b"") -> bytes:
    head = f"From: <u@example.org>\r\nSubject: test {n}\r\n\r\n".encode()
    return head + body + f"body {n}\r\n".encode()


@pytest.fixture(scope="module")
def factories() -> Iterator[dict[str, ImapAccountFactory]]:
    started: dict[str, ImapAccountFactory] = {}
    yield started
    for factory in started.values():
        factory.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def account(kind: str, factories: dict[str, ImapAccountFactory]) -> Iterator[ImapAccount]:
    if kind not in factories:
        factories[kind] = ImapAccountFactory(kind)
    acc = factories[kind].new_account()
    try:
        yield acc
    finally:
        acc.close()


@pytest.fixture
def raw(account: ImapAccount) -> Iterator[Any]:
    from imapclient import IMAPClient

    client = IMAPClient(account.host, account.port, ssl=False, timeout=10)
    client.login(account.username, account.password)
    try:
        yield client
    finally:
        client.logout()


def test_folders_live_in_the_personal_namespace(kind: str, account: ImapAccount, raw: Any) -> None:
    store = account.store()
    assert store.namespace_prefix == PREFIX[kind]
    assert store.delimiter == DELIMITER[kind]
    assert store.create_folder(A) is True
    assert store.server_name(A) == PREFIX[kind] + A
    assert store.server_name("INBOX") == "INBOX"
    assert [name for _f, _d, name in raw.list_folders("", PREFIX[kind] + A)] == [PREFIX[kind] + A]
    assert store.list_folders(A) == [A]
    assert "INBOX" in store.list_folders("")


def test_list_is_first_level_only(kind: str, account: ImapAccount, raw: Any) -> None:
    store = account.store()
    store.create_folder(A)
    raw.create_folder(PREFIX[kind] + A + DELIMITER[kind] + "child")
    raw.create_folder(PREFIX[kind] + "Unrelated")
    assert store.list_folders(A) == [A]
    assert store.list_folders("_Auto") == [A]


@pytest.mark.parametrize("bad", ["{d}x", "x{d}", "_Autocrypt_SMA%", "*", "", "a\r\nb", "a\x00"])
def test_names_with_the_delimiter_or_wildcards_are_refused(
    kind: str, account: ImapAccount, bad: str
) -> None:
    store = account.store()
    name = bad.format(d=DELIMITER[kind])
    with pytest.raises(ValueError, match="folder name"):
        store.create_folder(name)
    with pytest.raises(ValueError, match="folder name"):
        store.fetch(name, None, limit=1, max_size=10)
    if name:
        with pytest.raises(ValueError, match="folder name"):
            store.list_folders(name)


def test_created_folders_are_unsubscribed_even_after_a_stale_subscription(
    kind: str, account: ImapAccount, raw: Any
) -> None:
    store = account.store()
    store.create_folder(A)
    assert raw.list_sub_folders("", PREFIX[kind] + A) == []
    store.set_subscribed(A, True)
    store.set_subscribed(A, True)  # idempotent
    assert [n for _f, _d, n in raw.list_sub_folders("", PREFIX[kind] + A)] == [PREFIX[kind] + A]
    raw.delete_folder(PREFIX[kind] + A)  # another client deletes it, keeping the subscription
    assert store.create_folder(A) is True
    assert store.is_subscribed(A) is False
    store.set_subscribed(A, False)  # idempotent
    assert store.is_subscribed(A) is False


def test_eight_bit_messages_round_trip_byte_identical(account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    body = "Grüße, ½ € \U0001f510\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    raw_message = b"Subject: =?utf-8?q?x?=\r\nX-8bit: \xc3\xa4\r\n\r\n" + body
    uid = store.append(A, raw_message)
    batch = store.fetch(A, None, limit=10, max_size=100_000)
    assert [(m.uid, m.size, m.raw) for m in batch.messages] == [
        (uid, len(raw_message), raw_message)
    ]


def test_appenduid_is_the_fetched_uid(account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    uids = [store.append(A, message(n)) for n in range(3)]
    assert None not in uids  # all three servers have UIDPLUS
    assert [m.uid for m in store.fetch(A, None, limit=10, max_size=10_000).messages] == uids


def test_a_watermark_at_or_above_the_highest_uid_fetches_nothing(account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    store.append(A, message(0))
    first = store.fetch(A, None, limit=10, max_size=10_000)
    top = first.messages[-1].uid
    for last in (top, top + 1, top + 1000):
        batch = store.fetch(A, Watermark(first.uidvalidity, last), limit=10, max_size=10_000)
        assert batch.messages == ()
        assert batch.more is False
        assert batch.reset is False


def test_fetch_pages_and_reports_oversized(account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    sizes = [10, 3000, 10, 3000, 10]
    for n, size in enumerate(sizes):
        store.append(A, message(n, b"x" * size))
    first = store.fetch(A, None, limit=3, max_size=1000)
    assert first.more is True
    assert [m.raw is None for m in first.messages] == [False, True, False]
    assert first.messages[1].size == len(message(1, b"x" * 3000))
    second = store.fetch(A, first.after(None), limit=3, max_size=1000)
    assert second.more is False
    assert [m.raw for m in second.messages] == [None, message(4, b"x" * 10)]


def test_delete_messages_leaves_other_pending_deletions_alone(
    kind: str, account: ImapAccount, raw: Any
) -> None:
    store = account.store()
    store.create_folder(A)
    uids = [store.append(A, message(n)) for n in range(3)]
    raw.select_folder(PREFIX[kind] + A)
    raw.add_flags([uids[0]], [b"\\Deleted"])  # another client's deletion, not yet expunged
    store.delete_messages(A, [uids[1], 999_999])  # an unknown UID is no error
    left = store.fetch(A, None, limit=10, max_size=10_000).messages
    assert [m.uid for m in left] == [uids[0], uids[2]]
    store.delete_messages(A, [])
    with pytest.raises(FolderMissing):
        store.delete_messages(B, [])


def test_status_reports_highestmodseq_only_with_condstore(kind: str, account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    before = store.status(A)
    store.append(A, message(0))
    after = store.status(A)
    if kind == "pymap":
        assert before.highestmodseq is None
        assert after.highestmodseq is None
    else:
        assert before.highestmodseq is not None
        assert after.highestmodseq is not None
        assert after.highestmodseq > before.highestmodseq
    assert (after.uidvalidity, after.messages) == (before.uidvalidity, before.messages + 1)


def test_a_folder_deleted_by_another_device_is_missing_not_an_error(account: ImapAccount) -> None:
    reader, other = account.store(), account.store()
    reader.create_folder(A)
    reader.append(A, message(0))
    mark = reader.fetch(A, None, limit=10, max_size=10_000).after(None)
    assert other.delete_folder(A) is True
    with pytest.raises(FolderMissing):
        reader.status(A)
    with pytest.raises(FolderMissing):
        reader.fetch(A, mark, limit=10, max_size=10_000)
    with pytest.raises(FolderMissing):
        reader.set_subscribed(A, True)
    assert reader.list_folders(A) == []
    other.create_folder(A)
    batch = reader.fetch(A, mark, limit=10, max_size=10_000)
    assert batch.reset is True
    assert batch.messages == ()


def test_a_dropped_connection_is_reopened(account: ImapAccount) -> None:
    store = account.store()
    store.create_folder(A)
    store._client.socket().shutdown(socket.SHUT_RDWR)  # the link dies under the store
    assert store.list_folders(A) == [A]  # a read is retried once on a new connection
    store._client.socket().shutdown(socket.SHUT_RDWR)
    with pytest.raises(StoreError, match="connection lost") as caught:
        store.append(A, message(0))  # not retried: the message may or may not be stored
    assert not isinstance(caught.value, FolderMissing)
    assert store.append(A, message(1)) is not None  # the next call reconnects
    store._client.socket().shutdown(socket.SHUT_RDWR)
    store._last_used -= 3600  # as after a long idle: a NOOP probes the link first
    assert store.append(A, message(2)) is not None
    assert [m.raw for m in store.fetch(A, None, limit=10, max_size=10_000).messages] == [
        message(1),
        message(2),
    ]


def test_wrong_password_is_a_login_error_without_the_password(account: ImapAccount) -> None:
    wrong = "Sekr3t-" + account.password
    with pytest.raises(ImapLoginError) as caught:
        ImapStore(account.host, account.port, account.username, wrong, security="none")
    assert wrong not in str(caught.value)
    assert account.username in str(caught.value)


def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        ImapStore("127.0.0.1", free_port(), "u", "p", security="none", timeout=5)


def test_a_closed_store_refuses_work(account: ImapAccount) -> None:
    store = account.store()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_folders(A)


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[DovecotServer]:
    with DovecotServer(tls=True) as server:
        yield server


def test_tls_and_starttls_verify_the_certificate(tls_dovecot: DovecotServer) -> None:
    server = tls_dovecot
    user, password = server.new_account()
    trusted = ssl.create_default_context(cafile=str(server.cert_path))
    for port, security in ((server.tls_port, "tls"), (server.port, "starttls")):
        with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
            ImapStore(server.host, port, user, password, security=security)  # type: ignore[arg-type]
        with ImapStore(
            server.host,
            port,
            user,
            password,
            security=security,  # type: ignore[arg-type]
            ssl_context=trusted,
        ) as store:
            assert store.create_folder(f"{A}_{security}") is True
        with ImapStore(
            server.host,
            port,
            user,
            password,
            security=security,  # type: ignore[arg-type]
            verify_tls=False,
        ) as store:
            assert f"{A}_{security}" in store.list_folders(A)
