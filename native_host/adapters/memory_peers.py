"""The peer table and sync links in memory: the reference `PeerRepo` for unit and property tests.

Transactions are real (a failure inside one rolls everything back), so tests exercise the same
all-or-nothing behaviour as SQLite.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from native_host.core.autocrypt import PeerState
from native_host.core.keysync import Link, StoredPeer


class MemoryPeerRepo:
    def __init__(self) -> None:
        self._rows: dict[str, StoredPeer] = {}
        self._links: dict[str, Link] = {}
        self._head = 0
        self._lock = threading.RLock()
        self.commits = 0
        self.durable_commits = 0

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        with self._lock:
            saved = (dict(self._rows), dict(self._links), self._head)
            try:
                yield
            except BaseException:
                self._rows, self._links, self._head = saved
                raise
            self.commits += 1
            self.durable_commits += durable

    def get(self, addr: str) -> StoredPeer | None:
        return self._rows.get(addr)

    def put(self, state: PeerState, origin: str | None) -> int:
        self._head += 1
        self._rows[state.addr] = StoredPeer(state, self._head, origin)
        return self._head

    def head(self) -> int:
        return self._head

    def changed_since(self, seq: int, limit: int) -> list[StoredPeer]:
        rows = sorted((r for r in self._rows.values() if r.seq > seq), key=lambda r: r.seq)
        return rows[:limit]

    def page(self, after: str | None, limit: int) -> list[PeerState]:
        addrs = sorted(a for a in self._rows if after is None or a > after)
        return [self._rows[a].state for a in addrs[:limit]]

    def count(self) -> int:
        return len(self._rows)

    def link(self, device: str) -> Link | None:
        return self._links.get(device)

    def links(self) -> list[Link]:
        return [self._links[d] for d in sorted(self._links)]

    def save_link(self, link: Link) -> None:
        self._links[link.device] = link

    def drop_link(self, device: str) -> None:
        self._links.pop(device, None)

    def snapshot(self) -> dict[str, PeerState]:
        """Every row's state, for tests comparing devices."""
        with self._lock:
            return {addr: copy.copy(row.state) for addr, row in self._rows.items()}
