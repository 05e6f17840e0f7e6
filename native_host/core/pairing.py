"""The pairing state machine: a new device (initiator) joins through an existing one (responder).

Pure: `step(pairing, event) -> (pairing, effects)`, with time and randomness passed in. The
transport (SMA inboxes), the signature check of each message and persistence are the caller's.

    initiator                                responder
    REQUESTED   -- request(commit(eph_N)) -->
                <-- accept(eph_E) ----------  ACCEPTED
    SHOWING     -- reveal(eph_N) ---------->  SHOWING  (commitment checked)
      both show SAS = HKDF(X25519(eph_N, eph_E), transcript); users compare
                                              approve -> key(sealed account key + log) --> (APPROVED)
    confirm + key -> COMPLETED (install)      log shows the new device -> COMPLETED

The commitment makes the responder pick eph_E before it can see eph_N, so an attacker in the
middle gets one guess at a 53-bit code per pairing. Any failed check ends the pairing in FAILED,
a terminal state that ignores everything after it: no retry without the user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from native_host.core import crypto
from native_host.core.crypto import DevicePublic, canonical, digest, hkdf
from native_host.errors import RemoteProtocolError
from native_host.ports import RandomBytes

PAIRING_TTL = 600  # ten minutes from the request
SAS_GROUPS = 4
MAX_SECRET_PAYLOAD = 256 * 1024


class Role(StrEnum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(StrEnum):
    REQUESTED = "requested"  # initiator: request sent, waiting for an accept
    ACCEPTED = "accepted"  # responder: accept sent, waiting for the reveal
    SHOWING = "showing"  # both: the code is on screen, waiting for the users
    APPROVED = "approved"  # responder: user approved, key sent; initiator: user confirmed
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


TERMINAL = frozenset({State.COMPLETED, State.REJECTED, State.EXPIRED, State.FAILED})


@dataclass(frozen=True)
class Pairing:
    pairing_id: str
    role: Role
    state: State
    me: str  # this device's id
    my_keys: DevicePublic
    peer: str | None  # the other device's id (None: initiator asking any paired device)
    expires_at: int
    eph_private: bytes
    eph_public: bytes
    peer_name: str | None = None
    peer_keys: DevicePublic | None = None
    peer_eph: bytes | None = None
    commitment: str | None = None
    sas: str | None = None
    key_box: str | None = None  # initiator: the sealed payload, held until the user confirms
    confirmed: bool = False  # initiator: the local user confirmed the code
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pairing_id": self.pairing_id,
            "role": self.role.value,
            "state": self.state.value,
            "me": self.me,
            "my_keys": self.my_keys.to_json(),
            "peer": self.peer,
            "expires_at": self.expires_at,
            "eph_private": crypto.b64(self.eph_private),
            "eph_public": crypto.b64(self.eph_public),
            "peer_name": self.peer_name,
            "peer_keys": self.peer_keys.to_json() if self.peer_keys else None,
            "peer_eph": crypto.b64(self.peer_eph) if self.peer_eph else None,
            "commitment": self.commitment,
            "sas": self.sas,
            "key_box": self.key_box,
            "confirmed": self.confirmed,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pairing:
        return cls(
            pairing_id=d["pairing_id"],
            role=Role(d["role"]),
            state=State(d["state"]),
            me=d["me"],
            my_keys=DevicePublic.from_json(d["my_keys"]),
            peer=d["peer"],
            expires_at=d["expires_at"],
            eph_private=crypto.unb64(d["eph_private"]),
            eph_public=crypto.unb64(d["eph_public"]),
            peer_name=d["peer_name"],
            peer_keys=DevicePublic.from_json(d["peer_keys"]) if d["peer_keys"] else None,
            peer_eph=crypto.unb64(d["peer_eph"]) if d["peer_eph"] else None,
            commitment=d["commitment"],
            sas=d["sas"],
            key_box=d["key_box"],
            confirmed=d["confirmed"],
            reason=d["reason"],
        )


# --- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    """A pairing message whose signature the caller verified against `keys` (the keys the
    message itself carries for request/accept; the pinned peer keys afterwards)."""

    type: str
    sender: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Approve:
    """The local user approved (responder) or confirmed (initiator) the code."""

    secret: dict[str, Any] | None = None  # responder: what to send (account key, log)


@dataclass(frozen=True)
class Reject:
    reason: str = "rejected by the user"


@dataclass(frozen=True)
class Tick:
    now: int


Event = Received | Approve | Reject | Tick


# --- effects ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    to: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Install:
    """Initiator: the transfer authenticated and the user confirmed: install this payload.

    `pending` is the state to keep on disk until the install is done: the outcome's COMPLETED
    state must only be saved after the key is in place, or a crash would leave a "completed"
    pairing without a key."""

    payload: dict[str, Any]
    pending: Pairing


@dataclass(frozen=True)
class Notify:
    event: str  # pairing.requested / pairing.updated / pairing.completed / security.alert


Effect = Send | Install | Notify


@dataclass(frozen=True)
class Outcome:
    pairing: Pairing
    effects: list[Effect] = field(default_factory=list)


class IllegalInput(Exception):
    """A user action that does not fit the state (the API answers it as a clear error)."""


# --- derivations --------------------------------------------------------------------------------
def commitment(eph_public: bytes, pairing_id: str, device_id: str, keys: DevicePublic) -> str:
    return digest(
        eph_public
        + canonical({"pairing_id": pairing_id, "device_id": device_id, "keys": keys.to_json()})
    )


def _transcript(p: Pairing) -> bytes:
    assert p.peer_keys is not None
    assert p.peer_eph is not None
    assert p.peer is not None
    if p.role is Role.INITIATOR:
        ids, keys, ephs = (p.me, p.peer), (p.my_keys, p.peer_keys), (p.eph_public, p.peer_eph)
    else:
        ids, keys, ephs = (p.peer, p.me), (p.peer_keys, p.my_keys), (p.peer_eph, p.eph_public)
    return canonical(
        {
            "pairing_id": p.pairing_id,
            "initiator": {"id": ids[0], "keys": keys[0].to_json(), "eph": crypto.b64(ephs[0])},
            "responder": {"id": ids[1], "keys": keys[1].to_json(), "eph": crypto.b64(ephs[1])},
        }
    )


def _shared(p: Pairing) -> bytes:
    assert p.peer_eph is not None
    return crypto.x25519_shared(p.eph_private, p.peer_eph)


def short_code(p: Pairing) -> str:
    """Four groups of four digits (53 bits), easy to read aloud and compare."""
    raw = hkdf(
        _shared(p),
        salt=p.pairing_id.encode(),
        info=b"autocrypt-sma v1 SAS|" + _transcript(p),
        length=8,
    )
    number = int.from_bytes(raw, "big") % 10 ** (4 * SAS_GROUPS)
    digits = f"{number:0{4 * SAS_GROUPS}d}"
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _transfer_key(p: Pairing) -> bytes:
    return hkdf(
        _shared(p),
        salt=p.pairing_id.encode(),
        info=b"autocrypt-sma v1 key transfer|" + _transcript(p),
    )


# --- starting ----------------------------------------------------------------------------------
def start(
    *, me: str, my_keys: DevicePublic, name: str, peer: str | None, now: int, random: RandomBytes
) -> Outcome:
    """The initiator's first step; `peer` None sends the request to every paired device."""
    pairing_id = random(16).hex()
    eph_private, eph_public = crypto.x25519_pair(random)
    p = Pairing(
        pairing_id,
        Role.INITIATOR,
        State.REQUESTED,
        me,
        my_keys,
        peer,
        now + PAIRING_TTL,
        eph_private,
        eph_public,
    )
    data = {
        "pairing_id": pairing_id,
        "name": name,
        "keys": my_keys.to_json(),
        "commitment": commitment(eph_public, pairing_id, me, my_keys),
        "expires_at": p.expires_at,
    }
    return Outcome(p, [Send(peer or "*", "pair-request", data)])


def on_request(
    message: Received,
    *,
    me: str,
    my_keys: DevicePublic,
    my_name: str,
    now: int,
    random: RandomBytes,
) -> Outcome:
    """The responder's first step, for a request whose self-signature the caller verified."""
    data = message.data
    expires = min(int(data["expires_at"]), now + PAIRING_TTL)
    if expires <= now:
        raise RemoteProtocolError("pairing request already expired")
    eph_private, eph_public = crypto.x25519_pair(random)
    p = Pairing(
        pairing_id=data["pairing_id"],
        role=Role.RESPONDER,
        state=State.ACCEPTED,
        me=me,
        my_keys=my_keys,
        peer=message.sender,
        expires_at=expires,
        eph_private=eph_private,
        eph_public=eph_public,
        peer_name=data["name"],
        peer_keys=DevicePublic.from_json(data["keys"]),
        commitment=data["commitment"],
    )
    accept = {
        "pairing_id": p.pairing_id,
        "name": my_name,
        "keys": my_keys.to_json(),
        "eph": crypto.b64(eph_public),
    }
    return Outcome(p, [Send(message.sender, "pair-accept", accept)])


# --- the machine -------------------------------------------------------------------------------
def _fail(p: Pairing, reason: str) -> Outcome:
    """One failed check ends the pairing for good and tells the user (no oracle: the peer is not told why)."""
    failed = replace(p, state=State.FAILED, reason=reason, eph_private=b"\0" * 32, key_box=None)
    effects: list[Effect] = [Notify("security.alert"), Notify("pairing.updated")]
    if p.peer:
        effects.insert(
            0, Send(p.peer, "pair-reject", {"pairing_id": p.pairing_id, "reason": "failed"})
        )
    return Outcome(failed, effects)


def step(p: Pairing, event: Event, *, random: RandomBytes) -> Outcome:
    if p.state in TERMINAL:
        if isinstance(event, Approve | Reject):
            raise IllegalInput(f"the pairing is {p.state.value}")
        return Outcome(p)
    if isinstance(event, Tick):
        if event.now >= p.expires_at:
            return Outcome(
                replace(p, state=State.EXPIRED, reason="ten minutes passed", key_box=None),
                [Notify("pairing.updated")],
            )
        return Outcome(p)
    if isinstance(event, Reject):
        effects: list[Effect] = [Notify("pairing.updated")]
        if p.peer:
            effects.insert(
                0, Send(p.peer, "pair-reject", {"pairing_id": p.pairing_id, "reason": "rejected"})
            )
        return Outcome(replace(p, state=State.REJECTED, reason=event.reason, key_box=None), effects)
    if isinstance(event, Approve):
        return _approve(p, event, random)
    return _receive(p, event)


def _approve(p: Pairing, event: Approve, random: RandomBytes) -> Outcome:
    if p.state is not State.SHOWING or (p.role is Role.INITIATOR and p.confirmed):
        raise IllegalInput(f"nothing to approve: the pairing is {p.state.value}")
    if p.role is Role.RESPONDER:
        if event.secret is None:
            raise IllegalInput("the responder must send the account key")
        assert p.peer is not None
        associated = canonical({"pairing_id": p.pairing_id, "type": "pair-key"})
        box = crypto.seal(canonical(event.secret), _transfer_key(p), associated, random)
        return Outcome(
            replace(p, state=State.APPROVED),
            [
                Send(p.peer, "pair-key", {"pairing_id": p.pairing_id, "box": box}),
                Notify("pairing.updated"),
            ],
        )
    confirmed = replace(p, confirmed=True)
    if confirmed.key_box is not None:
        return _install(confirmed)
    return Outcome(confirmed, [Notify("pairing.updated")])


def _install(p: Pairing) -> Outcome:
    associated = canonical({"pairing_id": p.pairing_id, "type": "pair-key"})
    try:
        plaintext = crypto.open_sealed(p.key_box, _transfer_key(p), associated)
        if len(plaintext) > MAX_SECRET_PAYLOAD:
            raise RemoteProtocolError("key payload too large")
        payload = json.loads(plaintext)
        if not isinstance(payload, dict):
            raise RemoteProtocolError("key payload is not an object")
    except (RemoteProtocolError, ValueError) as exc:
        return _fail(p, f"the key transfer did not verify: {exc}")
    done = replace(p, state=State.COMPLETED, key_box=None, eph_private=b"\0" * 32)
    return Outcome(done, [Install(payload, pending=p), Notify("pairing.completed")])


def resume_install(p: Pairing) -> Outcome:
    """After a crash between the user's confirmation and the end of the install: do it again
    (installing is idempotent)."""
    if p.role is Role.INITIATOR and p.state is State.SHOWING and p.confirmed and p.key_box:
        return _install(p)
    return Outcome(p)


def _receive(p: Pairing, message: Received) -> Outcome:
    data, kind = message.data, message.type
    if data.get("pairing_id") != p.pairing_id:
        return Outcome(p)  # not ours: ignored, never an oracle
    if p.peer is not None and message.sender != p.peer:
        return _fail(p, f"a {kind} came from an unexpected device")
    if kind == "pair-reject":
        return Outcome(
            replace(p, state=State.REJECTED, reason="the other device rejected", key_box=None),
            [Notify("pairing.updated")],
        )
    if p.role is Role.INITIATOR:
        if kind == "pair-accept" and p.state is State.REQUESTED:
            try:
                keys = DevicePublic.from_json(data.get("keys"))
                eph = crypto.unb64(data.get("eph"), crypto.KEY_BYTES)
            except RemoteProtocolError as exc:
                return _fail(p, f"malformed accept: {exc}")
            shown = replace(
                p,
                state=State.SHOWING,
                peer=message.sender,
                peer_keys=keys,
                peer_eph=eph,
                peer_name=str(data.get("name", ""))[:64],
            )
            shown = replace(shown, sas=short_code(shown))
            reveal = {"pairing_id": p.pairing_id, "eph": crypto.b64(p.eph_public)}
            return Outcome(
                shown, [Send(message.sender, "pair-reveal", reveal), Notify("pairing.updated")]
            )
        if kind == "pair-key" and p.state is State.SHOWING and p.key_box is None:
            held = replace(p, key_box=str(data.get("box", "")))
            if held.confirmed:
                return _install(held)
            return Outcome(held, [Notify("pairing.updated")])
    elif kind == "pair-reveal" and p.state is State.ACCEPTED:
        try:
            eph = crypto.unb64(data.get("eph"), crypto.KEY_BYTES)
        except RemoteProtocolError as exc:
            return _fail(p, f"malformed reveal: {exc}")
        assert p.peer is not None
        assert p.peer_keys is not None
        if commitment(eph, p.pairing_id, p.peer, p.peer_keys) != p.commitment:
            return _fail(p, "the revealed key does not match the commitment")
        shown = replace(p, state=State.SHOWING, peer_eph=eph)
        return Outcome(replace(shown, sas=short_code(shown)), [Notify("pairing.requested")])
    # A message that does not fit the state: a replay, a reorder, or an attack. Unchanged.
    return Outcome(p)


def complete(p: Pairing) -> Outcome:
    """Responder: the device log now admits the initiator (it installed the key and published)."""
    if p.role is not Role.RESPONDER or p.state is not State.APPROVED:
        return Outcome(p)
    return Outcome(
        replace(p, state=State.COMPLETED, eph_private=b"\0" * 32), [Notify("pairing.completed")]
    )
