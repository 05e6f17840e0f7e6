"""The ChangeWaiter contract (push): a waiter on one connection hears another connection's change.

Runs on every FolderStore that is also a ChangeWaiter: memory, pymap, Dovecot (two namespaces).
`account.store()` is a new connection for IMAP (the waiter's own, as the port requires) and the
shared object for memory. A few ImapStore specifics (STATUS polling without IDLE, `close()`
from another thread) run on the IMAP servers only.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.ports import ChangeWaiter, FolderMissing, FolderStore, StoreError
from tests.contract.conftest import Account
from tests.servers.accounts import KINDS
from tests.servers.dovecot_server import DovecotServer

A = "_Autocrypt_SMA"
B = "_Autocrypt_SMA_0123456789abcdef"
PUSH_SECONDS = 2.0  # the waiter must hear a change within this


def message(n: int) -> bytes:
    return f"From: <u@example.org>\r\nSubject: wait {n}\r\n\r\nbody {n}\r\n".encode()


def waiter_of(store: FolderStore) -> ChangeWaiter:
    assert hasattr(store, "wait_for_change"), f"{type(store).__name__} is no ChangeWaiter"
    return cast(ChangeWaiter, store)


class Waiting:
    """`wait_for_change` run in a thread, so that the test can change the folder meanwhile."""

    def __init__(self, waiter: ChangeWaiter, folder: str, timeout: float) -> None:
        self.result: bool | None = None
        self.error: BaseException | None = None
        self.began = 0.0
        self.ended = 0.0
        self._thread = threading.Thread(target=self._run, args=(waiter, folder, timeout))
        self._started = threading.Event()

    def _run(self, waiter: ChangeWaiter, folder: str, timeout: float) -> None:
        self.began = time.monotonic()
        self._started.set()
        try:
            self.result = waiter.wait_for_change(folder, timeout)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def start(self, settle: float = 0.3) -> Waiting:
        """Start, then give the waiter time to get into its wait (EXAMINE + IDLE)."""
        self._thread.start()
        self._started.wait(5)
        time.sleep(settle)
        return self

    def join(self, timeout: float) -> bool | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the waiter is still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def changed_within(
    waiter: ChangeWaiter, folder: str, change: Callable[[], object], *, timeout: float = 20.0
) -> float:
    """Start a wait, make the change, and return how long the waiter took to answer True."""
    waiting = Waiting(waiter, folder, timeout).start()
    changed_at = time.monotonic()
    change()
    assert waiting.join(timeout + 5) is True
    return waiting.ended - changed_at


@pytest.fixture
def two(account: Account) -> tuple[FolderStore, ChangeWaiter]:
    """(A: the connection that changes things, B: the waiting connection), folder A created."""
    writer = account.store()
    writer.create_folder(A)
    return writer, waiter_of(account.store())


def test_append_on_another_connection_wakes_the_waiter(
    two: tuple[FolderStore, ChangeWaiter],
) -> None:
    writer, waiter = two
    took = changed_within(waiter, A, lambda: writer.append(A, message(1)))
    assert took < PUSH_SECONDS


def test_no_change_returns_false_after_the_timeout(two: tuple[FolderStore, ChangeWaiter]) -> None:
    _writer, waiter = two
    began = time.monotonic()
    assert waiter.wait_for_change(A, 0.5) is False
    took = time.monotonic() - began
    assert 0.45 <= took < 0.5 + 1.5


def test_a_change_in_another_folder_is_not_news(account: Account) -> None:
    writer = account.store()
    writer.create_folder(A)
    writer.create_folder(B)
    waiting = Waiting(waiter_of(account.store()), A, 1.5).start()
    writer.append(B, message(1))
    assert waiting.join(10) is False


def test_missing_folder_raises_folder_missing(account: Account) -> None:
    waiter = waiter_of(account.store())
    began = time.monotonic()
    with pytest.raises(FolderMissing):
        waiter.wait_for_change(A, 2.5)
    assert time.monotonic() - began < 2.0  # at once, not after the timeout


def test_a_change_before_the_wait_counts_with_since(
    two: tuple[FolderStore, ChangeWaiter],
) -> None:
    writer, waiter = two
    seen = writer.status(A)
    assert waiter.wait_for_change(A, 0.3, since=seen) is False  # nothing new since
    writer.append(A, message(1))  # lands before the wait begins
    began = time.monotonic()
    assert waiter.wait_for_change(A, 10.0, since=seen) is True
    assert time.monotonic() - began < 1.0
    assert waiter.wait_for_change(A, 0.0, since=seen) is True
    assert waiter.wait_for_change(A, 0.3, since=writer.status(A)) is False


def test_waits_repeatedly(two: tuple[FolderStore, ChangeWaiter]) -> None:
    writer, waiter = two
    for n in range(3):
        took = changed_within(waiter, A, lambda n=n: writer.append(A, message(n)))
        assert took < PUSH_SECONDS
        assert waiter.wait_for_change(A, 0.2) is False  # the news was consumed


def test_deleting_messages_wakes_the_waiter(
    two: tuple[FolderStore, ChangeWaiter], request: pytest.FixtureRequest
) -> None:
    writer, waiter = two
    writer.append(A, message(1))
    uids = [m.uid for m in writer.fetch(A, None, limit=10, max_size=10_000).messages]
    if request.node.callspec.params.get("account") == "pymap":
        # Checked with a raw imapclient session: pymap 0.36 pushes new messages during IDLE but
        # mostly not expunges. What the sync relies on still holds: a wait given the status
        # before the deletion as its baseline reports the change at once.
        before = writer.status(A)
        writer.delete_messages(A, uids)
        assert waiter.wait_for_change(A, 5.0, since=before) is True
        return
    took = changed_within(waiter, A, lambda: writer.delete_messages(A, uids), timeout=4.0)
    assert took < PUSH_SECONDS


def test_the_waiting_connection_stays_usable(two: tuple[FolderStore, ChangeWaiter]) -> None:
    writer, waiter = two
    changed_within(waiter, A, lambda: writer.append(A, message(1)))
    assert waiter.wait_for_change(A, 0.2) is False
    store = cast(FolderStore, waiter)
    # Nothing stays selected: every operation works, deleting the folder included.
    assert store.status(A).messages == 1
    assert [m.raw for m in store.fetch(A, None, limit=10, max_size=10_000).messages] == [message(1)]
    store.append(A, message(2))
    assert store.list_folders(A) == [A]
    assert store.delete_folder(A) is True


# --- ImapStore specifics ----------------------------------------------------------------------
imap_only = pytest.mark.parametrize("account", KINDS, indirect=True)


def imap_store(account: Account, **options: Any) -> ImapStore:
    store = account.store()
    assert isinstance(store, ImapStore)
    for name, value in options.items():
        setattr(store, name, value)
    return store


@imap_only
def test_without_idle_it_polls_status(account: Account) -> None:
    writer = account.store()
    writer.create_folder(A)
    waiter = imap_store(account, use_idle=False, poll_interval=0.2)
    assert waiter.wait_for_change(A, 0.5) is False
    took = changed_within(waiter, A, lambda: writer.append(A, message(1)))
    assert took < 1.0
    with pytest.raises(FolderMissing):
        waiter.wait_for_change(B, 0.5)
    seen = writer.status(A)
    writer.append(A, message(2))
    assert waiter.wait_for_change(A, 5.0, since=seen) is True
    assert waiter.wait_for_change(A, 0.3, since=writer.status(A)) is False
    waiting = Waiting(waiter, A, 10).start()
    writer.delete_folder(A)
    assert waiting.join(5) is True  # gone is a change too


@imap_only
def test_close_from_another_thread_ends_the_wait(account: Account) -> None:
    account.store().create_folder(A)
    waiter = imap_store(account)
    waiting = Waiting(waiter, A, 30).start()
    began = time.monotonic()
    waiter.close()
    with pytest.raises(StoreError):
        waiting.join(5)
    assert time.monotonic() - began < 3.0
    with pytest.raises(StoreError):
        waiter.wait_for_change(A, 1.0)


@imap_only
def test_short_renewals_and_probes_keep_the_wait_going(account: Account) -> None:
    """DONE/IDLE every 0.3 s and a NOOP probe every 0.2 s lose no news and end in time."""
    writer = account.store()
    writer.create_folder(A)
    waiter = imap_store(account, idle_renew=0.3, idle_quiet=0.2)
    began = time.monotonic()
    assert waiter.wait_for_change(A, 1.5) is False
    assert 1.45 <= time.monotonic() - began < 3.0
    waiting = Waiting(waiter, A, 20).start(settle=1.0)  # several renewals first
    changed_at = time.monotonic()
    writer.append(A, message(1))
    assert waiting.join(25) is True
    assert waiting.ended - changed_at < PUSH_SECONDS


@pytest.mark.parametrize("account", ["dovecot", "dovecot-inbox-prefix"], indirect=True)
def test_deleting_the_watched_folder_wakes_the_waiter(account: Account) -> None:
    """Dovecot ends a session whose selected folder is deleted (BYE): that is news too, and the
    next call opens a fresh connection."""
    writer = account.store()
    writer.create_folder(A)
    waiter = imap_store(account)
    took = changed_within(waiter, A, lambda: writer.delete_folder(A))
    assert took < PUSH_SECONDS
    with pytest.raises(FolderMissing):
        waiter.wait_for_change(A, 1.0)
    writer.create_folder(A)
    took = changed_within(waiter, A, lambda: writer.append(A, message(1)))
    assert took < PUSH_SECONDS


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[DovecotServer]:
    with DovecotServer(tls=True) as server:
        yield server


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_waiting_over_tls(tls_dovecot: DovecotServer, security: str) -> None:
    """The IDLE loop reads a TLS socket without blocking (SSLWantReadError, buffered records)."""
    server = tls_dovecot
    user, password = server.new_account()
    trusted = ssl.create_default_context(cafile=str(server.cert_path))
    port = server.tls_port if security == "tls" else server.port

    def connect(**options: Any) -> ImapStore:
        return ImapStore(
            server.host,
            port,
            user,
            password,
            security=security,  # type: ignore[arg-type]
            ssl_context=trusted,
            timeout=5.0,
            **options,
        )

    with connect() as writer, connect(idle_renew=0.3, idle_quiet=0.2) as waiter:
        writer.create_folder(A)
        assert waiter.wait_for_change(A, 0.8) is False
        for n in range(3):
            took = changed_within(waiter, A, lambda n=n: writer.append(A, message(n)))
            assert took < PUSH_SECONDS
        assert waiter.status(A).messages == 3
        waiting = Waiting(waiter, A, 30).start()
        waiter.close()
        with pytest.raises(StoreError):
            waiting.join(5)
