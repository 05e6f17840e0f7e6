"""The device log: an append-only, hash-chained tree of signed entries saying which devices belong to the account.

Pure: no I/O. Entries travel through the SMA folders, so the server (the adversary) decides
which of them a device sees and in what order; it may also forge, replay, withhold or flood them,
and a removed device keeps its device key and may sign whatever it likes.

Three rules make that harmless (docs/protocol.md, "Device log"):

1. **Only what verifies is kept.** An entry is kept once it hangs off a kept entry (or is the
   pinned genesis) and is signed by a device that was a member at that point; anything else is
   counted and dropped, never accumulated (a few entries wait in a bounded pool for a parent
   that has not arrived yet). Junk costs a parse and, at most, one signature check.
2. **Removal wins.** A device that any kept `remove` names is out for good, whichever branch
   that removal sits on; nothing it signed concurrently with or after its removal counts, and
   nothing that hangs below such an entry does. Two devices that removed each other at the same
   time are both out (the log cannot tell which one is the user's; both are reported), except
   that a device always trusts its own removals (`me`).
3. **The same tree gives the same answer.** Among the entries that count, each fork goes to the
   branch holding more removals, then the longer one, then the smaller hash; membership and the
   account key are read along that chain. The result depends on the set of entries kept, never
   on their order.

An honest device whose entry lost a fork signs it again on the new head (the service does this);
that is an ordinary race and raises no alert. What only an attacker produces is reported as an
attack: entries by removed devices, removals answered by counter-removals, a signer with two
entries at one position, a foreign genesis.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from native_host.core.crypto import (
    KEY_BYTES,
    DeviceKeys,
    DevicePublic,
    b64,
    canonical,
    digest,
    sign_document,
    unb64,
    verify_document,
)
from native_host.core.layout import is_device_id
from native_host.errors import RemoteProtocolError

FORMAT = 2  # entries of autocrypt-sma 0.1.0 (no "v") are refused with a clear message
MAX_ENTRIES = 16_384  # kept entries; a removal is kept past it (else a full log could not remove)
MAX_PER_SIGNER = 256  # kept entries one device signed (an honest one signs a few in its life)
MAX_WAITING = 256  # entries waiting for their parent or the pin, oldest dropped first
MAX_PER_SIGNER_SEQ = 2  # one signer's entries at one seq: the second is kept as evidence
MAX_ENTRY_BYTES = 1024  # canonical size; a legitimate entry is under 800 bytes
MAX_REJECTIONS_KEPT = 100  # refused entries remembered for `problems` (all are counted)
MAX_NAME_CHARS = 64  # as for the names in announcements
MAX_INT = 2**40  # seq and at: the SMA schema's timestamp bound, far beyond any real value
SIGNATURE_BYTES = 64

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # OpenPGP v4, v5/v6
_NAME_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f]")
_REQUIRED = frozenset(
    {"v", "seq", "prev", "op", "device_id", "name", "account_key", "by", "at", "sig"}
)
_OPTIONAL = frozenset({"keys", "out"})
MAX_OUT = 64  # devices one roll says it left out


class Op(StrEnum):
    GENESIS = "genesis"  # the first entry: the founding device, self-signed, and the account key
    ADD = "add"  # a member admits a new device
    REMOVE = "remove"  # a member removes a device: another one with the new account key at once
    ROLL = "roll"  # a member records a new account key (after a device left, or a lost roll)
    RENAME = "rename"  # a member gives a device (possibly itself) a new name


class ProblemKind(StrEnum):
    """Lets upstream tell an attack from junk and from the ordinary race of a fork."""

    MALFORMED = "malformed"  # not a log entry at all (refused, counted)
    INVALID = "invalid"  # well-formed but does not verify where it claims to sit (refused)
    FULL = "full"  # refused: the log is full, or its signer has enough at that seq
    WAITING_DROPPED = "waiting_dropped"  # its parent never came and newer ones took its place
    OVERDUE = "overdue"  # its parent has not come for long: reported, still waiting
    FORK = "fork"  # counts, but lost a fork to a sibling branch: a benign race, no alert
    FOREIGN = "foreign"  # a genesis other than the pinned one: another identity (a reset?)
    REMOVED_ACTED = "removed_acted"  # signed by a removed device concurrently with or after
    CONFLICT = "conflict"  # two devices removed each other at the same time
    EQUIVOCATION = "equivocation"  # one signer, two entries that count, at one seq


REFUSED = frozenset(
    {
        ProblemKind.MALFORMED,
        ProblemKind.INVALID,
        ProblemKind.FULL,
        ProblemKind.WAITING_DROPPED,
        ProblemKind.OVERDUE,
    }
)
ATTACKS = frozenset({ProblemKind.REMOVED_ACTED, ProblemKind.CONFLICT, ProblemKind.EQUIVOCATION})


_OPS = frozenset(op.value for op in Op)


@dataclass(frozen=True)
class Problem:
    entry_hash: str | None  # None when the entry was too broken to hash
    reason: str
    kind: ProblemKind


@dataclass(frozen=True)
class Member:
    device_id: str
    keys: DevicePublic
    name: str
    added_by: str  # the genesis device is added by itself
    seq: int  # the entry that added it


@dataclass(frozen=True)
class Entry:
    """A well-formed entry (not yet verified): what parse_entry makes of a document."""

    hash: str
    seq: int
    prev: str | None
    op: Op
    device_id: str
    keys: DevicePublic | None
    name: str
    account_key: str | None
    by: str
    at: int
    raw: bytes  # the canonical document, as hashed; immutable, unlike the dict it came from
    out: tuple[str, ...] = ()  # a roll: devices out on another branch, left out of the new key

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.raw)
        return document


class MalformedEntry(RemoteProtocolError):
    """An entry failed the structural checks; carries its hash when it got far enough to have one."""

    def __init__(self, message: str, entry_hash: str | None = None) -> None:
        super().__init__(message)
        self.entry_hash = entry_hash


def entry_hash(entry: dict[str, Any]) -> str:
    """The id the next entry's `prev` refers to: over the whole entry, signature included."""
    return digest(canonical(entry))


def normalise_fingerprint(text: str) -> str:
    """The one spelling entries use (upper-case hex, no spaces), so that comparisons are exact."""
    fingerprint = text.replace(" ", "").upper()
    if _FINGERPRINT_RE.fullmatch(fingerprint) is None:
        raise ValueError(f"not an OpenPGP fingerprint: {text!r}")
    return fingerprint


# --- Structure -------------------------------------------------------------------------------


def parse_entry(value: Any) -> Entry:
    """Check an untrusted document's shape; nothing here says its signer may sign it.

    Every member is type-checked before the document is serialised, so hashing cannot fail or
    run away on garbage; a refused document is hashed only for its report, when it serialises
    (it came in a bounded message). Unknown members are refused (not ignored): they would be
    signed and hashed, yet mean nothing to us.
    """
    if not isinstance(value, dict):
        raise MalformedEntry("a log entry must be an object")
    try:
        return _parse_members(value)
    except MalformedEntry as exc:
        # Named by its hash whenever it has one: the report then says which entry it was (a
        # corrupted copy of a forged entry was refused as "None", and could not be told apart).
        if exc.entry_hash is None:
            exc.entry_hash = _hash_if_possible(value)
        raise


def _parse_members(value: dict[str, Any]) -> Entry:
    if value.get("v") != FORMAT:
        raise MalformedEntry(
            "a device-log entry of another format (autocrypt-sma 0.1.0 wrote format 1, which this"
            f" version does not read; it reads format {FORMAT}): pair this device again"
        )
    present = set(value)
    missing = _REQUIRED - present
    if missing:
        raise MalformedEntry(f"missing {', '.join(sorted(missing))}")
    if present - _REQUIRED - _OPTIONAL:
        raise MalformedEntry(f"{len(present - _REQUIRED - _OPTIONAL)} unknown members")
    op = _op(value["op"])
    seq = _bounded_int(value["seq"], "seq")
    at = _bounded_int(value["at"], "at")
    prev = None if value["prev"] is None else _hash(value["prev"], "prev")
    device_id = _device_id(value["device_id"], "device_id")
    by = _device_id(value["by"], "by")
    name = _name(value["name"])
    account_key = None if value["account_key"] is None else _fingerprint(value["account_key"])
    keys = _keys(value["keys"]) if "keys" in value else None
    out = _out(value["out"]) if "out" in value else ()
    _canonical_b64(value["sig"], SIGNATURE_BYTES, "sig")
    raw = canonical(value)
    if len(raw) > MAX_ENTRY_BYTES:
        raise MalformedEntry(f"entry is {len(raw)} bytes, over {MAX_ENTRY_BYTES}")
    entry = Entry(digest(raw), seq, prev, op, device_id, keys, name, account_key, by, at, raw, out)
    problem = _shape_problem(entry)
    if problem is not None:
        raise MalformedEntry(problem, entry.hash)
    return entry


def _hash_if_possible(value: dict[str, Any]) -> str | None:
    """The hash of a document refused before its members were checked, for the report (None
    when it does not even serialise; bounded: a document came from a bounded message)."""
    try:
        return digest(canonical(value))
    except (TypeError, ValueError):
        return None


def _shape_problem(entry: Entry) -> str | None:
    """What each op requires, whatever the chain says."""
    if entry.op is Op.GENESIS:
        if entry.seq != 0 or entry.prev is not None:
            return "genesis must have seq 0 and no prev"
        if entry.by != entry.device_id:
            return "genesis must be signed by the device it introduces"
    elif entry.seq == 0 or entry.prev is None:
        return f"{entry.op} needs seq >= 1 and a prev"
    if entry.op in (Op.GENESIS, Op.ADD) and entry.keys is None:
        return f"{entry.op} must carry the device's keys"
    if entry.op is not Op.REMOVE and (entry.op in (Op.GENESIS, Op.ROLL)) != (
        entry.account_key is not None
    ):
        return (
            f"{entry.op} {'needs' if entry.op in (Op.GENESIS, Op.ROLL) else 'takes no'} account_key"
        )
    if entry.op is Op.ROLL and entry.device_id != entry.by:
        return "roll must name its signer as device_id"
    if entry.out and entry.op is not Op.ROLL:
        return f"{entry.op} takes no out"
    if entry.op is Op.REMOVE and (entry.device_id == entry.by) == (entry.account_key is not None):
        return (
            "a device that removes another names the new account key (one atomic entry);"
            " a device that leaves names none"
        )
    return None


def _op(value: Any) -> Op:
    if not isinstance(value, str) or value not in _OPS:
        raise MalformedEntry("unknown op")
    return Op(value)


def _bounded_int(value: Any, what: str) -> int:
    # `type is int`: JSON booleans arrive as bool, a subclass of int.
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise MalformedEntry(f"{what} must be an integer from 0 to {MAX_INT}")
    return value


def _hash(value: Any, what: str) -> str:
    if not isinstance(value, str) or _HASH_RE.fullmatch(value) is None:
        raise MalformedEntry(f"{what} must be a lower-case hex SHA-256")
    return value


def _device_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_device_id(value):
        raise MalformedEntry(f"{what} must be a device id")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise MalformedEntry(f"name must be 1 to {MAX_NAME_CHARS} characters")
    if _NAME_FORBIDDEN_RE.search(value) is not None:
        raise MalformedEntry("name holds control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, as json.loads lets through
        raise MalformedEntry("name is not valid Unicode") from None
    return value


def _out(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_OUT:
        raise MalformedEntry(f"out must be a list of 1 to {MAX_OUT} device ids")
    ids = tuple(_device_id(v, "out") for v in value)
    if list(ids) != sorted(set(ids)):
        raise MalformedEntry("out must be sorted, without repeats")
    return ids


def _fingerprint(value: Any) -> str:
    if not isinstance(value, str) or _FINGERPRINT_RE.fullmatch(value) is None:
        raise MalformedEntry("account_key must be an upper-case hex fingerprint")
    return value


def _keys(value: Any) -> DevicePublic:
    if not isinstance(value, dict) or set(value) != {"sign", "enc"}:
        raise MalformedEntry("keys must be an object of sign and enc")
    return DevicePublic(
        _canonical_b64(value["sign"], KEY_BYTES, "keys.sign"),
        _canonical_b64(value["enc"], KEY_BYTES, "keys.enc"),
    )


def _canonical_b64(value: Any, size: int, what: str) -> bytes:
    """Exactly one spelling per value: otherwise anyone could re-spell a signature (the padding
    bits are free) and so mint a second entry, with another hash, that still verifies."""
    try:
        data = unb64(value, size)
    except RemoteProtocolError as exc:
        raise MalformedEntry(f"{what}: {exc}") from None
    if b64(data) != value:
        raise MalformedEntry(f"{what}: not canonical base64")
    return data


# --- Verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A kept entry and the state after it on its own branch (fixed by its ancestry)."""

    entry: Entry
    members: dict[str, Member]
    account_key: str


def _judge(entry: Entry, parent: _Node) -> str | None:
    """Why `entry` cannot follow `parent` on its branch, or None if it can."""
    if entry.seq != parent.entry.seq + 1:
        return f"seq {entry.seq} does not follow {parent.entry.seq}"
    signer = parent.members.get(entry.by)
    if signer is None:
        return f"signed by {entry.by}, which is not a member there"
    if not verify_document(entry.document, signer.keys):
        return f"signature by {entry.by} does not verify"
    subject = parent.members.get(entry.device_id)
    if entry.op is Op.ADD:
        return None if subject is None else f"{entry.device_id} is already a member"
    if subject is None:
        return f"{entry.device_id} is not a member"
    if entry.keys is not None and entry.keys != subject.keys:
        return f"keys given for {entry.device_id} are not its keys"
    if entry.op is Op.REMOVE and len(parent.members) == 1:
        return "removing the last member would leave nobody to sign"
    return None


def _after(entry: Entry, parent: _Node) -> _Node:
    members = dict(parent.members)
    account_key = parent.account_key
    if entry.op is Op.ADD:
        assert entry.keys is not None  # parse_entry
        members[entry.device_id] = Member(
            entry.device_id, entry.keys, entry.name, entry.by, entry.seq
        )
    elif entry.op is Op.REMOVE:
        del members[entry.device_id]
    elif entry.op is Op.RENAME:
        members[entry.device_id] = replace(members[entry.device_id], name=entry.name)
    if entry.account_key is not None:  # a roll, or a removal that rolls
        account_key = entry.account_key
    return _Node(entry, members, account_key)


def _genesis_node(entry: Entry) -> _Node | str:
    """The pinned entry needs only its self-signature: the pin is what makes it trusted."""
    if entry.op is not Op.GENESIS:
        return f"the pinned entry is not a genesis but an {entry.op}"
    assert entry.keys is not None  # parse_entry
    assert entry.account_key is not None
    if not verify_document(entry.document, entry.keys):
        return "the pinned genesis's signature does not verify"
    member = Member(entry.device_id, entry.keys, entry.name, entry.by, 0)
    return _Node(entry, {entry.device_id: member}, entry.account_key)


class Label(StrEnum):
    """What a removal does (docs/protocol.md, "Removal wins")."""

    IN = "in"  # it counts: its target is out, and it may sit on the chain
    OUT = "out"  # its signer was removed concurrently: it counts for nothing
    CONFLICT = "conflict"  # part of a cycle of devices removing each other: all of them are out


@dataclass(frozen=True)
class _View:
    """The result of one resolution of the kept tree."""

    chain: tuple[_Node, ...]
    members: dict[str, Member]
    account_key: str | None
    removed: dict[str, Entry]  # device id -> a removal that put it out (IN or CONFLICT)
    roll_owed: bool  # a removed device knows the current account key
    problems: tuple[Problem, ...]


_EMPTY = _View((), {}, None, {}, False, ())


class DeviceLog:
    """The kept entries and the chain resolved from them.

    Feed entries with `receive` (parse, and a signature check once the parent is known), then
    query (queries resolve again when something changed). `genesis_hash` None means not pinned
    yet: entries wait (up to MAX_WAITING) until `pin`. `me` is this device: its own removals
    always count for it (it knows they were its user's).
    """

    def __init__(
        self, genesis_hash: str | None, *, me: str | None = None, applied: Iterable[str] = ()
    ) -> None:
        if genesis_hash is not None and _HASH_RE.fullmatch(genesis_hash) is None:
            raise ValueError(f"not an entry hash: {genesis_hash!r}")
        self._genesis_hash = genesis_hash
        self._me = me
        self._applied = frozenset(applied)  # removals this device acted on: never undone
        self._in_removals: set[str] = set()  # (set by each resolution)
        self._nodes: dict[str, _Node] = {}
        self._children: dict[str, list[str]] = {}
        self._per_signer_seq: dict[tuple[str, int], int] = {}
        self._per_signer: dict[str, int] = {}
        self._waiting: OrderedDict[str, Entry] = OrderedDict()
        self._parked_at: dict[str, float] = {}  # when `report_overdue` first saw each waiting
        self._overdue: set[str] = set()  # waiting entries already reported as overdue
        self._foreign: set[str] = set()
        self._rejected: list[Problem] = []  # the latest MAX_REJECTIONS_KEPT refusals
        self.refused_total = 0  # every refusal, kept or not: upstream reports the difference
        self.changes = 0  # counts changes to what `documents` returns (upstream saves then)
        self._view = _EMPTY
        self._dirty = False
        self._reported: set[tuple[ProblemKind, str | None]] = set()

    # Feeding

    def receive(self, value: Any) -> list[Problem]:
        """Keep `value` if it verifies (or park it until its parent comes); a refusal is counted
        and returned here, once. Replays are free: an entry already held changes nothing."""
        try:
            entry = parse_entry(value)
        except MalformedEntry as exc:
            return self._refuse(Problem(exc.entry_hash, str(exc), ProblemKind.MALFORMED))
        if entry.hash in self._nodes or entry.hash in self._waiting:
            return []
        if entry.op is Op.GENESIS and self._genesis_hash is not None:
            if entry.hash != self._genesis_hash:
                if len(self._foreign) < MAX_REJECTIONS_KEPT:
                    self._foreign.add(entry.hash)
                    self._dirty = True
                return []
            return self._keep_genesis(entry)
        if self._genesis_hash is None or entry.prev not in self._nodes:
            return self._park(entry)
        return self._attach(entry)

    def receive_all(self, values: Iterable[Any]) -> list[Problem]:
        """A batch (one sync's worth): its refusals, then what the resolution newly found."""
        problems = [problem for value in values for problem in self.receive(value)]
        return problems + self.rebuild()

    def pin(self, genesis_hash: str) -> None:
        """Fix the genesis once (a new device learns it from the device it paired with)."""
        if _HASH_RE.fullmatch(genesis_hash) is None:
            raise ValueError(f"not an entry hash: {genesis_hash!r}")
        if self._genesis_hash not in (None, genesis_hash):
            raise ValueError("the log is already pinned to another genesis")
        if self._genesis_hash is None:
            self._genesis_hash = genesis_hash
            waiting = list(self._waiting.values())
            self._waiting.clear()
            self.changes += 1
            for entry in sorted(waiting, key=lambda e: e.seq):
                self.receive(json.loads(entry.raw))
        self._dirty = True

    def rebuild(self) -> list[Problem]:
        """Bring the resolution up to date; the attack and fork findings not returned before
        (refusals are returned by `receive`). Lets upstream alert once per finding."""
        self._refresh()
        new = []
        for problem in self._view.problems:
            key = (problem.kind, problem.entry_hash)
            if key not in self._reported:
                self._reported.add(key)
                new.append(problem)
        return new

    # Queries

    @property
    def genesis_hash(self) -> str | None:
        return self._genesis_hash

    @property
    def head_hash(self) -> str | None:
        chain = self._refreshed().chain
        return chain[-1].entry.hash if chain else None

    @property
    def head_seq(self) -> int | None:
        chain = self._refreshed().chain
        return chain[-1].entry.seq if chain else None

    @property
    def account_key(self) -> str | None:
        """The account's current OpenPGP fingerprint: the genesis one or the last roll's."""
        return self._refreshed().account_key

    def members(self) -> dict[str, Member]:
        return dict(self._refreshed().members)

    def is_member(self, device_id: str) -> bool:
        return device_id in self._refreshed().members

    def removal_of(self, device_id: str) -> dict[str, Any] | None:
        """The removal that put `device_id` out, wherever it sits (None: it is not out)."""
        entry = self._refreshed().removed.get(device_id)
        return None if entry is None else entry.document

    @property
    def removed(self) -> frozenset[str]:
        """Every device a counting removal names: never a member again."""
        return frozenset(self._refreshed().removed)

    @property
    def roll_owed(self) -> bool:
        """A device that is out may know the current account key: a member must roll."""
        return self._refreshed().roll_owed

    def out_on_head(self) -> list[str]:
        """Devices that are out but still members where the chain's head stands (their removal
        counts on another branch): a roll names them in `out` (see `roll`)."""
        view = self._refreshed()
        if not view.chain:
            return []
        return sorted(d for d in view.chain[-1].members if d in view.removed)

    def entries(self) -> list[dict[str, Any]]:
        """The resolved chain in order: what a newly paired device is handed."""
        return [node.entry.document for node in self._refreshed().chain]

    def kept(self) -> list[dict[str, Any]]:
        """The kept entries, parents first (not those still waiting): what to write back."""
        kept = sorted(self._nodes.values(), key=lambda n: (n.entry.seq, n.entry.hash))
        return [n.entry.document for n in kept]

    def documents(self) -> list[dict[str, Any]]:
        """Everything held (kept entries parents first, then the waiting ones): what to save so
        that a restart resolves the same way."""
        kept = sorted(self._nodes.values(), key=lambda n: (n.entry.seq, n.entry.hash))
        return [n.entry.document for n in kept] + [e.document for e in self._waiting.values()]

    def lost_by(self, device_id: str) -> list[dict[str, Any]]:
        """`device_id`'s adds and renames that lost a fork and whose effect the chain lacks: the
        device signs them again on the head (a removal that lost still counts, and a lost roll
        is owed anyway)."""
        view = self._refreshed()
        on_chain = {node.entry.hash for node in view.chain}
        lost = []
        for problem in view.problems:
            if problem.kind is not ProblemKind.FORK or problem.entry_hash is None:
                continue
            entry = self._nodes[problem.entry_hash].entry
            if entry.by != device_id or entry.hash in on_chain:
                continue
            member = view.members.get(entry.device_id)
            readd = entry.op is Op.ADD and member is None and entry.device_id not in view.removed
            rename = entry.op is Op.RENAME and member is not None and member.name != entry.name
            if readd or rename:
                lost.append(entry.document)
        return lost

    def admission_of(self, device_id: str) -> dict[str, Any] | None:
        """The entry on the chain that admitted `device_id` (None: not admitted there)."""
        for node in self._refreshed().chain:
            if node.entry.device_id == device_id and node.entry.op in (Op.ADD, Op.GENESIS):
                return node.entry.document
        return None

    def holds(self, entry_hash_: str) -> bool:
        """Whether an entry is kept or waiting (what `documents` returns)."""
        return entry_hash_ in self._nodes or entry_hash_ in self._waiting

    def kept_hashes(self) -> frozenset[str]:
        """The hashes of the kept entries (cheap: no documents are built)."""
        return frozenset(self._nodes)

    def contains(self, entry_hash_: str) -> bool:
        """Whether an entry is kept (a head another device names, for example)."""
        return entry_hash_ in self._nodes

    @property
    def problems(self) -> list[Problem]:
        """Refusals (the latest MAX_REJECTIONS_KEPT), then the findings of the resolution."""
        return [*self._rejected, *self._refreshed().problems]

    @property
    def pending(self) -> list[str]:
        """Hashes of entries waiting for a parent (or the pin) that has not arrived: normal
        mid-sync; for long, a sign that the server withholds or made something up."""
        return sorted(self._waiting)

    def report_overdue(self, now: float, after: float) -> list[Problem]:
        """Report, once each, the entries that have waited `after` seconds for their parent.

        Once the genesis is pinned, an entry whose parent stays away was either made up (it
        extends something the server never had) or hangs on an entry the server deleted or
        withholds: this device cannot judge it, and an entry that is never judged would never
        be reported. So it is reported (counted as refused: `overdue`), but it keeps waiting in
        the bounded pool: if the withheld parent comes after all, it is adopted as usual.
        Before the pin everything waits for it and nothing is overdue. The clock starts when
        this is first called for an entry (after a restart: again)."""
        if self._genesis_hash is None:
            return []
        self._parked_at = {h: self._parked_at.get(h, now) for h in self._waiting}
        self._overdue &= set(self._waiting)
        problems: list[Problem] = []
        for h, since in self._parked_at.items():
            if now - since < after or h in self._overdue:
                continue
            self._overdue.add(h)
            reason = (
                f"its parent {str(self._waiting[h].prev)[:16]} did not arrive in "
                f"{after / 60:.0f} minutes (made up, or it extends an entry the server deleted "
                "or hides)"
            )
            problems.extend(self._refuse(Problem(h, reason, ProblemKind.OVERDUE)))
        return problems

    # Internals: keeping

    def _refuse(self, problem: Problem) -> list[Problem]:
        self.refused_total += 1
        self._rejected.append(problem)
        if len(self._rejected) > MAX_REJECTIONS_KEPT:
            del self._rejected[0]
        return [problem]

    def _park(self, entry: Entry) -> list[Problem]:
        self._waiting[entry.hash] = entry
        self.changes += 1
        if len(self._waiting) <= MAX_WAITING:
            return []
        dropped, _ = self._waiting.popitem(last=False)
        if dropped in self._overdue:  # (reported already)
            self._overdue.discard(dropped)
            return []
        reason = "waited for an entry that never came; dropped for newer ones"
        return self._refuse(Problem(dropped, reason, ProblemKind.WAITING_DROPPED))

    def _keep_genesis(self, entry: Entry) -> list[Problem]:
        node = _genesis_node(entry)
        if isinstance(node, str):
            return self._refuse(Problem(entry.hash, node, ProblemKind.INVALID))
        self._nodes[entry.hash] = node
        self._dirty = True
        self.changes += 1
        return self._adopt_waiting(entry.hash)

    def _attach(self, entry: Entry) -> list[Problem]:
        assert entry.prev is not None
        parent = self._nodes[entry.prev]
        reason = _judge(entry, parent)
        if reason is not None:
            return self._refuse(Problem(entry.hash, reason, ProblemKind.INVALID))
        slot = (entry.by, entry.seq)
        if self._per_signer_seq.get(slot, 0) >= MAX_PER_SIGNER_SEQ:
            reason = f"{entry.by} already has {MAX_PER_SIGNER_SEQ} entries at seq {entry.seq}"
            return self._refuse(Problem(entry.hash, reason, ProblemKind.FULL))
        if self._per_signer.get(entry.by, 0) >= MAX_PER_SIGNER and entry.op is not Op.REMOVE:
            reason = f"{entry.by} already signed {MAX_PER_SIGNER} entries; only removals are kept"
            return self._refuse(Problem(entry.hash, reason, ProblemKind.FULL))
        if len(self._nodes) >= MAX_ENTRIES and entry.op is not Op.REMOVE:
            reason = f"the log holds {MAX_ENTRIES} entries; only removals are kept"
            return self._refuse(Problem(entry.hash, reason, ProblemKind.FULL))
        self._per_signer_seq[slot] = self._per_signer_seq.get(slot, 0) + 1
        self._per_signer[entry.by] = self._per_signer.get(entry.by, 0) + 1
        self._nodes[entry.hash] = _after(entry, parent)
        self._children.setdefault(entry.prev, []).append(entry.hash)
        self._dirty = True
        self.changes += 1
        return self._adopt_waiting(entry.hash)

    def _adopt_waiting(self, parent_hash: str) -> list[Problem]:
        """Attach what waited for `parent_hash`, and below it (bounded: each entry once)."""
        problems: list[Problem] = []
        queue = [parent_hash]
        while queue:
            parent = queue.pop()
            for h in [h for h, e in self._waiting.items() if e.prev == parent]:
                entry = self._waiting.pop(h)
                self.changes += 1
                problems.extend(self._attach(entry))
                if h in self._nodes:
                    queue.append(h)
        return problems

    # Internals: resolving

    def _refreshed(self) -> _View:
        self._refresh()
        return self._view

    def _refresh(self) -> None:
        if self._dirty:
            self._view = self._resolve()
            self._dirty = False

    def _is_ancestor(self, ancestor: str, of: str) -> bool:
        """Whether `ancestor` lies on the path from the genesis to `of` (itself included)."""
        target = self._nodes[ancestor].entry.seq
        current: str | None = of
        while current is not None and current in self._nodes:
            node = self._nodes[current].entry
            if node.seq < target:
                return False
            if current == ancestor:
                return True
            current = node.prev
        return False

    def _label_removals(self, trusted: set[str]) -> dict[str, Label]:
        """Removal wins, settled as in an argumentation framework (grounded semantics): a
        removal is defeated by a removal of its signer that is not below it. It counts (IN)
        when all its defeaters are OUT, and is OUT when one of them counts. What is left is a
        cycle of devices removing each other at the same time, or hangs on one: a 2-cycle (or
        longer) is a CONFLICT, whose devices are all out; what merely hangs on a conflict is
        OUT. Removals in `trusted` are never defeated (`_trusted_removals`)."""
        removals = self._removals()
        by_target: dict[str, list[Entry]] = {}
        for r in removals:
            by_target.setdefault(r.device_id, []).append(r)
        defeaters = {
            r.hash: []
            if r.hash in trusted
            else [d.hash for d in by_target.get(r.by, []) if not self._is_ancestor(r.hash, d.hash)]
            for r in removals
        }
        labels: dict[str, Label] = {}

        def settle() -> None:
            for _ in range(len(removals) + 1):
                changed = False
                for r in removals:
                    if r.hash in labels:
                        continue
                    seen = [labels.get(d) for d in defeaters[r.hash]]
                    if any(s in (Label.IN, Label.CONFLICT) for s in seen):
                        labels[r.hash], changed = Label.OUT, True
                    elif all(s is Label.OUT for s in seen):
                        labels[r.hash], changed = Label.IN, True
                if not changed:
                    return

        settle()
        undecided = {r.hash for r in removals if r.hash not in labels}
        for h in undecided:
            if self._in_cycle(h, defeaters, undecided):
                labels[h] = Label.CONFLICT
        settle()
        for h in undecided - labels.keys():  # (defensive: settle labels everything left)
            labels[h] = Label.OUT
        return labels

    def _removals(self) -> list[Entry]:
        return [n.entry for n in self._nodes.values() if n.entry.op is Op.REMOVE]

    def apply(self, removals: Iterable[str]) -> None:
        """This device acted on these removals (it installed their key, dropped the device):
        a removal that arrives later cannot undo them here; it is reported as a conflict."""
        more = self._applied | frozenset(removals)
        if more != self._applied:
            self._applied = more
            self._dirty = True

    def counting_removals(self) -> list[str]:
        """Hashes of the removals that count here (to remember as applied)."""
        view = self._refreshed()
        return sorted({entry.hash for entry in view.removed.values()} & self._in_removals)

    @property
    def applied(self) -> frozenset[str]:
        return self._applied

    def _trusted_removals(self, removals: list[Entry]) -> set[str]:
        """This device's own removals (its user made them), those its own admission hangs
        below (its user paired it, in person, with a device on that branch), and those it
        already acted on (nothing a device acted on is undone silently)."""
        applied = {r.hash for r in removals if r.hash in self._applied}
        me = self._me
        if me is None:
            return applied
        admissions = [
            n.entry.hash
            for n in self._nodes.values()
            if n.entry.device_id == me and n.entry.op in (Op.ADD, Op.GENESIS)
        ]
        return applied | {
            r.hash
            for r in removals
            if r.by == me or any(self._is_ancestor(r.hash, a) for a in admissions)
        }

    @staticmethod
    def _in_cycle(start: str, defeaters: dict[str, list[str]], among: set[str]) -> bool:
        """Whether `start` is on a cycle of defeats within `among` (bounded DFS)."""
        stack = [d for d in defeaters[start] if d in among]
        seen: set[str] = set()
        while stack:
            current = stack.pop()
            if current == start:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(d for d in defeaters[current] if d in among)
        return False

    def _resolve(self) -> _View:
        problems = [
            Problem(
                h,
                "a device founded another identity for this account (a reset: someone said 'this"
                " is my first device' on a device that was not paired). If it was not you, someone"
                " with your mailbox password, or your provider, is trying to take over: this"
                " device ignores it",
                ProblemKind.FOREIGN,
            )
            for h in sorted(self._foreign)
        ]
        pinned = self._genesis_hash
        if pinned is None or pinned not in self._nodes:
            return replace(_EMPTY, problems=tuple(problems))
        trusted = self._trusted_removals(self._removals())
        labels = self._label_removals(trusted)
        self._in_removals = {h for h, label in labels.items() if label is Label.IN}
        if trusted:  # what a device that trusts nobody's removals in particular makes of them
            others = self._label_removals(set())
            disputed = sorted(h for h in trusted if others[h] is not Label.IN)
        else:
            disputed = []
        removed: dict[str, Entry] = {}
        for h in sorted(labels):
            entry = self._nodes[h].entry
            if labels[h] is Label.IN:
                removed.setdefault(entry.device_id, entry)
        for h in sorted(labels):
            entry = self._nodes[h].entry
            if labels[h] is Label.CONFLICT:
                removed.setdefault(entry.device_id, entry)
                problems.append(
                    Problem(
                        h,
                        f"devices {entry.by} and {entry.device_id} removed each other at the same"
                        " time: one of them is not yours; both are out of the account here. Pair"
                        " the one you still have again.",
                        ProblemKind.CONFLICT,
                    )
                )
        for h in disputed:
            entry = self._nodes[h].entry
            problems.append(
                Problem(
                    h,
                    f"{entry.device_id} answered its removal by {entry.by} by removing {entry.by}"
                    " at the same time: ignored here, but your other devices may count both out;"
                    " pair them again from this one",
                    ProblemKind.CONFLICT,
                )
            )
        void = self._void(pinned, labels, removed, problems)
        chain = self._main_chain(pinned, void, labels)
        members = {d: m for d, m in chain[-1].members.items() if d not in removed}
        self._equivocations(void, problems)
        for node in self._nodes.values():
            h, parent = node.entry.hash, node.entry.prev
            if parent is not None and h not in void and all(n.entry.hash != h for n in chain):
                problems.append(Problem(h, f"entry {h} lost a fork (a race)", ProblemKind.FORK))
        return _View(
            tuple(chain),
            members,
            chain[-1].account_key,
            removed,
            self._roll_owed(chain, removed),
            tuple(problems),
        )

    def _void(
        self,
        pinned: str,
        labels: dict[str, Label],
        removed: dict[str, Entry],
        problems: list[Problem],
    ) -> set[str]:
        """Entries that count for nothing: removals that do not count, entries a removed device
        signed concurrently with or after its removal, and everything below those."""
        counting: dict[str, list[str]] = {}  # device id -> the removals of it that count
        for h, label in labels.items():
            if label is not Label.OUT:
                counting.setdefault(self._nodes[h].entry.device_id, []).append(h)
        # The position of a device's first removal that counts: what it signed from there on is
        # an attack; what it signed before, on a branch that lost, was an ordinary race.
        out_at = {
            device: min(self._nodes[h].entry.seq for h in hashes)
            for device, hashes in counting.items()
        }
        void: set[str] = set()
        order = sorted(self._nodes.values(), key=lambda n: (n.entry.seq, n.entry.hash))
        for node in order:
            entry = node.entry
            if entry.hash == pinned:
                continue
            if entry.prev in void:
                void.add(entry.hash)
                continue
            if labels.get(entry.hash) in (Label.OUT, Label.CONFLICT):
                void.add(entry.hash)
                if labels[entry.hash] is Label.OUT:
                    problems.append(self._acted(entry))
                continue
            if entry.by in removed and not any(
                self._is_ancestor(entry.hash, r) for r in counting.get(entry.by, [])
            ):
                void.add(entry.hash)
                if entry.seq >= out_at.get(entry.by, 0):
                    problems.append(self._acted(entry))
        return void

    @staticmethod
    def _acted(entry: Entry) -> Problem:
        return Problem(
            entry.hash,
            f"{entry.by}, a removed device, signed a {entry.op} at seq {entry.seq} concurrently"
            " with or after its removal: ignored (it may be trying to get back in)",
            ProblemKind.REMOVED_ACTED,
        )

    def _main_chain(self, pinned: str, void: set[str], labels: dict[str, Label]) -> list[_Node]:
        """From the genesis, at each fork the child whose branch holds more counting removals
        (removal wins), then the longer one, then the smaller hash."""
        score: dict[str, tuple[int, int]] = {}
        for node in sorted(self._nodes.values(), key=lambda n: -n.entry.seq):
            h = node.entry.hash
            if h in void:
                continue
            best = (0, 0)
            for child in self._children.get(h, []):
                if child in score:
                    best = max(best, score[child])
            own = 1 if labels.get(h) is Label.IN else 0
            score[h] = (best[0] + own, best[1] + 1)
        chain = [self._nodes[pinned]]
        for _ in range(len(self._nodes)):
            children = [c for c in self._children.get(chain[-1].entry.hash, []) if c in score]
            if not children:
                break
            winner = min(children, key=lambda c: (-score[c][0], -score[c][1], c))
            chain.append(self._nodes[winner])
        return chain

    def _equivocations(self, void: set[str], problems: list[Problem]) -> None:
        seen: dict[tuple[str, int], str] = {}
        for node in sorted(self._nodes.values(), key=lambda n: (n.entry.seq, n.entry.hash)):
            entry = node.entry
            if entry.hash in void or entry.op is Op.GENESIS:
                continue
            first = seen.setdefault((entry.by, entry.seq), entry.hash)
            if first != entry.hash:
                problems.append(
                    Problem(
                        entry.hash,
                        f"{entry.by} signed two different entries at seq {entry.seq} ({first} and"
                        f" {entry.hash}): a device never does; its key may be in other hands",
                        ProblemKind.EQUIVOCATION,
                    )
                )

    @staticmethod
    def _roll_owed(chain: list[_Node], removed: dict[str, Entry]) -> bool:
        """Whether a device that is out was a member since the current key was set (so it
        holds that key): then a member must roll."""
        last_key = max(i for i, node in enumerate(chain) if node.entry.account_key is not None)
        knew: set[str] = set()
        for node in chain[last_key:]:
            knew.update(node.members)
        return bool((knew - set(chain[last_key].entry.out)) & removed.keys())


# --- Building --------------------------------------------------------------------------------


def genesis(
    device_id: str, keys: DeviceKeys, name: str, account_key_fpr: str, now: float
) -> dict[str, Any]:
    """The first entry, made by the founding device; its hash is what every device pins."""
    document = {
        "v": FORMAT,
        "seq": 0,
        "prev": None,
        "op": Op.GENESIS.value,
        "device_id": device_id,
        "keys": keys.public.to_json(),
        "name": name,
        "account_key": normalise_fingerprint(account_key_fpr),
        "by": device_id,
        "at": int(now),
    }
    return _signed(document, keys)


def admit(
    log: DeviceLog,
    signer_id: str,
    signer_keys: DeviceKeys,
    new_device_id: str,
    new_public: DevicePublic,
    name: str,
    now: float,
) -> dict[str, Any]:
    """A member admits a newly paired device, extending the current head."""
    if log.is_member(new_device_id):
        raise ValueError(f"{new_device_id} is already a member")
    fields = {"op": Op.ADD.value, "device_id": new_device_id, "keys": new_public.to_json()}
    return _extend(log, signer_id, signer_keys, {**fields, "name": name, "account_key": None}, now)


def remove(
    log: DeviceLog,
    signer_id: str,
    signer_keys: DeviceKeys,
    device_id: str,
    now: float,
    account_key_fpr: str | None = None,
) -> dict[str, Any]:
    """A member removes a device, e.g. one that was lost or retired, and names the new account
    key in the same entry (so nobody can deliver the removal and withhold the roll); a device
    that leaves removes itself and names none (it would know it)."""
    subject = log.members().get(device_id)
    if subject is None:
        raise ValueError(f"{device_id} is not a member")
    if (device_id == signer_id) != (account_key_fpr is None):
        raise ValueError("removing another device names the new account key; leaving does not")
    key = None if account_key_fpr is None else normalise_fingerprint(account_key_fpr)
    fields = {"op": Op.REMOVE.value, "device_id": device_id, "name": subject.name}
    return _extend(log, signer_id, signer_keys, {**fields, "account_key": key}, now)


def rename(
    log: DeviceLog, signer_id: str, signer_keys: DeviceKeys, device_id: str, name: str, now: float
) -> dict[str, Any]:
    """A member renames a device; the log's name is what every device shows."""
    if device_id not in log.members():
        raise ValueError(f"{device_id} is not a member")
    fields = {"op": Op.RENAME.value, "device_id": device_id, "name": name, "account_key": None}
    return _extend(log, signer_id, signer_keys, fields, now)


def roll(
    log: DeviceLog, signer_id: str, signer_keys: DeviceKeys, account_key_fpr: str, now: float
) -> dict[str, Any]:
    """A member records that the account now uses a new OpenPGP key (the roll names its signer).
    Devices that are out but still in the head's state (their removal counts on another branch)
    are named in `out`: the roller left them out of the key, so no roll is owed for them."""
    signer = log.members().get(signer_id)
    if signer is None:
        raise ValueError(f"{signer_id} is not a member with these keys")
    fields: dict[str, Any] = {"op": Op.ROLL.value, "device_id": signer_id, "name": signer.name}
    fields["account_key"] = normalise_fingerprint(account_key_fpr)
    out = log.out_on_head()[:MAX_OUT]
    if out:
        fields["out"] = out
    return _extend(log, signer_id, signer_keys, fields, now)


def _extend(
    log: DeviceLog,
    signer_id: str,
    signer_keys: DeviceKeys,
    fields: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """Local misuse (not a member, wrong keys, nothing to extend) is a ValueError: we never
    publish an entry that every other device would reject."""
    head_hash, head_seq = log.head_hash, log.head_seq
    if head_hash is None or head_seq is None:
        raise ValueError("the log has no verified chain to extend")
    signer = log.members().get(signer_id)
    if signer is None or signer.keys != signer_keys.public:
        raise ValueError(f"{signer_id} is not a member with these keys")
    if fields["op"] == Op.REMOVE.value and len(log.members()) == 1:
        raise ValueError("removing the last member would leave nobody to sign")
    document = {
        **fields,
        "v": FORMAT,
        "seq": head_seq + 1,
        "prev": head_hash,
        "by": signer_id,
        "at": int(now),
    }
    return _signed(document, signer_keys)


def _signed(document: dict[str, Any], keys: DeviceKeys) -> dict[str, Any]:
    signed = sign_document(document, keys)
    try:
        parse_entry(signed)
    except MalformedEntry as exc:
        raise ValueError(f"not a valid log entry: {exc}") from None
    return signed
