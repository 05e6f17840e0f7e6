"""Autocrypt Level 1 peer state: header parsing, the update rules, the recommendation, and a
deterministic merge so that several devices converge on the same `peers` table.

Pure: no I/O and no OpenPGP library. The clock is passed in (`now`, UTC seconds), and whether
some keydata is a usable OpenPGP key is decided by the caller (`key_ok`).

Spec references are to https://autocrypt.org/level1.html (version 1.1).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from email.parser import HeaderParser
from email.policy import compat32
from typing import Any, Literal

PreferEncrypt = Literal["mutual", "nopreference"]
Recommendation = Literal["disable", "discourage", "available", "encrypt"]
# Whether keydata is a usable OpenPGP key for an address, and what of it to keep: the caller's
# OpenPGP adapter returns the key cut to its minimal form (that address's user id and one
# encryption subkey: a user id for any other address is never stored or handed on), or None.
KeyCheck = Callable[[bytes, str], bytes | None]
# Whether a stored key is still usable now (revoked or expired keys count as absent).
KeyUsable = Callable[[bytes], bool]

MAX_HEADER_BYTES = 10 * 1024  # spec: headers above 10 KiB (prefix and folding included) are invalid
MAX_HEADER_BLOCK_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 200  # logical header fields (a folded field counts once)
MAX_GOSSIP_HEADERS = 100  # Autocrypt-Gossip fields read from one message (one per recipient)
MAX_JSON_KEY_BYTES = MAX_HEADER_BYTES  # no valid header can carry a larger key
MAX_TIMESTAMP = 2**40
DISCOURAGE_AFTER = (
    35 * 24 * 3600
)  # spec: autocrypt_timestamp more than 35 days older than last_seen

_PREFIX = "Autocrypt: "
_ATTR_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_WHITESPACE_RE = re.compile(r"\s+")
_FORBIDDEN_ADDR_RE = re.compile(r"[\s;=\x00-\x1f\x7f]")


class InvalidHeader(ValueError):
    """An Autocrypt (or Autocrypt-Gossip) header value that Level 1 must treat as invalid."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidMessage(ValueError):
    """A header block beyond the size bounds."""


def canonical_addr(addr: str) -> str:
    """Spec appendix: compare addresses lower-cased (IDNA of the domain is not done here)."""
    return addr.strip().lower()


@dataclass(frozen=True)
class AutocryptHeader:
    addr: str  # canonicalized
    prefer_encrypt: PreferEncrypt
    keydata: bytes


def parse_header(value: str) -> AutocryptHeader:
    """Parse the value of an ``Autocrypt:`` header (without the ``Autocrypt:`` name)."""
    if len(_PREFIX.encode()) + len(value.encode("utf-8", "surrogateescape")) > MAX_HEADER_BYTES:
        raise InvalidHeader("header above 10 KiB")
    attrs: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue  # tolerate a trailing ";" and empty segments
        name, sep, val = part.partition("=")
        name = name.strip()
        if not sep or not _ATTR_NAME_RE.fullmatch(name):
            raise InvalidHeader(f"malformed attribute {part.strip()[:40]!r}")
        if name.startswith("_"):
            continue  # non-critical: ignored
        if name not in ("addr", "prefer-encrypt", "keydata"):
            raise InvalidHeader(f"unsupported critical attribute {name!r}")
        if name in attrs:
            raise InvalidHeader(f"duplicate attribute {name!r}")
        attrs[name] = val
    if "addr" not in attrs:
        raise InvalidHeader("missing addr")
    if "keydata" not in attrs:
        raise InvalidHeader("missing keydata")
    addr = canonical_addr(attrs["addr"])
    if not addr or _FORBIDDEN_ADDR_RE.search(addr) or "@" not in addr:
        raise InvalidHeader("bad addr")
    try:
        keydata = base64.b64decode(_WHITESPACE_RE.sub("", attrs["keydata"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidHeader("keydata is not base64") from exc
    if not keydata:
        raise InvalidHeader("empty keydata")
    # Spec: only "mutual" means mutual; any other value (or none) is read as nopreference.
    prefer: PreferEncrypt = (
        "mutual" if attrs.get("prefer-encrypt", "").strip() == "mutual" else "nopreference"
    )
    return AutocryptHeader(addr=addr, prefer_encrypt=prefer, keydata=keydata)


def outgoing_header(addr: str, keydata: bytes, prefer_mutual: bool) -> str:
    """The value for an outgoing ``Autocrypt:`` header, unfolded (the caller's mail library folds)."""
    if not addr or _FORBIDDEN_ADDR_RE.search(addr) or "@" not in addr:
        raise ValueError("bad addr")
    if not keydata:
        raise ValueError("empty keydata")
    parts = [f"addr={addr}"]
    if prefer_mutual:
        parts.append("prefer-encrypt=mutual")
    parts.append("keydata=" + base64.b64encode(keydata).decode("ascii"))  # MUST be last
    value = "; ".join(parts)
    if len(_PREFIX) + len(value.encode()) > MAX_HEADER_BYTES:
        raise ValueError("Autocrypt header would exceed 10 KiB")
    return value


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageInfo:
    from_addrs: tuple[str, ...]  # every address of every From field, canonicalized
    date: int | None  # UTC seconds, None if missing or unparsable
    content_type: str  # "maintype/subtype", lower-case; "text/plain" when absent
    auto_submitted: str | None
    autocrypt: tuple[str, ...]  # raw values of all Autocrypt fields
    to_cc: tuple[str, ...]  # canonicalized
    reply_to: tuple[str, ...] = ()
    gossip: tuple[str, ...] = ()  # raw Autocrypt-Gossip values; count only from an encrypted part

    @property
    def from_addr(self) -> str | None:
        """The sender, when the From header names exactly one address."""
        return self.from_addrs[0] if len(self.from_addrs) == 1 else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _addresses(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        canonical_addr(address)
        for _name, address in email.utils.getaddresses(list(values))
        if address.strip()
    )


def _parse_date(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        stamp = int(parsed.timestamp())  # naive (-0000) is taken as UTC by email.utils
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return stamp if 0 <= stamp < MAX_TIMESTAMP else None


def header_block(raw: bytes) -> bytes:
    """The header block of an entity (everything before the first empty line)."""
    cuts = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[: min(cuts)] if cuts else raw


def message_headers(raw_header_block: bytes) -> MessageInfo:
    """Extract what the update rules need from a message's header block (body ignored).

    The block is decoded as UTF-8 before parsing: RFC 6532 allows raw UTF-8 in addresses
    (``x@könig.net``), and `email`'s bytes parser would turn each such byte into U+FFFD, so the
    peer would be stored under a mangled address. Bytes that are not UTF-8 still become U+FFFD,
    which no real address or key user id matches.
    """
    block = header_block(raw_header_block)
    if len(block) > MAX_HEADER_BLOCK_BYTES:
        raise InvalidMessage("header block above 64 KiB")
    fields = sum(1 for line in block.splitlines() if line and line[:1] not in (b" ", b"\t"))
    if fields > MAX_HEADER_FIELDS:
        raise InvalidMessage(f"more than {MAX_HEADER_FIELDS} header fields")
    text = block.decode("utf-8", "replace")
    msg = HeaderParser(policy=compat32).parsestr(text + "\r\n\r\n")

    def all_of(name: str) -> list[str]:
        return [_text(v) for v in (msg.get_all(name) or [])]

    dates = all_of("Date")
    auto = all_of("Auto-Submitted")
    return MessageInfo(
        from_addrs=_addresses(all_of("From")),
        date=_parse_date(dates[0]) if len(dates) == 1 else None,
        content_type=msg.get_content_type().lower(),
        auto_submitted=auto[0].strip().lower() if auto else None,
        autocrypt=tuple(all_of("Autocrypt")),
        to_cc=_addresses(all_of("To") + all_of("Cc")),
        reply_to=_addresses(all_of("Reply-To")),
        gossip=tuple(all_of("Autocrypt-Gossip")[:MAX_GOSSIP_HEADERS]),
    )


def protected_view(outer: MessageInfo, inner: MessageInfo) -> MessageInfo | None:
    """The message as Autocrypt reads it once its encrypted part is open; None when the inner
    part names another sender than the outer From (then only the outer headers count).

    Delta Chat and Level 1 gossip put headers only in the encrypted part, so the inner root
    entity's headers (protected headers) take precedence: its Autocrypt headers replace the outer
    ones when it has any; its Date replaces the outer Date when it has exactly one that parses
    (Delta Chat shifts the outer Date 35 to 107 hours back, so the inner one is the real one;
    either way `effective_date` caps it at the time of receipt). Recipients are the union of
    outer and inner To/Cc/Reply-To (Delta Chat's outer To is ``"hidden-recipients": ;``).
    Gossip comes only from the inner part: an outer Autocrypt-Gossip header never counts.
    """
    if inner.from_addrs and inner.from_addrs != outer.from_addrs:
        return None
    return replace(
        outer,
        date=inner.date if inner.date is not None else outer.date,
        auto_submitted=(
            inner.auto_submitted if inner.auto_submitted is not None else outer.auto_submitted
        ),
        autocrypt=inner.autocrypt if inner.autocrypt else outer.autocrypt,
        to_cc=_union(outer.to_cc, inner.to_cc),
        reply_to=_union(outer.reply_to, inner.reply_to),
        gossip=inner.gossip,
    )


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def effective_date(info: MessageInfo, now: int) -> int:
    """The Date header, or the time of receipt if the Date is missing or in the future."""
    return now if info.date is None or info.date > now else info.date


# --- peer state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerState:
    addr: str
    last_seen: int | None = None
    autocrypt_timestamp: int | None = None
    public_key: bytes | None = None
    prefer_encrypt: PreferEncrypt = "nopreference"
    gossip_timestamp: int | None = None
    gossip_key: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        def b64(key: bytes | None) -> str | None:
            return None if key is None else base64.b64encode(key).decode("ascii")

        return {
            "addr": self.addr,
            "last_seen": self.last_seen,
            "autocrypt_timestamp": self.autocrypt_timestamp,
            "public_key": b64(self.public_key),
            "prefer_encrypt": self.prefer_encrypt,
            "gossip_timestamp": self.gossip_timestamp,
            "gossip_key": b64(self.gossip_key),
        }

    @classmethod
    def from_json(cls, data: Any) -> PeerState:
        """Strict: the document may come from another device through the server."""
        if not isinstance(data, dict) or set(data) != set(_JSON_FIELDS):
            raise ValueError("peer state: wrong fields")
        addr = data["addr"]
        if not isinstance(addr, str) or addr != canonical_addr(addr) or not addr:
            raise ValueError("peer state: bad addr")
        prefer = data["prefer_encrypt"]
        if prefer not in ("mutual", "nopreference"):
            raise ValueError("peer state: bad prefer_encrypt")
        state = cls(
            addr=addr,
            last_seen=_json_time(data["last_seen"]),
            autocrypt_timestamp=_json_time(data["autocrypt_timestamp"]),
            public_key=_json_key(data["public_key"]),
            prefer_encrypt=prefer,
            gossip_timestamp=_json_time(data["gossip_timestamp"]),
            gossip_key=_json_key(data["gossip_key"]),
        )
        if (state.autocrypt_timestamp is None) != (state.public_key is None):
            raise ValueError("peer state: autocrypt_timestamp and public_key go together")
        if (state.gossip_timestamp is None) != (state.gossip_key is None):
            raise ValueError("peer state: gossip_timestamp and gossip_key go together")
        return state


_JSON_FIELDS = tuple(PeerState.__dataclass_fields__)


def _json_time(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < MAX_TIMESTAMP:
        raise ValueError("peer state: bad timestamp")
    return value


def _json_key(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_JSON_KEY_BYTES * 2:
        raise ValueError("peer state: bad key")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("peer state: key is not base64") from exc
    if not key or len(key) > MAX_JSON_KEY_BYTES:
        raise ValueError("peer state: bad key size")
    return key


_AUTO_SUBMITTED_RE = re.compile(r"\s*(?:\([^()]*\)\s*)*([A-Za-z0-9-]+)")


def _auto_replied(value: str | None) -> bool:
    """RFC 3834 section 5: the keyword may carry comments and parameters, as in the common
    ``Auto-Submitted: auto-replied (vacation)`` of Sieve and Cyrus vacation responders."""
    match = _AUTO_SUBMITTED_RE.match(value) if value is not None else None
    return match is not None and match.group(1).lower() == "auto-replied"


def _ignored(info: MessageInfo) -> bool:
    return (
        info.from_addr is None
        or info.content_type == "multipart/report"
        or _auto_replied(info.auto_submitted)
    )


def _the_valid_header(info: MessageInfo, key_ok: KeyCheck) -> AutocryptHeader | None:
    """The single valid header for the sender; None if there is none or more than one."""
    valid: list[AutocryptHeader] = []
    for value in info.autocrypt:
        try:
            header = parse_header(value)
        except InvalidHeader:
            continue
        if header.addr != info.from_addr:
            continue
        kept = key_ok(header.keydata, header.addr)
        if kept is not None:
            valid.append(replace(header, keydata=kept))
    return valid[0] if len(valid) == 1 else None


def update_from_message(
    state: PeerState | None, info: MessageInfo, now: int, *, key_ok: KeyCheck
) -> PeerState | None:
    """Spec "Updating Autocrypt Peer State" for the sender of `info`; `state` is peers[from]."""
    if _ignored(info):
        return state
    sender = info.from_addr
    assert sender is not None  # checked by _ignored
    if state is not None and state.addr != sender:
        raise ValueError("state is for another address than the message's From")
    date = effective_date(info, now)
    current = state if state is not None else PeerState(addr=sender)
    if current.autocrypt_timestamp is not None and date < current.autocrypt_timestamp:
        return state  # step 1: older than the youngest Autocrypt header seen
    if current.last_seen is None or date > current.last_seen:
        current = replace(current, last_seen=date)  # step 2
    header = _the_valid_header(info, key_ok)
    if header is None:
        return current  # step 3
    return replace(  # steps 4-6
        current,
        autocrypt_timestamp=date,
        public_key=header.keydata,
        prefer_encrypt=header.prefer_encrypt,
    )


def gossip_candidates(
    info: MessageInfo, gossip_values: Iterable[str], *, key_ok: KeyCheck
) -> dict[str, bytes]:
    """Valid ``Autocrypt-Gossip`` values (from the encrypted part) for addresses in To/Cc/Reply-To.

    An address gossiped more than once in the same message is dropped, as for Autocrypt headers.
    """
    allowed = set(info.to_cc) | set(info.reply_to)
    found: dict[str, list[bytes]] = {}
    for value in gossip_values:
        try:
            header = parse_header(value)
        except InvalidHeader:
            continue
        if header.addr not in allowed:
            continue
        kept = key_ok(header.keydata, header.addr)
        if kept is not None:
            found.setdefault(header.addr, []).append(kept)
    return {addr: keys[0] for addr, keys in found.items() if len(keys) == 1}


def update_from_gossip(
    state: PeerState | None, addr: str, keydata: bytes, effective_date: int
) -> PeerState:
    """Spec "Updating Autocrypt Peer State from Key Gossip", steps 2-4 (step 1 is
    `gossip_candidates`): a gossip_timestamp more recent than the message's date wins."""
    addr = canonical_addr(addr)
    if state is not None and state.addr != addr:
        raise ValueError("state is for another address")
    current = state if state is not None else PeerState(addr=addr)
    if current.gossip_timestamp is not None and current.gossip_timestamp > effective_date:
        return current
    return replace(current, gossip_timestamp=effective_date, gossip_key=keydata)


def contributions(
    info: MessageInfo,
    now: int,
    *,
    key_ok: KeyCheck,
    gossip_values: Iterable[str] = (),
) -> list[PeerState]:
    """What one message says, as peer states to `merge` into the table (sender first).

    Merging these gives exactly the spec's update rules (step 1 drops what is older than the
    autocrypt_timestamp; last_seen only grows; a newer header replaces key and preference
    together), except for equal dates, where the spec lets the last message processed win and
    `merge` picks by a hash instead, so that the result does not depend on arrival order.
    Gossip counts only from the encrypted part, so `gossip_values` are the caller's to find.
    """
    if _ignored(info):
        return []
    sender = info.from_addr
    assert sender is not None  # checked by _ignored
    date = effective_date(info, now)
    header = _the_valid_header(info, key_ok)
    states = [
        PeerState(addr=sender, last_seen=date)
        if header is None
        else PeerState(
            addr=sender,
            last_seen=date,
            autocrypt_timestamp=date,
            public_key=header.keydata,
            prefer_encrypt=header.prefer_encrypt,
        )
    ]
    for addr, keydata in sorted(gossip_candidates(info, gossip_values, key_ok=key_ok).items()):
        if addr != sender:
            states.append(PeerState(addr=addr, gossip_timestamp=date, gossip_key=keydata))
    return states


# --- the account's own preference -----------------------------------------------------------
#
# The account's prefer-encrypt setting is one value for all its devices. It travels as the
# account's own row in the peer table, which mail never writes (a device ignores mail from its
# own account, and gossip about it): key sync then carries it to every member, signed by the
# device that sent it, acknowledged and resent like any row, and `merge` keeps the newest, so a
# replayed older row changes nothing. The row's key is the account key at the time it was set;
# only its preference and timestamp are read.


def own_setting(
    current: PeerState | None, addr: str, prefer: PreferEncrypt, keydata: bytes, now: int
) -> PeerState:
    """The own row saying `prefer`, dated after `current` so that it wins every merge with it
    even when the clock has not moved (two changes in one second) or went back."""
    addr = canonical_addr(addr)
    if current is not None and current.addr != addr:
        raise ValueError("state is for another address")
    previous = None if current is None else current.autocrypt_timestamp
    at = now if previous is None else max(now, previous + 1)
    if not 0 <= at < MAX_TIMESTAMP:
        raise ValueError("timestamp out of range")
    return PeerState(addr=addr, autocrypt_timestamp=at, public_key=keydata, prefer_encrypt=prefer)


def own_preference(state: PeerState | None) -> tuple[PreferEncrypt, int | None]:
    """The account's setting and when it was made; `nopreference` until someone sets it (the
    Level 1 default)."""
    if state is None or state.autocrypt_timestamp is None:
        return "nopreference", None
    return state.prefer_encrypt, state.autocrypt_timestamp


# --- merge between devices ------------------------------------------------------------------


def _rank(timestamp: int | None, part: Sequence[Any]) -> tuple[int, bytes, bytes]:
    """Total order on a state part: timestamp first, then a hash of the canonical part."""
    encoded = json.dumps(
        [
            base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
            for v in (timestamp, *part)
        ],
        separators=(",", ":"),
    ).encode()
    return (-1 if timestamp is None else timestamp, hashlib.sha256(encoded).digest(), encoded)


def merge(a: PeerState, b: PeerState) -> PeerState:
    """Join of two devices' states for one peer: commutative, associative and idempotent.

    The Autocrypt part (timestamp, key, preference) and the gossip part (timestamp, key) are each
    taken whole from whichever side ranks higher; last_seen is the maximum.
    """
    if a.addr != b.addr:
        raise ValueError("cannot merge states of different addresses")
    ac_a = _rank(a.autocrypt_timestamp, (a.public_key, a.prefer_encrypt))
    ac_b = _rank(b.autocrypt_timestamp, (b.public_key, b.prefer_encrypt))
    ac = a if ac_a >= ac_b else b
    go_a = _rank(a.gossip_timestamp, (a.gossip_key,))
    go_b = _rank(b.gossip_timestamp, (b.gossip_key,))
    go = a if go_a >= go_b else b
    seen = [t for t in (a.last_seen, b.last_seen) if t is not None]
    return PeerState(
        addr=a.addr,
        last_seen=max(seen) if seen else None,
        autocrypt_timestamp=ac.autocrypt_timestamp,
        public_key=ac.public_key,
        prefer_encrypt=ac.prefer_encrypt,
        gossip_timestamp=go.gossip_timestamp,
        gossip_key=go.gossip_key,
    )


# --- recommendation -------------------------------------------------------------------------


def recommend(
    state: PeerState | None,
    now: int,
    reply_to_encrypted: bool,
    own_prefer_mutual: bool,
    *,
    key_usable: KeyUsable | None = None,
) -> Recommendation:
    """Spec "Recommendations for single-recipient messages".

    `key_usable` lets the caller treat revoked or expired keys (at `now`) as absent, as the spec
    asks; the Level 1 rules themselves do not use `now`.
    """
    del now  # kept in the signature for the caller's key_usable; see above
    if state is None:
        return "disable"
    public_key = state.public_key
    gossip_key = state.gossip_key
    if key_usable is not None:
        public_key = public_key if public_key is not None and key_usable(public_key) else None
        gossip_key = gossip_key if gossip_key is not None and key_usable(gossip_key) else None
    if public_key is None and gossip_key is None:
        return "disable"
    stale = (
        state.autocrypt_timestamp is not None
        and state.last_seen is not None
        and state.last_seen - state.autocrypt_timestamp > DISCOURAGE_AFTER
    )
    # Only a gossip key, or a stale Autocrypt key: discourage.
    preliminary: Recommendation = "discourage" if public_key is None or stale else "available"
    if reply_to_encrypted:
        return "encrypt"  # preliminary is available or discourage here
    if preliminary == "available" and state.prefer_encrypt == "mutual" and own_prefer_mutual:
        return "encrypt"
    return preliminary


def recommend_many(recommendations: Sequence[Recommendation]) -> Recommendation:
    """Spec "Recommendations for messages to multiple addresses"; no recipients gives disable."""
    if not recommendations or "disable" in recommendations:
        return "disable"
    if all(r == "encrypt" for r in recommendations):
        return "encrypt"
    if "discourage" in recommendations:
        return "discourage"
    return "available"
