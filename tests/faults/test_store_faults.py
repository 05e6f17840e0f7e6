"""FolderStore under link faults: ImapStore to a private Dovecot through a loopback FaultProxy.

The store under test connects through the proxy with a 2 s socket timeout; a second store
connects to Dovecot directly and is the ground truth (message counts, bodies). What the store
promises when the link fails:

- the operation in flight raises StoreError, unless it is a read or an idempotent write, which
  the store retries once on a fresh connection (and then succeeds);
- the next call opens a fresh connection and works; nothing is lost or duplicated;
- a stalled link costs at most about the socket timeout; a waiter whose link dies raises
  StoreError at once (cut) or after the quiet-link probe (stall), never only at its timeout;
- `append` is never retried: when the link breaks after the message was sent, the caller gets
  StoreError and must look before appending again (the message may or may not be there).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.ports import StoreError
from tests.servers.dovecot_server import DovecotServer
from tests.servers.fault_proxy import FaultProxy

pytestmark = pytest.mark.imap

F = "_Autocrypt_SMA"
TIMEOUT = 2.0  # the socket timeout of the store under test
T = TypeVar("T")


# A Dovecot that can go down and come back on the same port with the same mail.
RestartableDovecot = DovecotServer


def message(n: int, tag: str = "m") -> bytes:
    return f"From: <u@example.org>\r\nSubject: {tag}{n}\r\n\r\nmarker-{tag}-{n}\r\n".encode()


def eventually(action: Callable[[], T], *, attempts: int = 100) -> T:
    """Run `action`, retrying StoreError (the caller's reconnect-with-backoff, shortened)."""
    for _ in range(attempts - 1):
        try:
            return action()
        except StoreError:
            time.sleep(0.05)
    return action()


def bodies(store: ImapStore, folder: str = F) -> list[bytes]:
    batch = store.fetch(folder, None, limit=10_000, max_size=1_000_000)
    return [m.raw or b"" for m in batch.messages]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[RestartableDovecot]:
    server = RestartableDovecot().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def credentials(dovecot: RestartableDovecot) -> tuple[str, str]:
    return dovecot.new_account()


@pytest.fixture
def proxy(dovecot: RestartableDovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.host, dovecot.port) as running:
        yield running


@pytest.fixture
def stores() -> Iterator[list[ImapStore]]:
    made: list[ImapStore] = []
    yield made
    for store in made:
        store.close()


@pytest.fixture
def connect(
    proxy: FaultProxy, credentials: tuple[str, str], stores: list[ImapStore]
) -> Callable[..., ImapStore]:
    """A new store through the proxy (timeout 2 s); options as for ImapStore."""

    def make(**options: float) -> ImapStore:
        user, password = credentials
        store = ImapStore(
            proxy.host, proxy.port, user, password, security="none", timeout=TIMEOUT, **options
        )
        stores.append(store)
        return store

    return make


@pytest.fixture
def direct(
    dovecot: RestartableDovecot, credentials: tuple[str, str], stores: list[ImapStore]
) -> ImapStore:
    """A store straight to Dovecot: the ground truth."""
    user, password = credentials
    store = ImapStore(dovecot.host, dovecot.port, user, password, security="none", timeout=15)
    stores.append(store)
    return store


# --- (a) a cut in the middle of a sequence of operations --------------------------------------
@pytest.mark.parametrize("deliver", [False, True], ids=["request-lost", "answer-lost"])
@pytest.mark.parametrize("command", [b"UID SEARCH", b"UID FETCH", b" STATUS ", b" LIST "])
def test_a_cut_read_is_retried_on_a_fresh_connection(
    connect: Callable[..., ImapStore],
    direct: ImapStore,
    proxy: FaultProxy,
    command: bytes,
    deliver: bool,
) -> None:
    store = connect()
    store.create_folder(F)
    for n in range(3):
        store.append(F, message(n))
    before = proxy.connections
    trigger = proxy.cut_on_request(command, deliver=deliver)
    assert bodies(store) == [message(n) for n in range(3)]
    assert store.status(F).messages == 3
    assert store.list_folders(F) == [F]
    assert trigger.fired.is_set()
    assert proxy.connections == before + 1  # exactly one reconnect
    store.append(F, message(3))
    assert bodies(direct) == [message(n) for n in range(4)]


@pytest.mark.parametrize("deliver", [False, True], ids=["request-lost", "answer-lost"])
def test_a_cut_delete_is_retried_and_deletes_exactly_those(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy, deliver: bool
) -> None:
    store = connect()
    store.create_folder(F)
    for n in range(4):
        store.append(F, message(n))
    uids = [m.uid for m in store.fetch(F, None, limit=10, max_size=10_000).messages]
    trigger = proxy.cut_on_request(b"UID EXPUNGE", deliver=deliver)
    store.delete_messages(F, uids[1:3])
    assert trigger.fired.is_set()
    assert bodies(direct) == [message(0), message(3)]


def test_random_cuts_lose_and_duplicate_nothing(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy
) -> None:
    """Appends, fetches and status calls while the link is cut at random moments.

    The caller does what the store asks of it: after an append fails it looks before trying
    again. Every message then ends up on the server exactly once.
    """
    store = connect()
    store.create_folder(F)
    rng = random.Random(20240611)
    stop = threading.Event()
    cuts = 0

    def cutter() -> None:
        nonlocal cuts
        while not stop.wait(rng.uniform(0.01, 0.1)):
            cuts += proxy.cut()

    thread = threading.Thread(target=cutter)
    thread.start()
    count = failed = arrived_anyway = 0
    # On a busy machine appends are slow and fewer cuts land on a live connection: the run goes
    # on (bounded) until enough of them did.
    deadline = time.monotonic() + 120
    try:
        while (count < 100 or cuts < 20) and count < 6000 and time.monotonic() < deadline:
            while True:
                try:
                    store.append(F, message(count))
                    break
                except StoreError:
                    failed += 1
                    if message(count) in eventually(lambda: bodies(store)):
                        arrived_anyway += 1
                        break  # it got there; its answer did not
            count += 1
            if count % 10 == 0:
                eventually(lambda: store.status(F))
                eventually(lambda: store.list_folders(F))
    finally:
        stop.set()
        thread.join(10)
    assert bodies(direct) == [message(n) for n in range(count)]
    assert cuts >= 10, f"only {cuts} cuts in {count} appends: the faults were hardly exercised"
    # Each cut killed a live connection; all but perhaps the last were replaced.
    assert proxy.connections >= cuts
    print(
        f"\n{count} messages, {cuts} cuts, {proxy.connections} connections, {failed} failed"
        f" appends ({arrived_anyway} of them stored all the same)"
    )


# --- (b) a stalled link -----------------------------------------------------------------------
def test_a_stall_costs_about_the_timeout_and_the_store_recovers(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy
) -> None:
    store = connect()
    store.create_folder(F)
    store.append(F, message(0))
    proxy.stall()
    for call in (
        lambda: store.status(F),  # in flight on the open connection
        lambda: store.fetch(F, None, limit=10, max_size=10_000),  # a reconnect: no greeting
        lambda: store.append(F, message(1)),
    ):
        began = time.monotonic()
        with pytest.raises(StoreError):
            call()
        took = time.monotonic() - began
        assert took < TIMEOUT + 2.0, took
    proxy.resume()
    assert store.status(F).messages == 1
    store.append(F, message(1))
    assert bodies(direct) == [message(0), message(1)]


# --- (c) the server restarts ------------------------------------------------------------------
def test_a_server_restart_fails_calls_meanwhile_and_loses_nothing(
    connect: Callable[..., ImapStore], dovecot: RestartableDovecot, proxy: FaultProxy
) -> None:
    store = connect()
    store.create_folder(F)
    for n in range(3):
        store.append(F, message(n))
    dovecot.halt()
    # Here Dovecot's imap process outlives its master (shutdown_clients = yes notwithstanding)
    # and would keep serving the open connection; drop it as a restarted machine would.
    proxy.cut()
    try:
        for call in (
            lambda: store.status(F),
            lambda: store.append(F, message(3)),
            lambda: store.list_folders(F),
        ):
            began = time.monotonic()
            with pytest.raises(StoreError):
                call()
            assert time.monotonic() - began < TIMEOUT + 2.0
    finally:
        dovecot.relaunch()
    assert store.status(F).messages == 3
    store.append(F, message(3))
    assert bodies(store) == [message(n) for n in range(4)]
    assert proxy.refused >= 1  # the proxy found nobody behind it meanwhile


def test_refused_connections_fail_fast_and_accepted_ones_work(
    connect: Callable[..., ImapStore], proxy: FaultProxy
) -> None:
    store = connect()
    store.create_folder(F)
    proxy.refuse()
    proxy.cut()
    began = time.monotonic()
    with pytest.raises(StoreError):
        store.status(F)
    assert time.monotonic() - began < 1.0
    proxy.accept()
    assert store.status(F).messages == 0


# --- (d) a waiter whose link dies -------------------------------------------------------------
class Waiting:
    def __init__(self, waiter: ImapStore, folder: str, timeout: float) -> None:
        self.result: bool | None = None
        self.error: BaseException | None = None
        self.ended = 0.0
        self._thread = threading.Thread(target=self._run, args=(waiter, folder, timeout))

    def _run(self, waiter: ImapStore, folder: str, timeout: float) -> None:
        try:
            self.result = waiter.wait_for_change(folder, timeout)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def start(self) -> Waiting:
        self._thread.start()
        time.sleep(0.5)  # into IDLE
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the waiter is still waiting"


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_a_waiter_whose_link_is_cut_raises_at_once(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy, reset: bool
) -> None:
    direct.create_folder(F)
    waiter = connect()
    waiting = Waiting(waiter, F, 30).start()
    cut_at = time.monotonic()
    assert proxy.cut(reset=reset) == 1
    waiting.join(10)
    assert isinstance(waiting.error, StoreError), waiting.error
    assert waiting.ended - cut_at < 1.0
    # The next wait reconnects and hears news again.
    waiting = Waiting(waiter, F, 20).start()
    direct.append(F, message(0))
    waiting.join(25)
    assert waiting.result is True


def test_a_waiter_on_a_stalled_link_raises_after_the_quiet_probe(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy
) -> None:
    direct.create_folder(F)
    quiet = 1.0
    waiter = connect(idle_quiet=quiet)
    waiting = Waiting(waiter, F, 30).start()
    stalled_at = time.monotonic()
    proxy.stall()
    waiting.join(15)
    assert isinstance(waiting.error, StoreError), waiting.error
    took = waiting.ended - stalled_at
    assert took < quiet + TIMEOUT + 1.5, took
    proxy.resume()
    assert waiter.wait_for_change(F, 0.3) is False  # a fresh connection, all well


# --- (e) an append whose answer never comes ---------------------------------------------------
def test_an_append_cut_after_sending_is_not_retried(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy
) -> None:
    """The server stored the message; the store cannot know and says StoreError. It does not
    append again by itself, so there is exactly one copy; the caller must look before
    appending again (as test_random_cuts_lose_and_duplicate_nothing does)."""
    store = connect()
    store.create_folder(F)
    before = proxy.connections
    trigger = proxy.cut_on_request(b"marker-m-1", deliver=True)
    with pytest.raises(StoreError):
        store.append(F, message(1))
    assert trigger.fired.is_set()
    assert bodies(direct) == [message(1)]  # there, once
    assert proxy.connections == before  # no second attempt was made
    assert bodies(store) == [message(1)]  # the next call works, on a fresh connection
    assert proxy.connections == before + 1


def test_an_append_cut_before_it_arrives_is_not_there(
    connect: Callable[..., ImapStore], direct: ImapStore, proxy: FaultProxy
) -> None:
    store = connect()
    store.create_folder(F)
    trigger = proxy.cut_on_request(b"marker-m-1", deliver=False)
    with pytest.raises(StoreError):
        store.append(F, message(1))
    assert trigger.fired.is_set()
    assert bodies(direct) == []
    store.append(F, message(1))
    assert bodies(direct) == [message(1)]
