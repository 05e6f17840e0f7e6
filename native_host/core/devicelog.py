"""The device log: an append-only, hash-chained list of signed entries saying which devices belong to the account.

Pure: no I/O. Entries travel through the SMA folders, so the server (the adversary) decides
which of them a device sees and in what order; it may also forge, replay or withhold them. The
log therefore keeps every well-formed entry as a *candidate* and derives the verified chain from
the pinned genesis alone, as a function of the set of candidates: whatever order they came in,
every device that saw the same entries ends with the same chain, members and account key.

Trust is rooted in the pin (the genesis hash a device created itself, or received from the
device it paired with): an entry counts only if it hangs off that genesis through entries each
signed by a device that was a member at that point.
"""

from __future__ import annotations

import json
import re
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

MAX_CANDIDATES = 10_000  # entries kept in memory; beyond it new ones are refused and reported
MAX_ENTRY_BYTES = 1024  # canonical size; a legitimate entry is under 800 bytes
MAX_REJECTIONS_KEPT = 100  # malformed entries remembered for `problems` (all are returned)
MAX_NAME_CHARS = 64  # as for the names in announcements
MAX_INT = 2**40  # seq and at: the SMA schema's timestamp bound, far beyond any real value
SIGNATURE_BYTES = 64

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # OpenPGP v4, v5/v6
_NAME_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f]")
_REQUIRED = frozenset({"seq", "prev", "op", "device_id", "name", "account_key", "by", "at", "sig"})
_OPTIONAL = frozenset({"keys"})


class Op(StrEnum):
    GENESIS = "genesis"  # the first entry: the founding device, self-signed, and the account key
    ADD = "add"  # a member admits a new device
    REMOVE = "remove"  # a member removes a device (possibly itself)
    ROLL = "roll"  # a member records a new account key
    RENAME = "rename"  # a member gives a device (possibly itself) a new name


class ProblemKind(StrEnum):
    """Lets upstream tell an attack or corruption from the ordinary race of a fork."""

    MALFORMED = "malformed"  # not a log entry at all
    INVALID = "invalid"  # well-formed but does not verify where it claims to sit
    FORK = "fork"  # verifies, but a sibling with a smaller hash won the same position
    FOREIGN = "foreign"  # a genesis other than the pinned one
    FULL = "full"  # refused because the log holds MAX_CANDIDATES entries


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
    run away on garbage. Unknown members are refused (not ignored): they would be signed and
    hashed, yet mean nothing to us.
    """
    if not isinstance(value, dict):
        raise MalformedEntry("a log entry must be an object")
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
    _canonical_b64(value["sig"], SIGNATURE_BYTES, "sig")
    raw = canonical(value)
    if len(raw) > MAX_ENTRY_BYTES:
        raise MalformedEntry(f"entry is {len(raw)} bytes, over {MAX_ENTRY_BYTES}")
    entry = Entry(digest(raw), seq, prev, op, device_id, keys, name, account_key, by, at, raw)
    problem = _shape_problem(entry)
    if problem is not None:
        raise MalformedEntry(problem, entry.hash)
    return entry


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
    if (entry.op in (Op.GENESIS, Op.ROLL)) != (entry.account_key is not None):
        return (
            f"{entry.op} {'needs' if entry.op in (Op.GENESIS, Op.ROLL) else 'takes no'} account_key"
        )
    if entry.op is Op.ROLL and entry.device_id != entry.by:
        return "roll must name its signer as device_id"
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
class _View:
    """The verified result of one rebuild."""

    chain: tuple[Entry, ...]
    members: dict[str, Member]
    account_key: str | None
    problems: tuple[Problem, ...]
    pending: tuple[str, ...]


_EMPTY = _View((), {}, None, (), ())


def _genesis_problem(entry: Entry) -> str | None:
    """The pinned entry needs only its self-signature: the pin is what makes it trusted."""
    if entry.op is not Op.GENESIS:
        return f"the pinned entry is not a genesis but an {entry.op}"
    assert entry.keys is not None  # parse_entry: a genesis carries keys
    if not verify_document(entry.document, entry.keys):
        return "the pinned genesis's signature does not verify"
    return None


class _Replay:
    """Membership as of the head while walking the chain; lives only inside one rebuild."""

    def __init__(self, genesis: Entry) -> None:
        assert genesis.keys is not None  # parse_entry checked both
        assert genesis.account_key is not None
        self.head = genesis
        self.account_key: str = genesis.account_key
        self.members = {
            genesis.device_id: Member(genesis.device_id, genesis.keys, genesis.name, genesis.by, 0)
        }

    def judge(self, entry: Entry) -> str | None:
        """Why `entry` cannot follow the head, or None if it can."""
        if entry.seq != self.head.seq + 1:
            return f"seq {entry.seq} does not follow {self.head.seq}"
        signer = self.members.get(entry.by)
        if signer is None:
            return f"signed by {entry.by}, which is not a member"
        if not verify_document(entry.document, signer.keys):
            return f"signature by {entry.by} does not verify"
        subject = self.members.get(entry.device_id)
        if entry.op is Op.ADD:
            return None if subject is None else f"{entry.device_id} is already a member"
        if subject is None:
            return f"{entry.device_id} is not a member"
        if entry.keys is not None and entry.keys != subject.keys:
            return f"keys given for {entry.device_id} are not its keys"
        if entry.op is Op.REMOVE and len(self.members) == 1:
            return "removing the last member would leave nobody to sign"
        return None

    def apply(self, entry: Entry) -> None:
        if entry.op is Op.ADD:
            assert entry.keys is not None  # parse_entry
            self.members[entry.device_id] = Member(
                entry.device_id, entry.keys, entry.name, entry.by, entry.seq
            )
        elif entry.op is Op.REMOVE:
            del self.members[entry.device_id]
        elif entry.op is Op.ROLL:
            assert entry.account_key is not None  # parse_entry
            self.account_key = entry.account_key
        elif entry.op is Op.RENAME:
            member = self.members[entry.device_id]
            self.members[entry.device_id] = replace(member, name=entry.name)
        self.head = entry


class DeviceLog:
    """The candidates seen so far and the chain verified from them.

    Feed entries with `receive` (cheap: structure only), then `rebuild` (or just query: queries
    rebuild when something changed). `genesis_hash` None means not pinned yet: nothing verifies
    until `pin` is called.
    """

    def __init__(self, genesis_hash: str | None) -> None:
        if genesis_hash is not None and _HASH_RE.fullmatch(genesis_hash) is None:
            raise ValueError(f"not an entry hash: {genesis_hash!r}")
        self._genesis_hash = genesis_hash
        self._candidates: dict[str, Entry] = {}
        self._children: dict[str, set[str]] = {}  # prev -> hashes of the candidates naming it
        self._rejected: list[Problem] = []
        self._verdicts: dict[str, str | None] = {}  # see _walk: fixed once computed
        self._view = _EMPTY
        self._dirty = False
        self._reported: frozenset[Problem] = frozenset()

    # Feeding

    def receive(self, value: Any) -> list[Problem]:
        """Keep a well-formed entry as a candidate; a malformed one is reported here and dropped.

        Replays are free: an entry already held (same hash) changes nothing and is not reported.
        """
        try:
            entry = parse_entry(value)
        except MalformedEntry as exc:
            return self._reject(Problem(exc.entry_hash, str(exc), ProblemKind.MALFORMED))
        if entry.hash in self._candidates:
            return []
        if len(self._candidates) >= MAX_CANDIDATES:
            reason = f"the log already holds {MAX_CANDIDATES} entries; not kept"
            return self._reject(Problem(entry.hash, reason, ProblemKind.FULL))
        self._candidates[entry.hash] = entry
        if entry.prev is not None:
            self._children.setdefault(entry.prev, set()).add(entry.hash)
        self._dirty = True
        return []

    def receive_all(self, values: Iterable[Any]) -> list[Problem]:
        """A batch (one sync's worth): its malformed entries, then what the rebuild newly found."""
        problems = [problem for value in values for problem in self.receive(value)]
        return problems + self.rebuild()

    def pin(self, genesis_hash: str) -> None:
        """Fix the genesis once (a new device learns it from the device it paired with)."""
        if _HASH_RE.fullmatch(genesis_hash) is None:
            raise ValueError(f"not an entry hash: {genesis_hash!r}")
        if self._genesis_hash not in (None, genesis_hash):
            raise ValueError("the log is already pinned to another genesis")
        self._genesis_hash = genesis_hash
        self._dirty = True

    def rebuild(self) -> list[Problem]:
        """Bring the chain up to date; the problems that the previous rebuild did not report.

        Returning only new ones lets upstream raise one alert per problem, however often it
        rebuilds; `problems` still lists them all.
        """
        self._refresh()
        current = self._view.problems
        new = [problem for problem in current if problem not in self._reported]
        self._reported = frozenset(current)
        return new

    # Queries

    @property
    def genesis_hash(self) -> str | None:
        return self._genesis_hash

    @property
    def head_hash(self) -> str | None:
        chain = self._refreshed().chain
        return chain[-1].hash if chain else None

    @property
    def head_seq(self) -> int | None:
        chain = self._refreshed().chain
        return chain[-1].seq if chain else None

    @property
    def account_key(self) -> str | None:
        """The account's current OpenPGP fingerprint: the genesis one or the last roll's."""
        return self._refreshed().account_key

    def members(self) -> dict[str, Member]:
        return dict(self._refreshed().members)

    def is_member(self, device_id: str) -> bool:
        return device_id in self._refreshed().members

    def entries(self) -> list[dict[str, Any]]:
        """The verified chain in order: the snapshot to hand a newly paired device."""
        return [entry.document for entry in self._refreshed().chain]

    @property
    def problems(self) -> list[Problem]:
        """Everything ignored, with why: malformed (the first MAX_REJECTIONS_KEPT), invalid, lost
        forks, foreign genesis. Entries below an ignored one are ignored silently (it was reported)."""
        return [*self._rejected, *self._refreshed().problems]

    @property
    def pending(self) -> list[str]:
        """Hashes of candidates waiting for an entry (or the pin) that has not arrived. Normal
        mid-sync; after a full sync, a sign that the server withholds or made something up."""
        return list(self._refreshed().pending)

    # Internals

    def _reject(self, problem: Problem) -> list[Problem]:
        """Report it; remember it if there is room. A replay of a hashable one is not news."""
        if problem.entry_hash is not None and problem in self._rejected:
            return []
        if len(self._rejected) < MAX_REJECTIONS_KEPT:
            self._rejected.append(problem)
        return [problem]

    def _refreshed(self) -> _View:
        self._refresh()
        return self._view

    def _refresh(self) -> None:
        if self._dirty:
            self._view = self._walk()
            self._dirty = False

    def _walk(self) -> _View:
        """Follow the chain from the pinned genesis, taking at each step the valid child with
        the smallest hash (the fork rule: the same winner whatever order entries came in).

        An entry's ancestry is fixed by its hash chain, so the membership it is judged against
        is too: verdicts are cached and each signature is checked once. Each step consumes a
        distinct candidate, so the loop is bounded by their number.
        """
        problems: list[Problem] = []
        pinned = self._genesis_hash
        if pinned is not None:
            problems.extend(
                Problem(h, "genesis is not the pinned one; its log is ignored", ProblemKind.FOREIGN)
                for h, entry in sorted(self._candidates.items())
                if entry.op is Op.GENESIS and h != pinned
            )
        genesis = None if pinned is None else self._candidates.get(pinned)
        if pinned is None or genesis is None:
            return self._view_of((), None, {}, problems)
        if pinned not in self._verdicts:
            self._verdicts[pinned] = _genesis_problem(genesis)
        reason = self._verdicts[pinned]
        if reason is not None:
            problems.append(Problem(pinned, reason, ProblemKind.INVALID))
            return self._view_of((), None, {}, problems)
        replay = _Replay(genesis)
        chain = [genesis]
        for _ in range(len(self._candidates)):
            winner: str | None = None
            for h in sorted(self._children.get(replay.head.hash, ())):
                if h not in self._verdicts:
                    self._verdicts[h] = replay.judge(self._candidates[h])
                reason = self._verdicts[h]
                if reason is not None:
                    problems.append(Problem(h, reason, ProblemKind.INVALID))
                elif winner is None:
                    winner = h
                else:
                    problems.append(
                        Problem(h, f"fork: entry {h} lost to {winner}", ProblemKind.FORK)
                    )
            if winner is None:
                break
            replay.apply(self._candidates[winner])
            chain.append(self._candidates[winner])
        return self._view_of(tuple(chain), replay.account_key, replay.members, problems)

    def _view_of(
        self,
        chain: tuple[Entry, ...],
        account_key: str | None,
        members: dict[str, Member],
        problems: list[Problem],
    ) -> _View:
        settled = {entry.hash for entry in chain} | {p.entry_hash for p in problems if p.entry_hash}
        return _View(chain, members, account_key, tuple(problems), self._pending(settled))

    def _pending(self, settled: set[str]) -> tuple[str, ...]:
        """Candidates whose ancestry ends at a missing entry rather than at a settled one.

        Memoised walk up the prev links: linear overall. A prev cycle would need a SHA-256
        cycle; the bound is there anyway.
        """
        fate: dict[str, bool] = {}  # hash -> waiting for something missing
        for start in sorted(self._candidates):
            if start in settled or start in fate:
                continue
            path: list[str] = []
            current: str | None = start
            waiting = False
            for _ in range(len(self._candidates) + 1):
                if current is None or current not in self._candidates:
                    waiting = True
                    break
                if current in settled or current in fate:
                    waiting = fate.get(current, False)
                    break
                path.append(current)
                current = self._candidates[current].prev
            fate.update(dict.fromkeys(path, waiting))
        return tuple(sorted(h for h, waiting in fate.items() if waiting))


# --- Building --------------------------------------------------------------------------------


def genesis(
    device_id: str, keys: DeviceKeys, name: str, account_key_fpr: str, now: float
) -> dict[str, Any]:
    """The first entry, made by the founding device; its hash is what every device pins."""
    document = {
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
    log: DeviceLog, signer_id: str, signer_keys: DeviceKeys, device_id: str, now: float
) -> dict[str, Any]:
    """A member removes a device (itself included), e.g. one that was lost or retired."""
    subject = log.members().get(device_id)
    if subject is None:
        raise ValueError(f"{device_id} is not a member")
    fields = {"op": Op.REMOVE.value, "device_id": device_id, "name": subject.name}
    return _extend(log, signer_id, signer_keys, {**fields, "account_key": None}, now)


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
    """A member records that the account now uses a new OpenPGP key (the roll names its signer)."""
    signer = log.members().get(signer_id)
    if signer is None:
        raise ValueError(f"{signer_id} is not a member with these keys")
    fields = {"op": Op.ROLL.value, "device_id": signer_id, "name": signer.name}
    fields["account_key"] = normalise_fingerprint(account_key_fpr)
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
    document = {**fields, "seq": head_seq + 1, "prev": head_hash, "by": signer_id, "at": int(now)}
    return _signed(document, signer_keys)


def _signed(document: dict[str, Any], keys: DeviceKeys) -> dict[str, Any]:
    signed = sign_document(document, keys)
    try:
        parse_entry(signed)
    except MalformedEntry as exc:
        raise ValueError(f"not a valid log entry: {exc}") from None
    return signed
