"""Key sync converges: devices that ingest, sync and read their inboxes in any interleaving, over
a server that drops, duplicates, replays and reorders messages, end up with the same peer table,
the one a single device would have after ingesting everything.

The network models each device's IMAP inbox as a list of (uid, sender, chunk). The state machine
skips the crypto (chunks are decompressed and schema-checked, not sealed); the wire path through
`seal_chunk` / `envelope.parse` / `open_chunk` is covered by `test_wire_round_trip_converges`.
Membership: 2-4 devices, optionally the last one paired late, which each other device learns of
at its own time. At the end the adversary stops (but for a few losses drawn up front, which hit
the last words of exchanges), every device learns the final membership, the clock runs until
nothing is due, and then every table must equal all contributions merged on one device.

A dedicated run raises the number of examples: HYPOTHESIS_PROFILE=fuzz (tests/conftest.py).
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from unittest import mock

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from native_host.adapters.memory_peers import MemoryPeerRepo
from native_host.core import envelope, keysync
from native_host.core.autocrypt import PeerState, merge
from native_host.core.crypto import DeviceKeys, DevicePublic
from native_host.core.devicelog import Member
from native_host.core.keysync import (
    MAX_CLOCK_SKEW,
    MAX_PLAIN_BYTES,
    MAX_ROWS,
    SEND_QUIET,
    KeySync,
    PartlyRejected,
    open_chunk,
    seal_chunk,
)
from native_host.errors import RemoteProtocolError
from native_host.jsonstrict import decode_object
from tests.fakes import SeededRandom

T0 = 1_700_000_000
ADDRS = ("alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org")
PEER_KEYS = (b"key-one", b"key-two", b"key-three")
MAX_SETTLE_ROUNDS = 200
SETTLE_HORIZON = 7 * 3600.0  # the clock may run this far past the last step while settling

DEVICE_KEYS = [DeviceKeys.generate(SeededRandom(i)) for i in range(4)]
NAMES = [str(i) * 16 for i in range(4)]  # device ids are 16 hex digits

# A small range, so that ties happen, and the latest date another device may write: a device
# whose clock is MAX_CLOCK_SKEW ahead (the clock here starts at T0), whose rows must converge
# unchanged (keysync.admit).
times = st.integers(T0, T0 + 3) | st.just(T0 + MAX_CLOCK_SKEW)
keys = st.sampled_from(PEER_KEYS)


def any_key(_key: bytes, _addr: str, _at: float) -> bool:
    """The keys here are placeholders: every one counts as usable."""
    return True


@st.composite
def peer_states(draw: st.DrawFn) -> PeerState:
    """One contribution: last_seen only, an Autocrypt part, a gossip part, or any mix."""
    ac = draw(st.none() | st.tuples(times, keys, st.sampled_from(["mutual", "nopreference"])))
    gossip = draw(st.none() | st.tuples(times, keys))
    return PeerState(
        draw(st.sampled_from(ADDRS)),
        draw(st.none() | times),
        *(ac if ac is not None else (None, None, "nopreference")),
        *(gossip if gossip is not None else (None, None)),
    )


delays = st.sampled_from([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 60.0, 600.0, 4000.0]) | st.floats(0, 4000)


def decode(chunk: bytes) -> dict[str, object]:
    """What `open_chunk` does after decryption: bounded inflate, strict JSON, the schema."""
    inflater = zlib.decompressobj()
    plain = inflater.decompress(chunk, MAX_PLAIN_BYTES)
    assert inflater.eof
    assert not inflater.unconsumed_tail
    payload = decode_object(plain)
    envelope.check_payload("key-update-payload", payload)
    return payload


def reference(contributions: list[PeerState]) -> dict[str, PeerState]:
    """All contributions merged on one device."""
    table: dict[str, PeerState] = {}
    for state in contributions:
        current = table.get(state.addr)
        table[state.addr] = state if current is None else merge(current, state)
    return table


@dataclass
class Message:
    uid: int
    sender: str
    chunk: bytes


@dataclass
class Network:
    """Every device's inbox, and every message ever sent (for replays)."""

    inbox: dict[str, list[Message]]
    history: list[tuple[str, Message]] = field(default_factory=list)
    next_uid: int = 1

    def append(self, recipient: str, sender: str, chunk: bytes, *, sent: bool = False) -> int:
        message = Message(self.next_uid, sender, chunk)
        self.next_uid += 1
        self.inbox[recipient].append(message)
        if sent:
            self.history.append((recipient, message))
        return message.uid

    def delete(self, recipient: str, uids: set[int]) -> None:
        self.inbox[recipient] = [m for m in self.inbox[recipient] if m.uid not in uids]


class KeySyncNetwork(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    # --- setup -------------------------------------------------------------------------------
    @initialize(
        n=st.integers(2, 4),
        late=st.booleans(),
        parents=st.lists(st.integers(0, 3), min_size=4, max_size=4),
        max_rows=st.sampled_from([MAX_ROWS, 1, 2, 3]),
        settle_losses=st.sets(st.integers(0, 15), max_size=3),
    )
    def setup(
        self, n: int, late: bool, parents: list[int], max_rows: int, settle_losses: set[int]
    ) -> None:
        # Few rows per chunk: batches of several chunks, which arrive (or not) one by one.
        self.patch = mock.patch.object(keysync, "MAX_ROWS", max_rows)
        self.patch.start()
        self.now = float(T0)
        self.names = NAMES[:n]
        self.final: dict[str, Member] = {}
        for i, name in enumerate(self.names):
            added_by = name if i == 0 else self.names[parents[i] % i]
            self.final[name] = Member(name, DEVICE_KEYS[i].public, name, added_by, i + 1)
        self.late = self.names[-1] if late else None
        founders = {d: m for d, m in self.final.items() if d != self.late}
        # Each device's own view of the membership; a late device is not a member of its own yet.
        self.view: dict[str, dict[str, Member]] = {d: dict(founders) for d in self.names}
        self.paired = not late
        self.repos = {d: MemoryPeerRepo() for d in self.names}
        self.syncs = {d: KeySync(self.repos[d], d, self.clock, key_ok=any_key) for d in self.names}
        self.net = Network({d: [] for d in self.names})
        self.ingested: list[PeerState] = []
        self.settle_losses = settle_losses  # messages read while settling, lost (the last words)
        self.ready = True

    def clock(self) -> float:
        return self.now

    def device(self, index: int) -> str:
        return self.names[index % len(self.names)]

    # --- the devices -------------------------------------------------------------------------
    @rule(index=st.integers(0, 3), states=st.lists(peer_states(), min_size=1, max_size=4))
    def ingest(self, index: int, states: list[PeerState]) -> None:
        sync = self.syncs[self.device(index)]
        repo = self.repos[self.device(index)]
        before = repo.snapshot()
        changed = sync.ingest(states)
        self.ingested += states
        after = repo.snapshot()
        assert {s.addr: s for s in changed} == {
            a: s for a, s in after.items() if before.get(a) != s
        }

    @rule(delay=delays)
    def tick(self, delay: float) -> None:
        self.now += delay

    @rule(index=st.integers(0, 3))
    def sync(self, index: int) -> None:
        self.send(self.device(index))

    @rule(index=st.integers(0, 3), count=st.integers(1, 8))
    def deliver(self, index: int, count: int) -> None:
        self.read(self.device(index), count)

    @rule(count=st.integers(1, 4), lose=st.sets(st.integers(0, 11), max_size=3))
    def rounds(self, count: int, lose: set[int]) -> None:
        """Everyone reads everything, then sends what is due, `count` times: quickly towards a
        quiet state, losing the messages numbered in `lose` (in the order they are read), so
        that the last word of an exchange gets lost too."""
        read = 0
        for _round in range(count):
            for name in self.names:
                for message in list(self.net.inbox[name]):
                    if read not in lose:
                        self.apply(name, message)
                    self.net.delete(name, {message.uid})
                    read += 1
            for name in self.names:
                self.send(name)
            self.now += SEND_QUIET

    @rule(index=st.integers(0, 3))
    def lose_inbox(self, index: int) -> None:
        self.net.inbox[self.device(index)] = []

    @precondition(lambda self: not self.paired)
    @rule()
    def pair(self) -> None:
        """The late device joins: it sees everyone at once, the others later (`learn`)."""
        assert self.late is not None
        self.paired = True
        self.view[self.late] = dict(self.final)

    @precondition(lambda self: self.paired)
    @rule(index=st.integers(0, 3))
    def learn(self, index: int) -> None:
        self.view[self.device(index)] = dict(self.final)

    # --- the adversary (the server) ----------------------------------------------------------
    @rule(index=st.integers(0, 3), position=st.integers(0, 20))
    def drop(self, index: int, position: int) -> None:
        inbox = self.net.inbox[self.device(index)]
        if inbox:
            del inbox[position % len(inbox)]

    @rule(index=st.integers(0, 3), position=st.integers(0, 20))
    def duplicate(self, index: int, position: int) -> None:
        name = self.device(index)
        inbox = self.net.inbox[name]
        if inbox:
            message = inbox[position % len(inbox)]
            self.net.append(name, message.sender, message.chunk)

    @rule(position=st.integers(0, 1000))
    def replay(self, position: int) -> None:
        if self.net.history:
            recipient, message = self.net.history[position % len(self.net.history)]
            self.net.append(recipient, message.sender, message.chunk)

    @rule(index=st.integers(0, 3), data=st.data())
    def reorder(self, index: int, data: st.DataObject) -> None:
        name = self.device(index)
        self.net.inbox[name] = data.draw(st.permutations(self.net.inbox[name]))

    # --- what holds at every step -------------------------------------------------------------
    @invariant()
    def acked_means_received(self) -> None:
        """A member confirmed a row only once it has it (or something newer). Not for a link
        started late, whose start relies on the approver forwarding."""
        if not self.ready:
            return
        for name in self.names:
            rows = self.repos[name].changed_since(0, len(ADDRS))
            for link in self.repos[name].links():
                other, me = self.final[link.device], self.final[name]
                if not (other.added_by == name or other.seq < me.seq):
                    continue
                theirs = self.repos[link.device].snapshot()
                for row in rows:
                    if row.seq <= link.acked:
                        have = theirs.get(row.state.addr)
                        assert have is not None, (name, link, row)
                        assert merge(have, row.state) == have, (name, link, row)

    # --- the host's loop, minus the crypto ---------------------------------------------------
    def send(self, name: str) -> bool:
        sync = self.syncs[name]
        due = sync.plan(self.view[name])
        for out in due:
            assert out.device != name
            assert out.device in self.view[name]
            uids: list[int | None] = []
            for chunk in sync.chunks(out):
                uids.append(self.net.append(out.device, name, chunk, sent=True))
            replaced = sync.sent(out, uids)
            assert not set(replaced) & {u for u in uids if u is not None}
            self.net.delete(out.device, set(replaced))
        return bool(due)

    def read(self, name: str, count: int) -> None:
        messages = self.net.inbox[name][:count]
        for message in messages:
            self.apply(name, message)
        self.net.delete(name, {m.uid for m in messages})

    def apply(self, name: str, message: Message) -> None:
        try:
            self.syncs[name].apply(message.sender, decode(message.chunk), self.view[name])
        except PartlyRejected:
            raise
        except RemoteProtocolError:
            # Only a member this device does not know yet: the host drops such a message.
            assert message.sender not in self.view[name]

    # --- the end: everything settles, and everyone agrees ------------------------------------
    def teardown(self) -> None:
        if not self.ready:
            return
        try:
            if sys.exc_info()[0] is None:  # else a step failed (or hypothesis gave up on it)
                self.settle()
        finally:
            self.patch.stop()

    def settle(self) -> None:
        if not self.paired:
            self.pair()
        for name in self.names:
            self.view[name] = dict(self.final)
        start = self.now
        read = 0
        for _round in range(MAX_SETTLE_ROUNDS):
            busy = False
            for name in self.names:
                for message in list(self.net.inbox[name]):
                    if read not in self.settle_losses:
                        self.apply(name, message)
                    self.net.delete(name, {message.uid})
                    read += 1
                    busy = True
            for name in self.names:
                busy = self.send(name) or busy
            if busy:
                continue
            due = [t for s in self.syncs.values() if (t := s.next_due()) is not None]
            if not due:
                break
            assert self.now - start <= SETTLE_HORIZON, "retries keep going"
            self.now = max(self.now, min(due))
        else:
            raise AssertionError(f"key sync did not settle in {MAX_SETTLE_ROUNDS} rounds")
        assert all(not inbox for inbox in self.net.inbox.values())
        expected = reference(self.ingested)
        for name, repo in self.repos.items():
            assert repo.snapshot() == expected, name
            links = {link.device: link for link in repo.links()}
            assert set(links) == set(self.names) - {name}
            for link in links.values():
                assert link.acked >= link.sent, (name, link)
                assert link.received <= link.ack_sent, (name, link)
                assert link.retry_at is None, (name, link)


# max_examples comes from the loaded profile (200 by default, many more with fuzz).
KeySyncNetwork.TestCase.settings = settings(settings.default, stateful_step_count=50)
TestKeySyncNetwork = KeySyncNetwork.TestCase


# --- the wire -------------------------------------------------------------------------------


def test_wire_round_trip_converges() -> None:
    """Three devices (the third paired late by the second) over sealed messages: what the host
    does, with the crypto."""
    now = [float(T0)]
    random = SeededRandom(7)
    d0, d1, d2 = NAMES[:3]
    members = {
        d0: Member(d0, DEVICE_KEYS[0].public, "zero", d0, 1),
        d1: Member(d1, DEVICE_KEYS[1].public, "one", d0, 2),
        d2: Member(d2, DEVICE_KEYS[2].public, "two", d1, 3),
    }
    keys = {name: DEVICE_KEYS[i] for i, name in enumerate(members)}
    syncs = {
        name: KeySync(MemoryPeerRepo(), name, lambda: now[0], key_ok=any_key) for name in members
    }
    inbox: dict[str, list[tuple[int, bytes]]] = {name: [] for name in members}
    uid = [0]
    contributions = [
        (d0, [PeerState("alice@example.org", T0, T0, b"alice-key", "mutual")]),
        (d1, [PeerState("bob@example.org", T0 + 1, gossip_timestamp=T0, gossip_key=b"g")]),
        (d2, [PeerState("alice@example.org", T0 + 2, T0 + 1, b"alice-key-2")]),
        (d0, [PeerState(f"p{i}@example.org", T0, T0, bytes([i]) * 40) for i in range(50)]),
    ]
    for name, states in contributions:
        syncs[name].ingest(states)

    def signer(name: str) -> DevicePublic:
        return members[name].keys

    for _round in range(20):
        now[0] += 3600.0
        for name, sync in syncs.items():
            for out in sync.plan(members):
                uids: list[int | None] = []
                for chunk in sync.chunks(out):
                    raw = seal_chunk(
                        chunk,
                        sender=name,
                        sender_keys=keys[name],
                        recipient=out.device,
                        recipient_keys=members[out.device].keys,
                        account="me@example.org",
                        now=now[0],
                        random=random,
                    )
                    uid[0] += 1
                    inbox[out.device].append((uid[0], raw))
                    uids.append(uid[0])
                old = set(sync.sent(out, uids))
                inbox[out.device] = [m for m in inbox[out.device] if m[0] not in old]
        for name, sync in syncs.items():
            for _uid, raw in inbox[name]:
                message = envelope.parse(raw)
                payload = open_chunk(
                    message, me=name, my_keys=keys[name], signer=signer(message.sender)
                )
                sync.apply(message.sender, payload, members)
            inbox[name] = []
        if all(s.next_due() is None for s in syncs.values()) and not any(inbox.values()):
            break
    else:
        raise AssertionError("did not settle")
    expected = reference([s for _name, states in contributions for s in states])
    for sync in syncs.values():
        assert sync.repo.snapshot() == expected  # type: ignore[attr-defined]
