"""Key sync: every device's Autocrypt peer table converges to the same state, whatever the order.

The peer table is a state-based CRDT: `autocrypt.merge` is commutative, associative and
idempotent, so a device may apply what it receives in any order, any number of times. What is
left is making sure everything arrives, with few messages and bounded server storage:

- Each device numbers its own changes (`seq`, one counter per device); a row remembers the seq
  of its last change and, when that change came verbatim from another device, which one
  (`origin`), so it is not echoed back there.
- To each other member it sends, in one *batch*, every row changed since what that member
  confirmed (`acked`), cut into compressed chunks; chunk i covers the sender's seq range
  (lo, hi]. A new batch covers all an old one did, so it *replaces* it: the old messages are
  deleted from the member's inbox. However long a member stays offline, its inbox holds at
  most one batch from each device (Principle 3: storage does not grow with mail received).
- Every message also carries `ack`: how far (contiguously) the sender has received the
  recipient's ranges. Acks only move forward; an ack short of what was sent (a message was
  dropped) or silence (a batch or an ack was dropped) leads to a resend, with backoff. A
  resent range that brings no news is answered again (our ack to it was lost).
- A device that pairs late gets one snapshot: its approver starts it at acked=0; every other
  member starts it at its current seq and relies on the approver forwarding what it learns
  later (a merge that changes a row gives it a new seq there, so it flows on); the newcomer
  counts such a member's ranges from 0 to the first one it sees, or it could never ack them.
  The newcomer itself starts every older member at 0, which sends them what it learned before
  it paired.
- Sends are debounced: a burst of changes (a backlog scan) goes out as one batch once the
  changes pause (SEND_QUIET) or have waited SEND_MAX_DELAY.
- A row from another device is admitted before it is merged (`admit`): a timestamp beyond this
  device's clock plus MAX_CLOCK_SKEW becomes the time of receipt (Autocrypt's own rule for a
  Date in the future), and a key that is not a usable OpenPGP key is dropped with its part.
  Without this, one row dated near 2^40 would pin a correspondent's key for ever.

Pure: the table and the links are behind `PeerRepo` (SQLite in production, a dict in tests),
the clock is injected, and sealing a chunk into an SMA message is done by `seal_chunk` /
`open_chunk` with injected randomness.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeAlias

from native_host.core import envelope
from native_host.core.autocrypt import PeerState, merge
from native_host.core.crypto import (
    DeviceKeys,
    DevicePublic,
    canonical,
    decrypt_from,
    encrypt_to,
    verify_document,
)
from native_host.core.devicelog import Member
from native_host.core.envelope import LogHead, MessageType, SmaMessage
from native_host.errors import RemoteProtocolError
from native_host.jsonstrict import InvalidJson, decode_object
from native_host.ports import Clock, RandomBytes

SEND_QUIET = 0.3  # seconds without a new change before a batch goes out...
SEND_MAX_DELAY = 3.0  # ...or this long after the first unsent change, whichever comes first
RETRY_MIN = 60.0  # a batch not confirmed after this long is sent again (then 2x, 4x, ...)
RETRY_MAX = 6 * 3600.0
RETRY_AFTER_SHORT_ACK = 10.0  # the member answered but is missing part of what was sent
# A batch sent while the previous one is younger than this (and not yet acked) carries only what
# is new and joins it; an older unacked batch is replaced by a whole one. Without this a burst
# of changes sent in several batches would resend everything unacked each time.
INCREMENTAL_WINDOW = 30.0
CHUNK_JSON_BYTES = 640 * 1024  # rows per chunk, measured as JSON before compression
CHUNK_MAX_COMPRESSED = 512 * 1024  # keeps every sealed message under envelope.MAX_MESSAGE_BYTES
MAX_PLAIN_BYTES = 8 * 1024 * 1024  # a chunk never decompresses to more (zip bombs)
MAX_ROWS = 5000  # rows in one chunk
MAX_INTERVALS = 64  # received ranges remembered per member beyond the contiguous one
MAX_SEQ = 2**62
PAGE = 1000  # rows read from the repo at a time while building a batch
# How far ahead of this device's clock another device's row may be dated and still be taken as
# it is (clocks of honest devices disagree; a day covers a wrong time zone setting). Beyond it
# a timestamp is re-dated to the time of receipt. See docs/protocol.md, "Admitting rows".
MAX_CLOCK_SKEW = 24 * 3600

# Whether some keydata is a usable OpenPGP key at a time (adapters/pgp.usable_peer_key).
KeyCheckAt: TypeAlias = Callable[[bytes, str, float], bool]


@dataclass(frozen=True)
class StoredPeer:
    state: PeerState
    seq: int  # this device's change counter when the row last changed
    origin: str | None  # the member whose update made exactly this state; None: ours or mixed


@dataclass(frozen=True)
class Link:
    """What this device knows about syncing with one other member."""

    device: str
    acked: int = 0  # the member confirmed every row change of ours up to here
    sent: int = 0  # our last batch covered up to here
    covered: tuple[tuple[int, int], ...] = ()  # the member's seq ranges (lo, hi] we received
    ack_sent: int = 0  # how much of `covered` we last told the member
    pending: tuple[int, ...] = ()  # UIDs of our last batch in the member's inbox
    last_send: float = 0.0
    retry_at: float | None = None
    retry_wait: float = RETRY_MIN

    @property
    def received(self) -> int:
        """How far the member's changes reached us without a gap."""
        return self.covered[0][1] if self.covered and self.covered[0][0] == 0 else 0


class PeerRepo(Protocol):
    """The peer table and the links; one writer. Every method runs inside `transaction`."""

    def transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        """All-or-nothing. `durable`: on disk before it returns (a server deletion follows)."""
        ...

    def get(self, addr: str) -> StoredPeer | None: ...

    def put(self, state: PeerState, origin: str | None) -> int:
        """Store the row under the next seq, which it returns."""
        ...

    def head(self) -> int:
        """The highest seq handed out (0 for an empty table)."""
        ...

    def changed_since(self, seq: int, limit: int) -> list[StoredPeer]:
        """Rows whose seq is above `seq`, lowest seq first."""
        ...

    def page(self, after: str | None, limit: int) -> list[PeerState]:
        """Rows by address, after `after`."""
        ...

    def count(self) -> int: ...

    def link(self, device: str) -> Link | None: ...

    def links(self) -> list[Link]: ...

    def save_link(self, link: Link) -> None: ...

    def drop_link(self, device: str) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    """A batch due for one member: rows changed in (lo, hi], and our ack of its changes."""

    device: str
    lo: int
    hi: int
    ack: int
    seen: int = 0  # the highest of its seqs we have seen: tells it whether its last batch came
    incremental: bool = False  # adds to the batch in flight instead of replacing it


def add_range(
    covered: tuple[tuple[int, int], ...], lo: int, hi: int
) -> tuple[tuple[int, int], ...]:
    """Union of ranges (lo, hi]; touching ranges join. Beyond MAX_INTERVALS the highest are
    forgotten, which only costs a resend."""
    if hi <= lo:
        return covered
    merged: list[tuple[int, int]] = []
    for a, b in sorted((*covered, (lo, hi))):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged[: MAX_INTERVALS + 1])


@dataclass
class _Pending:
    first: float | None = None
    last: float = 0.0
    clean: dict[str, int] = field(default_factory=dict)  # device -> head checked: nothing new


class KeySync:
    """The sync logic of one device for one account (see the module docstring)."""

    def __init__(self, repo: PeerRepo, me: str, clock: Clock, *, key_ok: KeyCheckAt) -> None:
        self.repo = repo
        self.me = me
        self._clock = clock
        self._key_ok = key_ok
        self._pending = _Pending()

    # --- changes ------------------------------------------------------------------------------
    def ingest(self, states: Iterable[PeerState]) -> list[PeerState]:
        """Merge what this device learned itself (from mail); returns the rows that changed."""
        with self.repo.transaction():
            changed = self._merge_all(states, origin=None)
        if changed:
            self._touch()
        return changed

    def _merge_all(self, states: Iterable[PeerState], origin: str | None) -> list[PeerState]:
        changed: list[PeerState] = []
        for incoming in states:
            current = self.repo.get(incoming.addr)
            new = incoming if current is None else merge(current.state, incoming)
            if current is not None and new == current.state:
                continue
            self.repo.put(new, origin if origin is not None and new == incoming else None)
            changed.append(new)
        return changed

    def _touch(self) -> None:
        now = self._clock()
        if self._pending.first is None:
            self._pending.first = now
        self._pending.last = now

    def _ensure_links(self, members: Mapping[str, Member]) -> bool:
        """Start a link for each member first seen; drop links of devices no longer members.
        False when this device is not a member itself (it may not sync yet)."""
        mine = members.get(self.me)
        if mine is None:
            return False
        known = {link.device for link in self.repo.links()}
        for device, member in members.items():
            if device == self.me or device in known:
                continue
            snapshot = _starts_at_zero(member, mine)
            self.repo.save_link(Link(device, acked=0 if snapshot else self.repo.head()))
        for device in sorted(known - set(members)):
            self.repo.drop_link(device)
            self._adopt(device)
        return True

    def _adopt(self, device: str) -> None:
        """Rows that came from a device that is no longer a member may not have reached every
        device it would have sent them to (it may have been removed before it could): they
        become ours, with a new seq, and go to every member once more (a duplicate merges as a
        no-op)."""
        orphans: list[PeerState] = []
        start = 0
        while True:
            rows = self.repo.changed_since(start, PAGE)
            if not rows:
                break
            orphans += [row.state for row in rows if row.origin == device]
            start = rows[-1].seq
        for state in orphans:
            self.repo.put(state, None)

    # --- receiving ----------------------------------------------------------------------------
    def apply(
        self, sender: str, payload: dict[str, Any], members: Mapping[str, Member]
    ) -> list[PeerState]:
        """Merge one chunk from `sender` (already authenticated and decrypted); durable before it
        returns, so the caller may then delete the message."""
        lo, hi, ack, parsed, bad = parse_payload(payload)
        now = self._clock()
        rows: list[PeerState] = []
        altered = 0
        for row in parsed:
            admitted = admit(row, int(now), self._key_ok)
            altered += admitted != row
            rows.append(admitted)
        with self.repo.transaction(durable=True):
            if not self._ensure_links(members):
                raise RemoteProtocolError("a key update, but this device is not a member")
            link = self.repo.link(sender)
            if link is None:
                raise RemoteProtocolError(f"a key update from {sender}, which is not a member")
            changed = self._merge_all(rows, origin=sender)
            covered = link.covered
            if not covered and not _starts_at_zero(members[self.me], members[sender]):
                # The sender started us at its head when it learned of us; what it had before
                # comes through our approver. Without this we would never ack its ranges (what
                # we miss of the range before the first we see also comes that way).
                covered = add_range(covered, 0, lo)
            acked = max(link.acked, min(ack, link.sent))
            # A range sent again from below what we acked, with no news of our own changes
            # (a message crossing ours would bring some): our ack was lost; repeat it.
            stale = lo < hi and acked == link.acked
            ack_sent = min(link.ack_sent, lo) if stale else link.ack_sent
            retry_at, retry_wait = link.retry_at, link.retry_wait
            if acked >= link.sent:
                retry_at, retry_wait = None, RETRY_MIN
            elif ack < link.sent and payload.get("seen", link.sent) >= link.sent:
                # It has seen our latest batch and still misses part of what we sent: a chunk
                # was lost. (An ack written before our batch reached it says nothing.)
                soon = now + RETRY_AFTER_SHORT_ACK
                retry_at = soon if retry_at is None else min(retry_at, soon)
            link = replace(
                link,
                acked=acked,
                covered=add_range(covered, lo, hi),
                ack_sent=ack_sent,
                retry_at=retry_at,
                retry_wait=retry_wait,
            )
            self.repo.save_link(link)
        if changed or link.received > link.ack_sent:
            self._touch()
        if bad or altered:
            raise PartlyRejected(changed, bad, altered)
        return changed

    # --- sending ------------------------------------------------------------------------------
    def plan(self, members: Mapping[str, Member]) -> list[Outgoing]:
        """The batches due now (empty while changes are still streaming in)."""
        now = self._clock()
        with self.repo.transaction():
            if not self._ensure_links(members):
                self._pending.first = None  # kept for when we are a member; no timer till then
                return []
            head = self.repo.head()
            links = self.repo.links()
        pending = self._pending
        quiet = pending.first is None or (  # as in next_due: `now - last` may round below
            now >= pending.last + SEND_QUIET or now >= pending.first + SEND_MAX_DELAY
        )
        due: list[Outgoing] = []
        for link in links:
            retry = link.acked < link.sent and link.retry_at is not None and now >= link.retry_at
            if retry or (quiet and (link.received > link.ack_sent or self._fresh(link, head))):
                seen = link.covered[-1][1] if link.covered else 0
                incremental = (
                    not retry
                    and link.acked < link.sent
                    and now - link.last_send < INCREMENTAL_WINDOW
                )
                lo = link.sent if incremental else link.acked
                due.append(Outgoing(link.device, lo, head, link.received, seen, incremental))
        if quiet:
            pending.first = None
        return due

    def _fresh(self, link: Link, head: int) -> bool:
        """Any row changed since our last batch to `link` that did not come from it?"""
        start = max(link.acked, link.sent, self._pending.clean.get(link.device, 0))
        while start < head:
            with self.repo.transaction():
                rows = self.repo.changed_since(start, PAGE)
            if not rows:
                break
            if any(row.origin != link.device for row in rows):
                return True
            start = rows[-1].seq
        self._pending.clean[link.device] = head
        return False

    def chunks(self, out: Outgoing) -> Iterator[bytes]:
        """The batch's chunks, compressed, read from the repo a page at a time (rows changed
        meanwhile have a seq above `out.hi` and go in the next batch)."""
        lo = out.lo
        rows: list[tuple[int, dict[str, Any]]] = []
        size = 0
        start = out.lo
        while start < out.hi:
            with self.repo.transaction():
                page = [r for r in self.repo.changed_since(start, PAGE) if r.seq <= out.hi]
            if not page:
                break
            for row in page:
                if row.origin != out.device:
                    doc = row.state.to_json()
                    rows.append((row.seq, doc))
                    size += len(json.dumps(doc)) + 1
                if size >= CHUNK_JSON_BYTES or len(rows) >= MAX_ROWS:
                    yield from _compressed(lo, row.seq, out.ack, out.seen, rows)
                    lo, rows, size = row.seq, [], 0
            start = page[-1].seq
        yield from _compressed(lo, out.hi, out.ack, out.seen, rows)

    def sent(self, out: Outgoing, uids: Iterable[int | None]) -> tuple[int, ...]:
        """Record a batch on the server; returns the UIDs of the batch it replaces (to delete)."""
        now = self._clock()
        with self.repo.transaction():
            link = self.repo.link(out.device)
            if link is None:
                return ()
            sent = max(link.sent, out.hi)
            new_uids = tuple(u for u in uids if u is not None)
            if out.incremental:  # joins the batch in flight; its retry timer stands
                retry_at = link.retry_at if link.retry_at is not None else now + link.retry_wait
                self.repo.save_link(
                    replace(
                        link,
                        sent=sent,
                        ack_sent=max(link.ack_sent, out.ack),
                        pending=link.pending + new_uids,
                        retry_at=retry_at if link.acked < sent else None,
                    )
                )
                replaced: tuple[int, ...] = ()
            else:
                retry = link.retry_at is not None and now >= link.retry_at
                wait = min(link.retry_wait * 2, RETRY_MAX) if retry else link.retry_wait
                self.repo.save_link(
                    replace(
                        link,
                        sent=sent,
                        ack_sent=max(link.ack_sent, out.ack),
                        pending=new_uids,
                        last_send=now,
                        retry_at=now + wait if link.acked < sent else None,
                        retry_wait=wait,
                    )
                )
                # Within one UIDVALIDITY a batch's UIDs lie above every earlier one's. One that
                # does not was numbered before the member's inbox was deleted and recreated (UIDs
                # start again at 1) and may name the very message just appended: deleting it lost
                # the first resend after such an attack, and the next came twice as late. (A
                # lower old UID may still name another device's message in the new folder; that
                # sender's own retry covers it. Remembering UIDVALIDITY would close it.)
                lowest = min(new_uids, default=None)
                replaced = tuple(u for u in link.pending if lowest is None or u < lowest)
        self._pending.clean[out.device] = max(self._pending.clean.get(out.device, 0), out.hi)
        return replaced

    @property
    def waiting(self) -> bool:
        """Changes are waiting for the debounce (no repo access: ingest asks on every mail)."""
        return self._pending.first is not None

    def next_due(self) -> float | None:
        """When `plan` may next have something (None: nothing waits but new input)."""
        times: list[float] = []
        if self._pending.first is not None:
            times.append(min(self._pending.last + SEND_QUIET, self._pending.first + SEND_MAX_DELAY))
        with self.repo.transaction():
            links = self.repo.links()
        times += [
            link.retry_at for link in links if link.retry_at is not None and link.acked < link.sent
        ]
        return min(times) if times else None


def _starts_at_zero(member: Member, sender: Member) -> bool:
    """Whether `sender` sends `member` all it has (the late-pairing rule): it approved the
    member, or the member is the older of the two. Otherwise it starts at its head."""
    return member.added_by == sender.device_id or member.seq < sender.seq


class PartlyRejected(RemoteProtocolError):
    """A chunk was applied, but some of its rows were malformed and skipped, or had to be
    re-dated or stripped of a key (`admit`): the sender's clock is wrong, or it is hostile."""

    def __init__(self, changed: list[PeerState], bad: int, altered: int = 0) -> None:
        parts = [f"{bad} malformed peer rows skipped"] if bad else []
        if altered:
            parts.append(
                f"{altered} peer rows dated more than {MAX_CLOCK_SKEW // 3600} h ahead of this "
                "device's clock or carrying an unusable key were re-dated or stripped"
            )
        super().__init__("; ".join(parts) + " in a key update")
        self.changed = changed


def admit(state: PeerState, now: int, key_ok: KeyCheckAt) -> PeerState:
    """`state` as this device takes it from another device at `now` (pure).

    - Every timestamp later than `now + MAX_CLOCK_SKEW` becomes `now`: what Autocrypt does with
      a mail dated in the future. An honest device only writes dates up to its own clock
      (`autocrypt.effective_date`), so its rows pass unchanged while the clocks agree within
      the skew; a hostile or broken one can no longer pin a key past everything real.
    - A key (Autocrypt or gossip) that is not a usable OpenPGP key, neither at its part's
      timestamp nor now, is dropped with its part, as an invalid header would be. Checking at
      both times keeps keys that expired since they were seen (the sender checked them then)
      and keys of a mail whose Date lies before the key's creation (Delta Chat backdates).
    """
    latest = now + MAX_CLOCK_SKEW

    def when(stamp: int | None) -> int | None:
        return stamp if stamp is None or stamp <= latest else now

    def usable(key: bytes | None, stamp: int | None) -> bool:
        return (
            key is not None
            and stamp is not None
            and (key_ok(key, state.addr, now) or key_ok(key, state.addr, stamp))
        )

    ac_at, go_at = when(state.autocrypt_timestamp), when(state.gossip_timestamp)
    admitted = replace(state, last_seen=when(state.last_seen))
    if ac_at is not None:
        if usable(state.public_key, ac_at):
            admitted = replace(admitted, autocrypt_timestamp=ac_at)
        else:
            admitted = replace(
                admitted, autocrypt_timestamp=None, public_key=None, prefer_encrypt="nopreference"
            )
    if go_at is not None:
        if usable(state.gossip_key, go_at):
            admitted = replace(admitted, gossip_timestamp=go_at)
        else:
            admitted = replace(admitted, gossip_timestamp=None, gossip_key=None)
    return admitted


def _compressed(
    lo: int, hi: int, ack: int, seen: int, rows: list[tuple[int, dict[str, Any]]]
) -> Iterator[bytes]:
    """One chunk covering (lo, hi], or two halves (recursively) split at a row's seq if it
    compresses too badly to fit in a message."""
    docs = [doc for _seq, doc in rows]
    payload = {"lo": lo, "hi": hi, "ack": ack, "seen": seen, "peers": docs}
    data = zlib.compress(canonical(payload), 6)
    if len(data) <= CHUNK_MAX_COMPRESSED or len(rows) <= 1:
        yield data
        return
    half = len(rows) // 2
    cut = rows[half - 1][0]
    yield from _compressed(lo, cut, ack, seen, rows[:half])
    yield from _compressed(cut, hi, ack, seen, rows[half:])


def parse_payload(
    payload: dict[str, Any],
) -> tuple[int, int, int, list[PeerState], int]:
    """(lo, hi, ack, rows, malformed row count); the shape was checked by the schema."""
    lo, hi, ack = payload["lo"], payload["hi"], payload["ack"]
    if not lo <= hi:
        raise RemoteProtocolError("key update range is reversed")
    rows: list[PeerState] = []
    bad = 0
    for doc in payload["peers"]:
        try:
            rows.append(PeerState.from_json(doc))
        except ValueError:
            bad += 1
    return lo, hi, ack, rows, bad


# --- the wire ---------------------------------------------------------------------------------


def _associated(sender: str, recipient: str) -> bytes:
    return f"autocrypt-sma key-update {sender} {recipient}".encode()


def seal_chunk(
    chunk: bytes,
    *,
    sender: str,
    sender_keys: DeviceKeys,
    recipient: str,
    recipient_keys: DevicePublic,
    account: str,
    now: float,
    random: RandomBytes,
    head: LogHead | None = None,
) -> bytes:
    """The SMA message for one chunk: encrypted to the recipient's device key, then signed."""
    box = encrypt_to(recipient_keys, chunk, _associated(sender, recipient), random)
    return envelope.build(
        MessageType.KEY_UPDATE,
        sender,
        {"box": box},
        account=account,
        now=now,
        random=random,
        keys=sender_keys,
        to=recipient,
        head=head,
    )


def open_chunk(
    message: SmaMessage, *, me: str, my_keys: DeviceKeys, signer: DevicePublic
) -> dict[str, Any]:
    """Verify, decrypt and decompress one chunk (bounded), or raise RemoteProtocolError."""
    if message.type is not MessageType.KEY_UPDATE:
        raise RemoteProtocolError(f"{message.type} is not a key update")
    if message.to != me:
        raise RemoteProtocolError("addressed to another device (a replay?)")
    if not verify_document(message.document, signer):
        raise RemoteProtocolError("key update signature does not verify")
    compressed = decrypt_from(my_keys, message.data.get("box"), _associated(message.sender, me))
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(compressed, MAX_PLAIN_BYTES)
    except zlib.error:
        raise RemoteProtocolError("key update does not decompress") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise RemoteProtocolError(f"key update decompresses to more than {MAX_PLAIN_BYTES} bytes")
    try:
        payload = decode_object(plain)
    except InvalidJson as exc:
        raise RemoteProtocolError(f"key update payload: {exc}") from None
    envelope.check_payload("key-update-payload", payload)
    return payload
