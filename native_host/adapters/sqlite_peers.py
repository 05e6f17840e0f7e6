"""The peer table and sync links in SQLite: the production `PeerRepo`.

One connection per repo, shared by every thread behind a re-entrant lock; a transaction holds the
lock from BEGIN to COMMIT, so the service thread and the sync thread never interleave statements
on the connection (sqlite3 would otherwise raise "recursive use of cursors" or see half of the
other's transaction).

WAL with synchronous=NORMAL makes ordinary commits cheap (no fsync; a power cut may lose the last
few, which are re-derived from mail). A `durable` transaction switches to synchronous=FULL for
its commit, because the caller deletes a server message right after: losing that commit would
lose the message's contents for good.

The head counter lives in `meta`, not in max(seq): seqs are promises to other devices ("you have
everything up to n"), so a seq must never be handed out twice, even if rows are deleted later.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from native_host.core.autocrypt import PeerState
from native_host.core.keysync import Link, StoredPeer

if TYPE_CHECKING:
    from native_host.core.keysync import PeerRepo

# Applied in order, each in its own transaction; PRAGMA user_version counts those applied.
# Never edit one that has shipped: add another.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE peers (
        addr TEXT PRIMARY KEY,
        last_seen INTEGER,
        autocrypt_timestamp INTEGER,
        public_key BLOB,
        prefer_encrypt TEXT NOT NULL CHECK (prefer_encrypt IN ('mutual', 'nopreference')),
        gossip_timestamp INTEGER,
        gossip_key BLOB,
        seq INTEGER NOT NULL,
        origin TEXT
    );
    CREATE UNIQUE INDEX peers_by_seq ON peers (seq);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('head', 0);
    CREATE TABLE links (
        device TEXT PRIMARY KEY,
        acked INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        covered TEXT NOT NULL,
        ack_sent INTEGER NOT NULL,
        pending TEXT NOT NULL,
        last_send REAL NOT NULL,
        retry_at REAL,
        retry_wait REAL NOT NULL
    );
    """,
)

BUSY_TIMEOUT_MS = 5000  # another process (a second host instance) holding the write lock

# Literal SQL throughout (no string building): nothing but parameters reaches a statement.
_PUT = """
    INSERT INTO peers (addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt,
                       gossip_timestamp, gossip_key, seq, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (addr) DO UPDATE SET
        last_seen = excluded.last_seen,
        autocrypt_timestamp = excluded.autocrypt_timestamp,
        public_key = excluded.public_key,
        prefer_encrypt = excluded.prefer_encrypt,
        gossip_timestamp = excluded.gossip_timestamp,
        gossip_key = excluded.gossip_key,
        seq = excluded.seq,
        origin = excluded.origin
"""
_GET = """
    SELECT addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt, gossip_timestamp,
           gossip_key, seq, origin
    FROM peers WHERE addr = ?
"""
_CHANGED_SINCE = """
    SELECT addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt, gossip_timestamp,
           gossip_key, seq, origin
    FROM peers WHERE seq > ? ORDER BY seq LIMIT ?
"""
_FIRST_PAGE = """
    SELECT addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt, gossip_timestamp,
           gossip_key
    FROM peers ORDER BY addr LIMIT ?
"""
_PAGE = """
    SELECT addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt, gossip_timestamp,
           gossip_key
    FROM peers WHERE addr > ? ORDER BY addr LIMIT ?
"""
_ALL = """
    SELECT addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt, gossip_timestamp,
           gossip_key
    FROM peers
"""
_LINK = """
    SELECT device, acked, sent, covered, ack_sent, pending, last_send, retry_at, retry_wait
    FROM links WHERE device = ?
"""
_LINKS = """
    SELECT device, acked, sent, covered, ack_sent, pending, last_send, retry_at, retry_wait
    FROM links ORDER BY device
"""
_SAVE_LINK = """
    INSERT OR REPLACE INTO links
        (device, acked, sent, covered, ack_sent, pending, last_send, retry_at, retry_wait)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class PeerDatabaseError(Exception):
    """The peer database cannot be used: damaged, not a database, or written by a newer version.

    Raised instead of a raw sqlite3 error so the service can tell the user what is wrong with
    the file rather than crash with a traceback; the file is left untouched.
    """


class SqlitePeerRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.durable_commits = 0
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on the connection (>1: savepoints)
        self._head = 0  # authoritative while a transaction is open; flushed at COMMIT
        self._durable = False  # the open transaction must reach the disk on COMMIT
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file ourselves: sqlite3 would create it with the umask's mode (often
        # world-readable), and the -wal/-shm files inherit the main file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise PeerDatabaseError(f"cannot use the peer database {path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._check_version(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        for number, script in enumerate(MIGRATIONS, start=1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                self._check_version(version)
                if version < number:
                    for statement in _statements(script):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _check_version(self, version: int) -> None:
        if version > len(MIGRATIONS):
            raise PeerDatabaseError(
                f"the peer database {self.path} was written by a newer version of autocrypt-sma "
                f"(schema {version}; this version knows up to {len(MIGRATIONS)}); "
                "upgrade autocrypt-sma to use it"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Nested use is a savepoint: an inner failure undoes only the inner part, as in the
        memory repo. SQLite fixes durability when the outermost transaction begins, so a durable
        one may only be nested in a durable one (else RuntimeError: a bug in the caller)."""
        with self._lock:
            if self._depth:
                with self._savepoint(durable):
                    yield
                return
            conn = self._conn
            try:
                if durable:
                    # Not allowed inside a transaction, hence set for the whole of this one.
                    conn.execute("PRAGMA synchronous = FULL")
                    self._durable = True
                conn.execute("BEGIN IMMEDIATE")
                self._head = self._stored_head()
                start = self._head
                self._depth = 1
                yield
                if self._head != start:
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (self._head,))
                conn.execute("COMMIT")
                self.commits += 1
                self.durable_commits += self._durable
            except BaseException:
                if conn.in_transaction:
                    # A failing ROLLBACK must not hide why we are rolling back; the next BEGIN
                    # will report the connection's state.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
                if self._durable:
                    self._durable = False
                    with suppress(sqlite3.Error):
                        conn.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _savepoint(self, durable: bool) -> Iterator[None]:
        if durable and not self._durable:
            raise RuntimeError("a durable transaction nested in an ordinary one")
        name = f"sp{self._depth}"
        head = self._head
        self._conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            self._head = head
            raise
        else:
            self._conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    def _stored_head(self) -> int:
        value: int = self._conn.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()[0]
        return value

    # --- peers --------------------------------------------------------------------------------
    def get(self, addr: str) -> StoredPeer | None:
        with self._lock:
            row = self._conn.execute(_GET, (addr,)).fetchone()
        return None if row is None else _stored(row)

    def put(self, state: PeerState, origin: str | None) -> int:
        with self._lock:
            if not self._depth:
                with self.transaction():
                    return self.put(state, origin)
            seq = self._head + 1
            self._conn.execute(
                _PUT,
                (
                    state.addr,
                    state.last_seen,
                    state.autocrypt_timestamp,
                    state.public_key,
                    state.prefer_encrypt,
                    state.gossip_timestamp,
                    state.gossip_key,
                    seq,
                    origin,
                ),
            )
            self._head = seq
            return seq

    def head(self) -> int:
        with self._lock:
            return self._head if self._depth else self._stored_head()

    def changed_since(self, seq: int, limit: int) -> list[StoredPeer]:
        with self._lock:
            rows = self._conn.execute(_CHANGED_SINCE, (seq, limit)).fetchall()
        return [_stored(row) for row in rows]

    def page(self, after: str | None, limit: int) -> list[PeerState]:
        # SQLite's default (BINARY) collation compares UTF-8 bytes, which orders like Python str.
        with self._lock:
            if after is None:
                cursor = self._conn.execute(_FIRST_PAGE, (limit,))
            else:
                cursor = self._conn.execute(_PAGE, (after, limit))
            rows = cursor.fetchall()
        return [_state(row) for row in rows]

    def count(self) -> int:
        with self._lock:
            value: int = self._conn.execute("SELECT count(*) FROM peers").fetchone()[0]
        return value

    def snapshot(self) -> dict[str, PeerState]:
        """Every row's state, for tests comparing devices."""
        with self._lock:
            rows = self._conn.execute(_ALL).fetchall()
        return {row[0]: _state(row) for row in rows}

    # --- links --------------------------------------------------------------------------------
    def link(self, device: str) -> Link | None:
        with self._lock:
            row = self._conn.execute(_LINK, (device,)).fetchone()
        return None if row is None else _link(row)

    def links(self) -> list[Link]:
        with self._lock:
            rows = self._conn.execute(_LINKS).fetchall()
        return [_link(row) for row in rows]

    def save_link(self, link: Link) -> None:
        with self._lock:
            self._conn.execute(
                _SAVE_LINK,
                (
                    link.device,
                    link.acked,
                    link.sent,
                    json.dumps([list(pair) for pair in link.covered], separators=(",", ":")),
                    link.ack_sent,
                    json.dumps(list(link.pending), separators=(",", ":")),
                    link.last_send,
                    link.retry_at,
                    link.retry_wait,
                ),
            )

    def drop_link(self, device: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM links WHERE device = ?", (device,))


def _state(row: Any) -> PeerState:
    return PeerState(
        addr=row[0],
        last_seen=row[1],
        autocrypt_timestamp=row[2],
        public_key=row[3],
        prefer_encrypt=row[4],
        gossip_timestamp=row[5],
        gossip_key=row[6],
    )


def _stored(row: Any) -> StoredPeer:
    return StoredPeer(_state(row), seq=row[7], origin=row[8])


def _link(row: Any) -> Link:
    return Link(
        device=row[0],
        acked=row[1],
        sent=row[2],
        covered=tuple((int(lo), int(hi)) for lo, hi in json.loads(row[3])),
        ack_sent=row[4],
        pending=tuple(int(uid) for uid in json.loads(row[5])),
        last_send=row[6],
        retry_at=row[7],
        retry_wait=row[8],
    )


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements: sqlite3's execute runs one, and executescript would
    COMMIT the transaction the migration must run in."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in a migration: {pending!r}")


if TYPE_CHECKING:
    _conforms: type[PeerRepo] = SqlitePeerRepo
