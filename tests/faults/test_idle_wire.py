"""ImapStore's IDLE loop against a scripted IMAP server that sends what real servers may send.

Each test scripts what the server answers to IDLE: news in the same packet as the continuation
(it then sits in imaplib's read buffer, where a wait on the socket never sees it), news before
the continuation (imapclient's own `idle()` fails on that), a line split across packets, a
FETCH with a literal, a server that says nothing at all, and one that answers IDLE with NO.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.ports import FolderMissing, StoreError

F = "_Autocrypt_SMA"
IdleScript = Callable[[socket.socket, str], None]  # (connection, IDLE tag) -> None
Serve = Callable[[IdleScript], "tuple[ImapStore, ScriptedServer]"]

_COMMAND = re.compile(rb"^(\S+) (?:UID )?(\S+)", re.IGNORECASE)
CAPS = b"IMAP4rev1 IDLE UNSELECT"


class ScriptedServer:
    """A loopback IMAP server just good enough for ImapStore, with a scripted IDLE."""

    def __init__(self, idle: IdleScript) -> None:
        self.idle = idle
        self.commands: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        reader = conn.makefile("rb")
        with contextlib.suppress(OSError), conn, reader:
            conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] scripted\r\n")
            while not self._stop.is_set():
                try:
                    line = reader.readline()
                except TimeoutError:
                    return  # makefile readers cannot go on after a timeout; the store reconnects
                if not line:
                    return
                match = _COMMAND.match(line)
                if match is None:
                    continue
                tag, command = match.group(1).decode(), match.group(2).upper()
                self.commands.append(command)
                if not self._answer(conn, reader, tag, command, line):
                    return

    @staticmethod
    def _lists_f(pattern: str) -> bool:
        wildcards = re.escape(pattern).replace("%", "[^/]*").replace(r"\*", ".*")
        return re.fullmatch(wildcards, F) is not None

    def _answer(
        self, conn: socket.socket, reader: object, tag: str, command: bytes, line: bytes
    ) -> bool:
        ok = f"{tag} OK done\r\n".encode()
        if command == b"LOGIN":
            conn.sendall(f"{tag} OK [CAPABILITY ".encode() + CAPS + b"] logged in\r\n")
        elif command == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY " + CAPS + b"\r\n" + ok)
        elif command == b"LIST":
            if b'""' in line.split(b" ", 3)[3]:
                conn.sendall(b'* LIST (\\Noselect) "/" ""\r\n' + ok)
            elif self._lists_f(line.rstrip().rsplit(b" ", 1)[-1].strip(b'"').decode()):
                conn.sendall(b'* LIST () "/" ' + F.encode() + b"\r\n" + ok)
            else:
                conn.sendall(ok)
        elif command == b"EXAMINE":
            if line.rstrip().rsplit(b" ", 1)[-1].strip(b'"') != F.encode():
                conn.sendall(f"{tag} NO no such mailbox\r\n".encode())
            else:
                conn.sendall(
                    b"* 0 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 1] x\r\n"
                    + f"{tag} OK [READ-ONLY] examined\r\n".encode()
                )
        elif command == b"IDLE":
            self.idle(conn, tag)
        elif command == b"LOGOUT":
            conn.sendall(b"* BYE bye\r\n" + ok)
            return False
        else:  # NOOP, UNSELECT, STATUS...
            conn.sendall(ok)
        return True


def done_then_ok(conn: socket.socket, tag: str) -> None:
    """Wait for DONE and complete the IDLE command."""
    reader = conn.makefile("rb")
    conn.settimeout(30)
    if reader.readline().strip().upper() == b"DONE":
        conn.sendall(f"{tag} OK idle done\r\n".encode())


@pytest.fixture
def serve() -> Iterator[Callable[[IdleScript], tuple[ImapStore, ScriptedServer]]]:
    servers: list[ScriptedServer] = []
    stores: list[ImapStore] = []

    def make(idle: IdleScript) -> tuple[ImapStore, ScriptedServer]:
        server = ScriptedServer(idle)
        servers.append(server)
        store = ImapStore(server.host, server.port, "u", "p", security="none", timeout=2.0)
        stores.append(store)
        return store, server

    yield make
    for store in stores:
        store.close()
    for server in servers:
        server.close()


def timed(store: ImapStore, timeout: float = 10.0) -> tuple[bool, float]:
    began = time.monotonic()
    result = store.wait_for_change(F, timeout)
    return result, time.monotonic() - began


def test_news_in_the_continuation_packet_is_seen(serve: Serve) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"+ idling\r\n* 1 EXISTS\r\n* 1 RECENT\r\n")
        done_then_ok(conn, tag)

    store, _server = serve(idle)
    changed, took = timed(store)
    assert changed is True
    assert took < 1.0


def test_news_before_the_continuation_is_seen(serve: Serve) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"* 1 EXISTS\r\n")
        time.sleep(0.05)
        conn.sendall(b"+ idling\r\n")
        done_then_ok(conn, tag)

    store, _server = serve(idle)
    changed, took = timed(store)
    assert changed is True
    assert took < 1.0


def test_a_line_split_across_packets_is_read_whole(
    serve: Serve,
) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"+ idling\r\n")
        time.sleep(0.2)
        conn.sendall(b"* OK Still h")
        time.sleep(0.2)
        conn.sendall(b"ere\r\n* 3 EXP")
        time.sleep(0.2)
        conn.sendall(b"UNGE\r\n")
        done_then_ok(conn, tag)

    store, _server = serve(idle)
    changed, took = timed(store)
    assert changed is True
    assert 0.5 < took < 2.0


def test_a_fetch_with_a_literal_keeps_the_connection_in_step(
    serve: Serve,
) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"+ idling\r\n")
        time.sleep(0.1)
        conn.sendall(b"* 1 FETCH (X-ODD {12}\r\n* 9 EXISTS\r\n)\r\n")
        done_then_ok(conn, tag)

    store, server = serve(idle)
    assert timed(store)[0] is True
    assert timed(store)[0] is True  # the literal was read: DONE's answer was found again
    assert store.list_folders(F) == [F]
    assert server.commands.count(b"LOGIN") == 1  # one connection throughout


def test_a_silent_server_costs_the_timeout_only(serve: Serve) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"+ idling\r\n")
        done_then_ok(conn, tag)

    store, server = serve(idle)
    changed, took = timed(store, 1.0)
    assert changed is False
    assert 0.95 < took < 1.8
    assert store.list_folders(F) == [F]  # nothing selected, the connection is fine
    assert server.commands[-3:] == [b"IDLE", b"UNSELECT", b"LIST"]


def test_a_server_that_never_answers_done_gives_store_error(
    serve: Serve,
) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(b"+ idling\r\n")
        time.sleep(5)  # neither news nor an answer to DONE

    store, _server = serve(idle)
    began = time.monotonic()
    with pytest.raises(StoreError):
        store.wait_for_change(F, 0.5)
    assert time.monotonic() - began < 0.5 + 2.0 + 1.0  # the wait, then the socket timeout


def test_idle_refused_gives_store_error_and_the_store_goes_on(
    serve: Serve,
) -> None:
    def idle(conn: socket.socket, tag: str) -> None:
        conn.sendall(f"{tag} NO not now\r\n".encode())

    store, _server = serve(idle)
    with pytest.raises(StoreError, match="IDLE refused"):
        store.wait_for_change(F, 5.0)
    assert store.list_folders(F) == [F]
    with pytest.raises(FolderMissing):
        store.wait_for_change("_Autocrypt_SMA_missing", 1.0)
