"""One PeerRepo contract, run on the memory reference and on SQLite; then what only SQLite has
(a file: persistence, WAL, migrations, damage, threads, durable commits)."""

from __future__ import annotations

import random
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.memory_peers import MemoryPeerRepo
from native_host.adapters.sqlite_peers import MIGRATIONS, PeerDatabaseError, SqlitePeerRepo
from native_host.core.autocrypt import PeerState
from native_host.core.keysync import Link, PeerRepo, StoredPeer

KEY = bytes(range(256)) * 4  # every byte value, NUL included


class Boom(Exception):
    pass


def state(n: int, **fields: Any) -> PeerState:
    return PeerState(f"peer{n:04d}@example.org", **fields)


@pytest.fixture(params=["memory", "sqlite"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryPeerRepo()
        return
    sqlite_repo = SqlitePeerRepo(tmp_path / "state" / "peers.sqlite")
    yield sqlite_repo
    sqlite_repo.close()


class TestPeerRepoContract:
    def test_empty(self, repo: PeerRepo) -> None:
        with repo.transaction():
            assert repo.head() == 0
            assert repo.count() == 0
            assert repo.get("a@example.org") is None
            assert repo.changed_since(0, 10) == []
            assert repo.page(None, 10) == []
            assert repo.links() == []
            assert repo.link("dev") is None

    def test_put_assigns_increasing_seq_and_replaces_the_row(self, repo: PeerRepo) -> None:
        with repo.transaction():
            assert repo.put(state(1), None) == 1
            assert repo.put(state(2), "devB") == 2
            assert repo.head() == 2
            assert repo.put(state(1, last_seen=5), "devC") == 3
            assert repo.head() == 3
        with repo.transaction():
            assert repo.get(state(1).addr) == StoredPeer(state(1, last_seen=5), 3, "devC")
            assert repo.get(state(2).addr) == StoredPeer(state(2), 2, "devB")
            assert repo.count() == 2
            assert repo.put(state(3), None) == 4
        assert repo.head() == 4

    def test_every_peer_field_round_trips(self, repo: PeerRepo) -> None:
        full = PeerState(
            addr="full@example.org",
            last_seen=2**40 - 1,
            autocrypt_timestamp=1_700_000_000,
            public_key=KEY,
            prefer_encrypt="mutual",
            gossip_timestamp=0,
            gossip_key=b"\x00gossip\xff",
        )
        empty = PeerState(addr="empty@example.org")
        blank_keys = PeerState(
            addr="blank@example.org",
            autocrypt_timestamp=1,
            public_key=b"",
            gossip_timestamp=2,
            gossip_key=b"",
        )
        unicode = PeerState(addr="jürgen@bücher.example", prefer_encrypt="nopreference")
        rows = [full, empty, blank_keys, unicode]
        with repo.transaction():
            for row in rows:
                repo.put(row, None)
        with repo.transaction():
            for seq, row in enumerate(rows, start=1):
                got = repo.get(row.addr)
                assert got == StoredPeer(row, seq, None)
                assert got is not None
                assert type(got.state.public_key) is type(row.public_key)
                assert type(got.state.gossip_key) is type(row.gossip_key)
            assert [s.state for s in repo.changed_since(0, 10)] == rows
            assert repo.page(None, 10) == sorted(rows, key=lambda s: s.addr)

    def test_changed_since_is_by_seq_exclusive_and_limited(self, repo: PeerRepo) -> None:
        with repo.transaction():
            for n in (5, 3, 9, 1):
                repo.put(state(n), None)
            repo.put(state(3, last_seen=1), "devB")  # moves peer3 to seq 5
        with repo.transaction():
            assert [(r.state.addr, r.seq) for r in repo.changed_since(0, 100)] == [
                (state(5).addr, 1),
                (state(9).addr, 3),
                (state(1).addr, 4),
                (state(3).addr, 5),
            ]
            assert [r.seq for r in repo.changed_since(1, 100)] == [3, 4, 5]
            assert [r.seq for r in repo.changed_since(2, 100)] == [3, 4, 5]
            assert [r.seq for r in repo.changed_since(0, 2)] == [1, 3]
            assert [r.seq for r in repo.changed_since(3, 1)] == [4]
            assert repo.changed_since(5, 100) == []
            assert repo.changed_since(0, 0) == []
            assert repo.changed_since(4, 100)[0].origin == "devB"

    def test_page_walks_by_address(self, repo: PeerRepo) -> None:
        with repo.transaction():
            for n in (7, 2, 9, 4, 1):
                repo.put(state(n), None)
        with repo.transaction():
            assert repo.count() == 5
            assert [s.addr for s in repo.page(None, 2)] == [state(1).addr, state(2).addr]
            assert [s.addr for s in repo.page(state(2).addr, 2)] == [state(4).addr, state(7).addr]
            assert [s.addr for s in repo.page(state(3).addr, 10)] == [
                state(4).addr,
                state(7).addr,
                state(9).addr,
            ]
            assert repo.page(state(9).addr, 10) == []
            assert repo.page(None, 0) == []
            walked: list[str] = []
            after: str | None = None
            while batch := repo.page(after, 2):
                walked += [s.addr for s in batch]
                after = batch[-1].addr
            assert walked == sorted(state(n).addr for n in (7, 2, 9, 4, 1))

    def test_links_save_get_list_drop(self, repo: PeerRepo) -> None:
        full = Link(
            device="devB",
            acked=2**62,
            sent=17,
            covered=((0, 12), (15, 20), (30, 2**62)),
            ack_sent=12,
            pending=(4_294_967_295, 1, 7),
            last_send=1_700_000_000.125,
            retry_at=1_700_000_060.5,
            retry_wait=120.0,
        )
        default = Link("devA")
        with repo.transaction():
            repo.save_link(full)
            repo.save_link(default)
            repo.save_link(Link("devC", acked=3))
        with repo.transaction():
            assert repo.link("devB") == full
            assert repo.link("devA") == default
            assert repo.link("devZ") is None
            got = repo.link("devB")
            assert got is not None
            assert got.covered == ((0, 12), (15, 20), (30, 2**62))
            assert isinstance(got.covered, tuple)
            assert all(isinstance(pair, tuple) for pair in got.covered)
            assert isinstance(got.pending, tuple)
            assert got.received == 12
            assert default.retry_at is None
            assert repo.link("devA") == Link("devA", retry_at=None)
            assert [link.device for link in repo.links()] == ["devA", "devB", "devC"]
            repo.save_link(Link("devC", acked=9, retry_at=5.0))  # replaces
            repo.drop_link("devA")
            repo.drop_link("devQ")  # absent: no error
        with repo.transaction():
            assert repo.links() == [full, Link("devC", acked=9, retry_at=5.0)]

    def test_failed_transaction_changes_nothing(self, repo: PeerRepo) -> None:
        with repo.transaction():
            repo.put(state(1), None)
            repo.put(state(2), None)
            repo.save_link(Link("devA", acked=1))
            repo.save_link(Link("devB", acked=1))

        def doomed() -> None:
            with repo.transaction():
                repo.put(state(1, last_seen=9), "devA")
                repo.put(state(3), None)
                repo.save_link(Link("devA", acked=2))
                repo.drop_link("devB")
                repo.save_link(Link("devC"))
                assert repo.head() == 4
                raise Boom

        with pytest.raises(Boom):
            doomed()
        with repo.transaction():
            assert repo.head() == 2
            assert repo.count() == 2
            assert repo.get(state(1).addr) == StoredPeer(state(1), 1, None)
            assert repo.get(state(3).addr) is None
            assert repo.links() == [Link("devA", acked=1), Link("devB", acked=1)]
            assert repo.put(state(3), None) == 3  # the rolled-back seqs are reused

    def test_nested_failure_undoes_only_the_inner_part(self, repo: PeerRepo) -> None:
        def doomed() -> None:
            with repo.transaction():
                repo.put(state(2), None)
                repo.save_link(Link("devA"))
                raise Boom

        with repo.transaction():
            repo.put(state(1), None)
            with pytest.raises(Boom):
                doomed()
            assert repo.head() == 1
            repo.put(state(3), None)
        with repo.transaction():
            assert repo.head() == 2
            assert repo.get(state(2).addr) is None
            assert repo.get(state(3).addr) == StoredPeer(state(3), 2, None)
            assert repo.links() == []

    def test_durable_commits_are_counted(self, repo: Any) -> None:
        with repo.transaction():
            repo.put(state(1), None)
        with repo.transaction(durable=True):
            repo.put(state(2), None)
        assert (repo.commits, repo.durable_commits) == (2, 1)

    def test_snapshot(self, repo: Any) -> None:
        with repo.transaction():
            repo.put(state(1), None)
            repo.put(state(2, public_key=b"k", autocrypt_timestamp=1), "devB")
            repo.put(state(1, last_seen=3), None)
        assert repo.snapshot() == {
            state(1).addr: state(1, last_seen=3),
            state(2).addr: state(2, public_key=b"k", autocrypt_timestamp=1),
        }


# --- SQLite only ------------------------------------------------------------------------------


def open_repo(tmp_path: Path) -> SqlitePeerRepo:
    return SqlitePeerRepo(tmp_path / "state" / "peers.sqlite")


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    with repo.transaction():
        repo.put(state(1, public_key=KEY, autocrypt_timestamp=1), "devB")
        repo.put(state(2), None)
        repo.save_link(Link("devB", covered=((0, 4),), pending=(9,), retry_at=1.5))
    repo.close()
    repo = open_repo(tmp_path)
    try:
        assert repo.head() == 2
        assert repo.get(state(1).addr) == StoredPeer(
            state(1, public_key=KEY, autocrypt_timestamp=1), 1, "devB"
        )
        assert repo.links() == [Link("devB", covered=((0, 4),), pending=(9,), retry_at=1.5)]
        with repo.transaction():
            assert repo.put(state(3), None) == 3
    finally:
        repo.close()


def test_head_never_goes_back_when_rows_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "state" / "peers.sqlite"
    repo = SqlitePeerRepo(path)
    with repo.transaction():
        repo.put(state(1), None)
        repo.put(state(2), None)
    repo.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM peers")
    conn.close()
    repo = SqlitePeerRepo(path)
    try:
        assert repo.head() == 2
        assert repo.put(state(1), None) == 3
    finally:
        repo.close()


def test_file_modes_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "peers.sqlite"
    repo = SqlitePeerRepo(path)
    try:
        with repo.transaction():
            repo.put(state(1), None)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        repo.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(PeerDatabaseError, match="written by a newer version"):
        SqlitePeerRepo(path)
    assert path.read_bytes() == before


def test_a_damaged_file_raises_the_same_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    path.write_bytes(random.Random(7).randbytes(8192))
    with pytest.raises(PeerDatabaseError, match="cannot use the peer database"):
        SqlitePeerRepo(path)


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO peers (addr, last_seen, autocrypt_timestamp, public_key, prefer_encrypt,"
        " gossip_timestamp, gossip_key, seq, origin)"
        " VALUES ('old@example.org', 5, 1, x'01ff', 'mutual', NULL, NULL, 7, 'devB')"
    )
    conn.execute("UPDATE meta SET value = 7 WHERE key = 'head'")
    conn.close()
    repo = SqlitePeerRepo(path)
    try:
        assert repo.get("old@example.org") == StoredPeer(
            PeerState("old@example.org", 5, 1, b"\x01\xff", "mutual"), 7, "devB"
        )
        assert repo.head() == 7
        with repo.transaction():
            assert repo.put(state(1), None) == 8
    finally:
        repo.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


def test_two_threads_share_one_repo(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    seqs: dict[int, list[int]] = {0: [], 1: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(worker: int) -> None:
        try:
            start.wait()
            for n in range(500):
                with repo.transaction():
                    seqs[worker].append(repo.put(state(worker * 1000 + n), None))
                repo.head()  # a read outside a transaction, racing the other's writes
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert repo.head() == 1000
        assert repo.count() == 1000
        assert len(set(seqs[0]) | set(seqs[1])) == 1000
        assert seqs[0] == sorted(seqs[0])
        assert seqs[1] == sorted(seqs[1])
    finally:
        repo.close()


def synchronous(repo: SqlitePeerRepo) -> int:
    value: int = repo._conn.execute("PRAGMA synchronous").fetchone()[0]
    return value


def test_durable_transactions_commit_with_synchronous_full(tmp_path: Path) -> None:
    normal, full = 1, 2
    repo = open_repo(tmp_path)
    try:
        assert synchronous(repo) == normal
        with repo.transaction():
            assert synchronous(repo) == normal
        with repo.transaction(durable=True):
            assert synchronous(repo) == full
        assert synchronous(repo) == normal
        with pytest.raises(Boom), repo.transaction(durable=True):
            raise Boom
        assert synchronous(repo) == normal
        with repo.transaction(durable=True), repo.transaction(durable=True):
            assert synchronous(repo) == full
        assert synchronous(repo) == normal
        # SQLite cannot raise the safety level inside a transaction: refused, not silently weak.
        with pytest.raises(RuntimeError), repo.transaction(), repo.transaction(durable=True):
            pass
        assert synchronous(repo) == normal
        assert repo.durable_commits == 2
    finally:
        repo.close()


def test_writes_outside_a_transaction_commit_on_their_own(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    try:
        assert repo.put(state(1), None) == 1
        repo.save_link(Link("devA"))
    finally:
        repo.close()
    repo = open_repo(tmp_path)
    try:
        assert repo.head() == 1
        assert repo.links() == [Link("devA")]
    finally:
        repo.close()
