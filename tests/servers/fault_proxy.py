"""A loopback TCP proxy that tests control, to make a link to a test server fail on purpose.

    with FaultProxy(server.host, server.port) as proxy:
        store = ImapStore(proxy.host, proxy.port, user, password, security="none", timeout=2.0)
        proxy.cut()        # close every current connection abruptly (RST), both sides
        proxy.stall()      # stop forwarding in both directions; nothing is closed
        proxy.resume()     # forward again (what was held back is delivered)
        proxy.refuse()     # close new connections at once (nothing is forwarded)
        proxy.accept()     # accept and forward new connections again
        trigger = proxy.cut_on_request(b"UID FETCH", deliver=False)  # cut when a client sends it

Counters: `connections` (forwarded so far), `refused` (closed at once: refusing, too many, or
the target did not answer), and `active`. Only loopback addresses are ever listened on or
connected to. Bounded: at most `max_connections` at a time, one thread per connection, every
socket with a timeout, `close()` joins every thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import struct
import threading
from types import TracebackType

from .common import LOOPBACK

_CHUNK = 65536
_TICK = 0.02  # how often a forwarding thread looks at the controls
_JOIN_SECONDS = 5.0


def _require_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the fault proxy uses loopback IP addresses only, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"the fault proxy uses loopback addresses only, not {host!r}")


def _close(sock: socket.socket, *, reset: bool) -> None:
    with contextlib.suppress(OSError):
        if reset:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class Trigger:
    """A one-shot fault armed by `FaultProxy.cut_on_request`; `fired` is set once it acted."""

    def __init__(self, marker: bytes, deliver: bool) -> None:
        if not marker:
            raise ValueError("empty marker")
        self.marker = bytes(marker)
        self.deliver = deliver
        self.fired = threading.Event()


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.kill: bool | None = None  # None: running; else close, with RST when True
        self.tail = b""  # the end of what the client sent, for markers split across reads
        self.swallow: Trigger | None = None  # cut at the server's next bytes (after delivery)
        self.thread: threading.Thread | None = None


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        socket_timeout: float = 10.0,
    ) -> None:
        _require_loopback(target_host)
        self.host = LOOPBACK
        self.port = 0
        self._target = (target_host, int(target_port))
        self.max_connections = max_connections
        self.socket_timeout = socket_timeout
        self.connections = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._triggers: list[Trigger] = []
        self._refusing = False
        self._running = threading.Event()  # forwarding (cleared by stall)
        self._running.set()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        listener.settimeout(_TICK * 5)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._acceptor.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._running.set()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_SECONDS)
            self._acceptor = None
        if self._listener is not None:
            _close(self._listener, reset=False)
            self._listener = None
        self._stop_links(reset=False)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- controls -----------------------------------------------------------------------------
    @property
    def target(self) -> tuple[str, int]:
        return self._target

    def retarget(self, host: str, port: int) -> None:
        """Send new connections elsewhere (loopback only); current ones are left alone."""
        _require_loopback(host)
        self._target = (host, int(port))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._links)

    def cut(self, *, reset: bool = True) -> int:
        """Close every current connection on both sides (RST unless `reset=False`: FIN).

        Returns how many were cut; they are closed when this returns.
        """
        return self._stop_links(reset=reset)

    def stall(self) -> None:
        """Stop forwarding bytes in both directions; connections stay open (and new ones are
        accepted, but not even the greeting gets through)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def refuse(self) -> None:
        """Close new connections as soon as they are accepted (with RST)."""
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    def cut_on_request(self, marker: bytes, *, deliver: bool) -> Trigger:
        """Arm a one-shot cut for the first connection whose client sends `marker`.

        `deliver=False`: cut at once; the bytes with the marker never reach the server.
        `deliver=True`: forward them, then cut when the server's next bytes arrive (which are
        dropped): the server acted on the request but the client never hears its answer.
        """
        trigger = Trigger(marker, deliver)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    # --- internals ----------------------------------------------------------------------------
    def _stop_links(self, *, reset: bool) -> int:
        with self._lock:
            links = list(self._links)
            for link in links:
                if link.kill is None:
                    link.kill = reset
        for link in links:
            if link.thread is not None:
                link.thread.join(_JOIN_SECONDS)
        return len(links)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closed.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            with self._lock:
                full = len(self._links) >= self.max_connections
            if self._refusing or full or self._closed.is_set():
                self.refused += 1
                _close(client, reset=True)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=self.socket_timeout)
            except OSError:
                self.refused += 1
                _close(client, reset=True)  # as the server would look: nobody there
                continue
            for sock in (client, upstream):
                sock.settimeout(self.socket_timeout)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            link.thread = threading.Thread(
                target=self._forward, args=(link,), name="fault-proxy-link", daemon=True
            )
            with self._lock:
                self._links.add(link)
                self.connections += 1
            link.thread.start()

    def _forward(self, link: _Link) -> None:
        reset = False
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(link.client, selectors.EVENT_READ)
                selector.register(link.upstream, selectors.EVENT_READ)
                while link.kill is None:
                    if not self._running.is_set():
                        self._running.wait(_TICK)
                        continue
                    for key, _events in selector.select(_TICK):
                        if link.kill is not None or not self._running.is_set():
                            break
                        outcome = self._move(link, key.fileobj is link.client)
                        if outcome is not None:
                            reset = outcome
                            return
                reset = bool(link.kill)
        finally:
            _close(link.client, reset=reset)
            _close(link.upstream, reset=reset)
            with self._lock:
                self._links.discard(link)

    def _move(self, link: _Link, from_client: bool) -> bool | None:
        """Forward one read; None to go on, else stop (True: with RST)."""
        source, sink = (link.client, link.upstream) if from_client else (link.upstream, link.client)
        try:
            data = source.recv(_CHUNK)
        except OSError:
            return True
        if not data:
            return False  # one side closed: close the other too (IMAP needs no half-close)
        if from_client:
            trigger = self._matching_trigger(link, data)
            if trigger is not None and not trigger.deliver:
                trigger.fired.set()
                return True
            if trigger is not None:
                link.swallow = trigger
        elif link.swallow is not None:
            link.swallow.fired.set()
            return True
        try:
            sink.sendall(data)
        except OSError:
            return True
        return None

    def _matching_trigger(self, link: _Link, data: bytes) -> Trigger | None:
        with self._lock:
            if not self._triggers:
                link.tail = b""
                return None
            seen = link.tail + data
            keep = max(len(t.marker) for t in self._triggers) - 1
            link.tail = seen[-keep:] if keep > 0 else b""
            for trigger in self._triggers:
                if trigger.marker in seen:
                    self._triggers.remove(trigger)
                    return trigger
        return None
