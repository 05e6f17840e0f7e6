"""Key sync, piece by piece: ranges, merging and origins, links and the late-pairing rule,
debounce, batches and acks, retries, chunking, and the sealed wire format."""

from __future__ import annotations

import base64
import itertools
import json
import random
import zlib
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.adapters.memory_peers import MemoryPeerRepo
from native_host.core import envelope, keysync
from native_host.core.autocrypt import PeerState
from native_host.core.crypto import DeviceKeys, sign_document
from native_host.core.devicelog import Member
from native_host.core.keysync import (
    CHUNK_MAX_COMPRESSED,
    INCREMENTAL_WINDOW,
    MAX_INTERVALS,
    RETRY_AFTER_SHORT_ACK,
    RETRY_MAX,
    RETRY_MIN,
    SEND_MAX_DELAY,
    SEND_QUIET,
    KeySync,
    Link,
    Outgoing,
    PartlyRejected,
    add_range,
    open_chunk,
    parse_payload,
    seal_chunk,
)
from native_host.errors import RemoteProtocolError
from tests.fakes import SeededRandom

T0 = 1_800_000_000
A, B, C = "a" * 16, "b" * 16, "c" * 16
KEYS = {d: DeviceKeys.generate(SeededRandom(i)) for i, d in enumerate((A, B, C))}
ACCOUNT = "me@example.org"


def member(device: str, added_by: str, seq: int) -> Member:
    return Member(device, KEYS[device].public, device[0], added_by, seq)


MEMBERS = {A: member(A, A, 1), B: member(B, A, 2), C: member(C, A, 3)}
PAIR = {A: MEMBERS[A], B: MEMBERS[B]}


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def peer(name: str, when: int = T0, key: bytes | None = None, **kw: Any) -> PeerState:
    """A peer seen at `when`, with an Autocrypt key if `key` is given."""
    if key is not None:
        kw.update(autocrypt_timestamp=when, public_key=key)
    return PeerState(f"{name}@example.org", last_seen=when, **kw)


def any_key(_key: bytes, _addr: str, _at: float) -> bool:
    """The unit tests' keys are placeholders; the real check is tested with real keys."""
    return True


def device(me: str, clock: Clock) -> tuple[KeySync, MemoryPeerRepo]:
    repo = MemoryPeerRepo()
    return KeySync(repo, me, clock, key_ok=any_key), repo


def decode(chunk: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(zlib.decompress(chunk))
    return payload


def flush(sync: KeySync, members: dict[str, Member]) -> dict[str, list[dict[str, Any]]]:
    """Plan and 'send' every due batch; the payloads by recipient."""
    sent: dict[str, list[dict[str, Any]]] = {}
    for out in sync.plan(members):
        sent[out.device] = [decode(c) for c in sync.chunks(out)]
        sync.sent(out, [])
    return sent


def addrs(payloads: list[dict[str, Any]]) -> list[str]:
    return [row["addr"] for p in payloads for row in p["peers"]]


def payload(lo: int, hi: int, ack: int, *rows: PeerState) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "ack": ack, "peers": [r.to_json() for r in rows]}


# --- add_range ------------------------------------------------------------------------------


def test_add_range_merges_overlapping_and_touching_ranges() -> None:
    assert add_range((), 0, 5) == ((0, 5),)
    assert add_range(((0, 5),), 3, 8) == ((0, 8),)
    assert add_range(((0, 5),), 5, 9) == ((0, 9),)  # (0, 5] and (5, 9] touch
    assert add_range(((0, 5),), 7, 9) == ((0, 5), (7, 9))
    assert add_range(((0, 5), (7, 9)), 5, 7) == ((0, 9),)
    assert add_range(((0, 5), (7, 9)), 1, 2) == ((0, 5), (7, 9))
    assert add_range(((3, 5),), 0, 20) == ((0, 20),)


def test_add_range_ignores_empty_ranges() -> None:
    assert add_range(((0, 5),), 7, 7) == ((0, 5),)
    assert add_range((), 9, 3) == ()


def test_add_range_forgets_the_highest_beyond_max_intervals() -> None:
    covered: tuple[tuple[int, int], ...] = ()
    for i in range(MAX_INTERVALS * 2, 0, -1):  # disjoint, lowest last
        covered = add_range(covered, 10 * i, 10 * i + 5)
    assert len(covered) == MAX_INTERVALS + 1
    assert covered[0] == (10, 15)
    assert covered[-1] == (10 * (MAX_INTERVALS + 1), 10 * (MAX_INTERVALS + 1) + 5)
    assert add_range(covered, 0, 10)[0] == (0, 15)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=12))
def test_add_range_is_the_union(ranges: list[tuple[int, int]]) -> None:
    covered: tuple[tuple[int, int], ...] = ()
    for lo, hi in ranges:
        covered = add_range(covered, lo, hi)
    points = {x for lo, hi in ranges for x in range(lo + 1, hi + 1)}
    assert {x for lo, hi in covered for x in range(lo + 1, hi + 1)} == points
    assert all(lo < hi for lo, hi in covered)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(covered))  # no touching


def test_received_is_the_contiguous_prefix() -> None:
    assert Link(A).received == 0
    assert Link(A, covered=((0, 5), (7, 9))).received == 5
    assert Link(A, covered=((2, 5),)).received == 0


# --- merging: ingest and apply --------------------------------------------------------------


def test_ingest_returns_only_changed_rows_with_no_origin() -> None:
    sync, repo = device(A, Clock())
    alice, bob = peer("alice", T0, b"k1"), peer("bob", T0)
    assert sync.ingest([alice, bob, alice]) == [alice, bob]
    assert repo.head() == 2
    assert sync.ingest([alice, peer("alice", T0 - 5, b"k0")]) == []  # nothing new, nothing older
    newer = peer("alice", T0 + 5)  # a later last_seen, no header
    assert sync.ingest([newer]) == [replace(alice, last_seen=T0 + 5)]
    stored = repo.get("alice@example.org")
    assert stored is not None
    assert stored.state == replace(alice, last_seen=T0 + 5)
    assert (stored.seq, stored.origin) == (3, None)
    assert repo.head() == 3


def test_apply_sets_the_origin_only_when_the_row_is_the_senders() -> None:
    sync, repo = device(A, Clock())
    sync.ingest([peer("alice", T0), peer("carol", T0, gossip_timestamp=T0 + 9, gossip_key=b"g")])
    incoming = [
        peer("alice", T0 + 1, b"k1"),  # newer in every part: the merge is the sender's row
        peer("bob", T0, b"k2"),  # new to us
        peer("carol", T0 + 1, b"k3"),  # our gossip part is newer: a mix of both
        peer("dave", T0 - 1),
    ]
    changed = sync.apply(B, payload(0, 4, 0, *incoming), PAIR)
    assert [s.addr for s in changed] == [
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
    ]
    origins = {addr: row.origin for addr in repo.snapshot() if (row := repo.get(addr))}
    assert origins == {
        "alice@example.org": B,
        "bob@example.org": B,
        "carol@example.org": None,
        "dave@example.org": B,
    }
    # The same rows again change nothing (and do not take the origin over).
    assert sync.apply(B, payload(0, 4, 0, *incoming), PAIR) == []
    assert repo.head() == 6


def test_rows_are_not_echoed_to_their_origin() -> None:
    clock = Clock()
    sync, _repo = device(A, clock)
    sync.ingest([peer("alice", T0)])
    sync.apply(B, payload(0, 1, 0, peer("bob", T0)), MEMBERS)
    clock.now += SEND_QUIET
    sent = flush(sync, MEMBERS)
    assert addrs(sent[B]) == ["alice@example.org"]
    assert addrs(sent[C]) == ["alice@example.org", "bob@example.org"]
    assert [(p["lo"], p["hi"]) for p in sent[B]] == [(0, 2)]  # the range covers the echo too


# --- links and the late-pairing rule --------------------------------------------------------


def test_late_pairing_rule() -> None:
    """A founds, B joins (approved by A), C joins (approved by B)."""
    clock = Clock()
    members = {A: member(A, A, 1), B: member(B, A, 2), C: member(C, B, 3)}
    a, a_repo = device(A, clock)
    b, b_repo = device(B, clock)
    c, c_repo = device(C, clock)
    for sync in (a, b, c):
        sync.ingest([peer("alice", T0), peer("bob", T0)])
    assert c.plan({A: members[A], B: members[B]}) == []  # not a member yet
    clock.now += SEND_QUIET
    out_a, out_b, out_c = a.plan(members), b.plan(members), c.plan(members)
    assert {(o.device, o.lo) for o in out_b} == {(A, 0), (C, 0)}  # B approved C: all of it
    # A starts C at its head (2): nothing of A's is new for C yet, so no (empty) batch goes.
    assert {(o.device, o.lo) for o in out_a} == {(B, 0)}
    assert {(o.device, o.lo) for o in out_c} == {(A, 0), (B, 0)}  # C: all, to the older ones
    assert a_repo.link(C) == Link(C, acked=2)
    assert b_repo.link(C) == Link(C, acked=0)
    assert (c_repo.link(A), c_repo.link(B)) == (Link(A), Link(B))


def test_a_late_link_is_acked() -> None:
    """C (approved by B) acks what A sends it from A's head on, so A stops resending it."""
    clock = Clock()
    members = {A: member(A, A, 1), B: member(B, A, 2), C: member(C, B, 3)}
    a, a_repo = device(A, clock)
    c, c_repo = device(C, clock)
    a.ingest([peer("alice", T0), peer("bob", T0)])
    a.plan(members)  # A learns of C at head 2
    a.ingest([peer("carol", T0)])
    clock.now += SEND_QUIET
    to_c = flush(a, members)[C]
    assert [(p["lo"], p["hi"], addrs([p])) for p in to_c] == [(2, 3, ["carol@example.org"])]
    c.apply(A, to_c[0], members)
    assert c_repo.link(A) == Link(A, covered=((0, 3),))
    clock.now += SEND_QUIET
    back = flush(c, members)[A]
    assert [p["ack"] for p in back] == [3]
    a.apply(C, back[0], members)
    link = a_repo.link(C)
    assert link is not None
    assert (link.acked, link.sent, link.retry_at) == (3, 3, None)


def test_a_snapshot_link_does_not_ack_across_a_gap() -> None:
    _a, _ = device(A, Clock())
    b, b_repo = device(B, Clock())
    b.apply(A, payload(3, 5, 0, peer("carol", T0)), PAIR)  # the second chunk of a batch
    link = b_repo.link(A)
    assert link is not None
    assert (link.covered, link.received) == (((3, 5),), 0)
    b.apply(A, payload(0, 3, 0, peer("alice", T0)), PAIR)
    link = b_repo.link(A)
    assert link is not None
    assert link.received == 5


def test_links_of_devices_no_longer_members_are_dropped() -> None:
    sync, repo = device(A, Clock())
    sync.plan(MEMBERS)
    assert [link.device for link in repo.links()] == [B, C]
    sync.plan(PAIR)
    assert [link.device for link in repo.links()] == [B]


# --- debounce ----------------------------------------------------------------------------------


def test_sends_wait_for_a_pause() -> None:
    clock = Clock()
    sync, _ = device(A, clock)
    sync.plan(PAIR)
    assert sync.next_due() is None
    sync.ingest([peer("alice", T0)])
    assert sync.plan(PAIR) == []
    assert sync.next_due() == T0 + SEND_QUIET
    clock.now += 0.2
    sync.ingest([peer("bob", T0)])
    last = clock.now
    clock.now += 0.2
    assert sync.plan(PAIR) == []  # 0.2 s after the last change
    assert sync.next_due() == last + SEND_QUIET
    clock.now = last + SEND_QUIET  # exactly when next_due said (`now - last` rounds below 0.3)
    assert sync.plan(PAIR) == [Outgoing(B, 0, 2, 0)]
    assert sync.plan(PAIR) == [Outgoing(B, 0, 2, 0)]  # still due until sent


def test_a_long_burst_goes_out_after_the_max_delay() -> None:
    clock = Clock()
    sync, _ = device(A, clock)
    for i in range(100):
        clock.now = T0 + i * 0.1
        sync.ingest([peer(f"p{i}", T0)])
        if clock.now < T0 + SEND_MAX_DELAY:
            assert sync.plan(PAIR) == [], i
        else:
            assert sync.plan(PAIR) == [Outgoing(B, 0, i + 1, 0)]
            break
    else:
        raise AssertionError("never sent")
    assert sync.next_due() is None  # the batch is planned; the next one waits for new changes


def test_nothing_is_sent_when_nothing_changed() -> None:
    clock = Clock()
    sync, _ = device(A, clock)
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    assert len(flush(sync, PAIR)) == 1
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    assert sync.plan(PAIR) == []


# --- batches, acks, retries -----------------------------------------------------------------


def test_a_replaced_batch_numbered_before_the_folder_was_recreated_is_not_deleted() -> None:
    """The member's inbox was deleted and created again (the server, or the member after the
    server deleted it), so UIDs start again at 1 and the next batch may get the UID the replaced
    one had. Deleting the replaced UIDs
    then deleted the batch just appended (the resend after the attack was lost). UIDs at or
    above the new batch's lowest cannot be an earlier batch of this numbering: kept."""
    clock = Clock()
    sync, _repo = device(A, clock)
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    assert sync.sent(out, [11, 12]) == ()
    clock.now += RETRY_MIN
    (again,) = sync.plan(PAIR)
    assert not again.incremental
    assert sync.sent(again, [11]) == ()  # renumbered: 11 is the batch just appended
    clock.now += RETRY_MIN * 2
    (third,) = sync.plan(PAIR)
    assert sync.sent(third, [14]) == (11,)  # the same numbering: the earlier batch goes


def test_sent_returns_the_batch_it_replaces() -> None:
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    assert sync.sent(out, [11, None, 12]) == ()
    link = repo.link(B)
    assert link is not None
    assert (link.pending, link.sent, link.last_send) == ((11, 12), 1, clock.now)
    # Soon after: an incremental batch joins the one in flight (nothing is replaced).
    sync.ingest([peer("bob", T0)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    assert out == Outgoing(B, 1, 2, 0, incremental=True)
    assert sync.sent(out, [13]) == ()
    link = repo.link(B)
    assert link is not None
    assert link.pending == (11, 12, 13)
    # Once the batch in flight is old, a new one is whole again and replaces all of it.
    sync.ingest([peer("carol", T0)])
    clock.now += INCREMENTAL_WINDOW
    (out,) = sync.plan(PAIR)
    assert out == Outgoing(B, 0, 3, 0)  # cumulative: from what B confirmed
    assert sync.sent(out, [14]) == (11, 12, 13)
    link = repo.link(B)
    assert link is not None
    assert link.pending == (14,)


def test_a_short_ack_retries_soon_and_a_full_ack_stops_retrying() -> None:
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest([peer("alice", T0), peer("bob", T0)])
    clock.now += SEND_QUIET
    flush(sync, PAIR)
    link = repo.link(B)
    assert link is not None
    assert (link.sent, link.retry_at) == (2, clock.now + RETRY_MIN)
    clock.now += 1
    sync.apply(B, payload(0, 0, 1), PAIR)  # B got the first chunk only
    link = repo.link(B)
    assert link is not None
    assert (link.acked, link.retry_at) == (1, clock.now + RETRY_AFTER_SHORT_ACK)
    clock.now += RETRY_AFTER_SHORT_ACK
    assert sync.plan(PAIR) == [Outgoing(B, 1, 2, 0)]
    sync.apply(B, payload(0, 0, 2), PAIR)
    link = repo.link(B)
    assert link is not None
    assert (link.acked, link.retry_at, link.retry_wait) == (2, None, RETRY_MIN)
    assert sync.next_due() is None
    assert sync.plan(PAIR) == []


def test_an_ack_beyond_what_was_sent_counts_only_up_to_it() -> None:
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    flush(sync, PAIR)
    sync.apply(B, payload(0, 0, 99), PAIR)
    link = repo.link(B)
    assert link is not None
    assert link.acked == 1


def test_retries_back_off_up_to_the_max() -> None:
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    flush(sync, PAIR)
    waits = []
    for _ in range(12):
        due = sync.next_due()
        assert due is not None
        clock.now = due - 1
        assert sync.plan(PAIR) == []
        clock.now = due
        assert sync.plan(PAIR) == [Outgoing(B, 0, 1, 0)]
        flush(sync, PAIR)
        link = repo.link(B)
        assert link is not None
        assert link.retry_at == clock.now + link.retry_wait
        waits.append(link.retry_wait)
    assert waits[:4] == [2 * RETRY_MIN, 4 * RETRY_MIN, 8 * RETRY_MIN, 16 * RETRY_MIN]
    assert waits[-1] == RETRY_MAX
    assert max(waits) == RETRY_MAX


def test_a_lost_ack_is_repeated() -> None:
    """B's ack of A's batch is lost; A sends the batch again: B, who already has it and owes A
    nothing else, must answer again, or A resends it forever."""
    clock = Clock()
    a, a_repo = device(A, clock)
    b, _ = device(B, clock)
    for sync in (a, b):
        sync.ingest([peer("alice", T0)])
    clock.now += SEND_QUIET
    to_b, to_a = flush(a, PAIR)[B], flush(b, PAIR)[A]
    a.apply(B, to_a[0], PAIR)
    b.apply(A, to_b[0], PAIR)
    clock.now += SEND_QUIET
    to_b, to_a = flush(a, PAIR)[B], flush(b, PAIR)[A]  # both ack
    a.apply(B, to_a[0], PAIR)  # ...but A's ack to B is lost
    assert a.next_due() is None
    due = b.next_due()
    assert due is not None
    clock.now = due
    again = flush(b, PAIR)[A]  # B resends
    assert a.apply(B, again[0], PAIR) == []
    clock.now += SEND_QUIET
    answer = flush(a, PAIR)[B]  # A answers again
    assert [p["ack"] for p in answer] == [1]
    b.apply(A, answer[0], PAIR)
    assert b.next_due() is None
    link = a_repo.link(B)
    assert link is not None
    assert link.ack_sent == 1


# --- chunks ---------------------------------------------------------------------------------


def check_chunks(
    chunks: list[bytes], out: Outgoing, repo: MemoryPeerRepo, limit: int
) -> list[dict[str, Any]]:
    """The chunks' ranges tile (out.lo, out.hi] and carry every row in it exactly once."""
    payloads = [decode(c) for c in chunks]
    assert all(
        len(c) <= limit or len(p["peers"]) == 1 for c, p in zip(chunks, payloads, strict=True)
    )
    bounds = [(p["lo"], p["hi"]) for p in payloads]
    assert bounds[0][0] == out.lo
    assert bounds[-1][1] == out.hi
    assert all(x[1] == y[0] for x, y in itertools.pairwise(bounds))
    assert all(lo < hi for lo, hi in bounds)
    seen = []
    for p in payloads:
        for row in p["peers"]:
            stored = repo.get(row["addr"])
            assert stored is not None
            assert p["lo"] < stored.seq <= p["hi"]
            assert stored.state == PeerState.from_json(row)
            seen.append(row["addr"])
    assert sorted(seen) == sorted(s.addr for s in repo.snapshot().values())
    return payloads


def random_rows(n: int, key_bytes: int, seed: int) -> list[PeerState]:
    rnd = random.Random(seed)
    return [peer(f"p{i:05}", T0, rnd.randbytes(key_bytes)) for i in range(n)]


def test_a_big_batch_is_cut_into_contiguous_chunks() -> None:
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest(random_rows(3000, 600, 1))
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    chunks = list(sync.chunks(out))
    assert len(chunks) >= 3
    check_chunks(chunks, out, repo, CHUNK_MAX_COMPRESSED)


def test_a_chunk_that_compresses_badly_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keysync, "CHUNK_MAX_COMPRESSED", 20_000)
    clock = Clock()
    sync, repo = device(A, clock)
    sync.ingest(random_rows(100, 600, 2))
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    chunks = list(sync.chunks(out))
    assert len(chunks) >= 4
    check_chunks(chunks, out, repo, 20_000)


def test_chunks_skip_echoes_but_cover_their_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keysync, "MAX_ROWS", 2)
    clock = Clock()
    sync, _ = device(A, clock)
    sync.apply(B, payload(0, 3, 0, *(peer(f"b{i}") for i in range(3))), PAIR)
    sync.ingest([peer(f"a{i}") for i in range(3)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    payloads = [decode(c) for c in sync.chunks(out)]
    assert [(p["lo"], p["hi"]) for p in payloads] == [(0, 5), (5, 6)]
    assert addrs(payloads) == [f"a{i}@example.org" for i in range(3)]


def test_rows_changed_while_a_batch_is_read_go_in_the_next_one() -> None:
    clock = Clock()
    sync, _ = device(A, clock)
    sync.ingest([peer("alice", T0), peer("bob", T0)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    sync.ingest([peer("alice", T0 + 1)])  # alice moves to seq 3, above the batch's hi
    payloads = [decode(c) for c in sync.chunks(out)]
    assert [(p["lo"], p["hi"]) for p in payloads] == [(0, 2)]
    assert addrs(payloads) == ["bob@example.org"]
    sync.sent(out, [])
    clock.now += SEND_QUIET
    assert addrs(flush(sync, PAIR)[B]) == ["alice@example.org"]  # joins the batch in flight
    clock.now += INCREMENTAL_WINDOW
    sync.ingest([peer("carol", T0)])
    clock.now += SEND_QUIET
    whole = addrs(flush(sync, PAIR)[B])  # unconfirmed and old: everything from 0 again
    assert whole == ["bob@example.org", "alice@example.org", "carol@example.org"]


# --- payloads -------------------------------------------------------------------------------


def test_parse_payload_counts_malformed_rows() -> None:
    good = peer("alice", T0, b"k").to_json()
    bad = [
        {**good, "addr": "Alice@Example.org"},
        {**good, "public_key": None},  # a timestamp without its key
        {**good, "extra": 1},
        "not an object",
        {**good, "last_seen": -1},
    ]
    lo, hi, ack, rows, malformed = parse_payload(
        {"lo": 1, "hi": 4, "ack": 2, "peers": [good, *bad, peer("bob").to_json()]}
    )
    assert (lo, hi, ack, malformed) == (1, 4, 2, len(bad))
    assert [r.addr for r in rows] == ["alice@example.org", "bob@example.org"]
    with pytest.raises(RemoteProtocolError, match="reversed"):
        parse_payload({"lo": 4, "hi": 1, "ack": 0, "peers": []})


def test_apply_merges_the_good_rows_and_reports_the_bad() -> None:
    sync, repo = device(A, Clock())
    doc = payload(0, 3, 0, peer("alice"), peer("bob"))
    doc["peers"].insert(1, {"addr": "x"})
    with pytest.raises(PartlyRejected) as caught:
        sync.apply(B, doc, PAIR)
    assert [s.addr for s in caught.value.changed] == ["alice@example.org", "bob@example.org"]
    assert set(repo.snapshot()) == {"alice@example.org", "bob@example.org"}
    link = repo.link(B)
    assert link is not None
    assert link.covered == ((0, 3),)  # applied and durable: the message may be deleted
    assert repo.durable_commits == 1


def test_apply_from_a_non_member_changes_nothing() -> None:
    sync, repo = device(A, Clock())
    with pytest.raises(RemoteProtocolError, match="not a member"):
        sync.apply(C, payload(0, 1, 0, peer("alice")), PAIR)
    assert repo.snapshot() == {}
    assert repo.links() == []  # the links made on the way were rolled back
    assert repo.head() == 0
    with pytest.raises(RemoteProtocolError, match="not a member"):
        sync.apply(B, payload(0, 1, 0, peer("alice")), {B: MEMBERS[B]})  # we are not one
    assert repo.snapshot() == {}


# --- the wire -------------------------------------------------------------------------------


def seal(chunk: bytes, sender_keys: DeviceKeys | None = None, to: str = B) -> envelope.SmaMessage:
    raw = seal_chunk(
        chunk,
        sender=A,
        sender_keys=sender_keys or KEYS[A],
        recipient=to,
        recipient_keys=KEYS[to].public,
        account=ACCOUNT,
        now=T0,
        random=SeededRandom(9),
    )
    return envelope.parse(raw)


def open_as_b(message: envelope.SmaMessage) -> dict[str, Any]:
    return open_chunk(message, me=B, my_keys=KEYS[B], signer=KEYS[A].public)


def test_a_sealed_chunk_opens() -> None:
    clock = Clock()
    sync, _ = device(A, clock)
    sync.ingest([peer("alice", T0, b"k"), peer("bob", T0)])
    clock.now += SEND_QUIET
    (out,) = sync.plan(PAIR)
    (chunk,) = sync.chunks(out)
    message = seal(chunk)
    assert message.type is envelope.MessageType.KEY_UPDATE
    assert (message.sender, message.to) == (A, B)
    assert open_as_b(message) == decode(chunk)


def test_a_chunk_for_another_device_is_refused() -> None:
    message = seal(zlib.compress(b"{}"), to=C)
    with pytest.raises(RemoteProtocolError, match="another device"):
        open_as_b(message)
    doc = {**message.document, "to": B}  # re-addressed: the signature breaks
    with pytest.raises(RemoteProtocolError, match="signature"):
        open_as_b(replace(message, to=B, document=doc))


def test_a_chunk_signed_by_another_key_is_refused() -> None:
    message = seal(zlib.compress(b"{}"), sender_keys=KEYS[C])
    with pytest.raises(RemoteProtocolError, match="signature"):
        open_as_b(message)


def test_a_tampered_ciphertext_is_refused() -> None:
    message = seal(zlib.compress(b"{}"))
    box = dict(message.data["box"])
    ct = bytearray(base64.b64decode(box["ct"]))
    ct[20] ^= 1
    box["ct"] = base64.b64encode(bytes(ct)).decode()
    body = {k: v for k, v in message.document.items() if k != "sig"}
    body["data"] = {"box": box}
    forged = replace(message, data=body["data"], document=sign_document(body, KEYS[A]))
    with pytest.raises(RemoteProtocolError, match="authenticate"):
        open_as_b(forged)


@pytest.mark.parametrize(
    ("chunk", "match"),
    [
        (zlib.compress(b"\0" * (9 * 1024 * 1024), 9), "decompresses to more"),
        (zlib.compress(b"not json"), "payload"),
        (zlib.compress(b'{"lo": 0, "hi": 1, "ack": 0}'), "key-update-payload"),
        (zlib.compress(b'{"lo": 0, "lo": 0}'), "payload"),
        (b"not zlib at all", "does not decompress"),
        (zlib.compress(b'{"lo": 0, "hi": 1, "ack": 0, "peers": []}')[:-3], "decompress"),
    ],
    ids=["zip-bomb", "not-json", "schema", "duplicate-key", "not-zlib", "truncated"],
)
def test_a_bad_plaintext_is_refused(chunk: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        open_as_b(seal(chunk))


def test_rows_from_a_removed_device_are_adopted_and_sent_on() -> None:
    """B sent A a row, then B was removed before C had it from B: A now sends it to C itself."""
    clock = Clock()
    a, repo = device(A, clock)
    flush(a, MEMBERS)  # links to B and C
    a.apply(B, payload(0, 1, 0, peer("bob", T0, b"k")), MEMBERS)
    stored = repo.get("bob@example.org")
    assert stored is not None
    assert stored.origin == B
    clock.now += SEND_QUIET
    without_b = {A: MEMBERS[A], C: MEMBERS[C]}
    sent = flush(a, without_b)
    adopted = repo.get("bob@example.org")
    assert adopted is not None
    assert adopted.origin is None
    assert adopted.seq > stored.seq
    assert repo.link(B) is None
    assert "bob@example.org" in addrs(sent[C])


# --- admitting rows from other devices ------------------------------------------------------


def test_a_row_dated_beyond_the_skew_is_redated_to_the_time_of_receipt() -> None:
    far = 2**40 - 1
    row = PeerState("eve@example.org", far, far, b"k", "mutual", far, b"g")
    admitted = keysync.admit(row, T0, any_key)
    assert admitted == PeerState("eve@example.org", T0, T0, b"k", "mutual", T0, b"g")
    edge = T0 + keysync.MAX_CLOCK_SKEW  # a clock a day ahead: taken as it is
    assert keysync.admit(peer("bob", edge, b"k"), T0, any_key) == peer("bob", edge, b"k")
    assert keysync.admit(peer("bob", edge + 1, b"k"), T0, any_key) == peer("bob", T0, b"k")


def test_a_key_unusable_at_both_its_date_and_now_is_dropped_with_its_part() -> None:
    checked: list[tuple[bytes, float]] = []

    def only_good(key: bytes, addr: str, at: float) -> bool:
        assert addr == "eve@example.org"
        checked.append((key, at))
        return key == b"good" or (key == b"was-good" and at == T0 - 50)

    row = PeerState("eve@example.org", T0 - 10, T0 - 10, b"bad", "mutual", T0 - 50, b"was-good")
    admitted = keysync.admit(row, T0, only_good)
    # The Autocrypt part goes; the gossip key, usable when it was seen (since expired), stays.
    assert admitted == PeerState(
        "eve@example.org", T0 - 10, None, None, "nopreference", T0 - 50, b"was-good"
    )
    assert (b"bad", T0) in checked
    assert (b"bad", T0 - 10) in checked


def test_a_far_future_row_from_a_member_no_longer_pins_the_key() -> None:
    """Issue 16 item 7: a member's row dated just below 2^40 used to win over every real mail
    for ever. Now it is re-dated on arrival, reported, and the next real mail replaces it."""
    clock = Clock()
    sync, repo = device(A, clock)
    forged = PeerState("carol@example.org", 2**40 - 1, 2**40 - 1, b"thief-key", "mutual")
    with pytest.raises(PartlyRejected, match="re-dated") as caught:
        sync.apply(B, payload(0, 1, 0, forged), PAIR)
    assert [s.public_key for s in caught.value.changed] == [b"thief-key"]
    stored = repo.get("carol@example.org")
    assert stored is not None
    assert stored.state.autocrypt_timestamp == T0
    assert stored.state.last_seen == T0
    clock.now += 60
    real = PeerState("carol@example.org", T0 + 60, T0 + 60, b"carol-key", "mutual")
    assert sync.ingest([real]) == [real]
    stored = repo.get("carol@example.org")
    assert stored is not None
    assert stored.state.public_key == b"carol-key"
