"""The pairing state machine: the user starts "Add a device" on an existing device (the inviter),
which shows a one-time code; the user types it on the new device (the joiner).

Pure: `step(pairing, event) -> (pairing, effects)`, with time and randomness passed in. The
transport (SMA inboxes), the signature check of each message and persistence are the caller's.

    joiner (code typed)                        inviter (code shown: INVITING)
    JOINING    -- request(SPAKE2 msg A) ---->  CONFIRMING  (the invitation is used up)
               <-- accept(msg B, MAC_inv) --
    RECEIVING  -- confirm(MAC_join) -------->  PROVEN -> Release(secret) -> SENT
      (MAC_inv checked)                          (MAC_join checked)
               <-- key(sealed account key + log)
    COMPLETED (install)                         log shows the new device -> COMPLETED

The code is a nameplate (three digits naming the inviting device, not secret) and seven secret
digits (about 23 bits). SPAKE2 (as in magic-wormhole) turns it into a session key; anyone who
does not know the code gets exactly one guess per pairing and learns nothing offline. Both
device ids, both device signing keys and both PAKE messages go into the key derivation, so a
provider that swaps keys in transit makes the confirmations fail. The inviter sends nothing
secret before the joiner's confirmation verifies. A failed check ends the pairing in FAILED, a
terminal state that ignores everything after it: the user must start again.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from native_host.core import crypto
from native_host.core.crypto import DevicePublic, canonical, digest, hkdf
from native_host.errors import RemoteProtocolError
from native_host.ports import RandomBytes

PAIRING_TTL = 600  # ten minutes from "Add a device" (inviter) or from typing the code (joiner)
NAMEPLATE_DIGITS = 3  # names the inviting device among the announced ones; not secret
SECRET_DIGITS = 7  # 10**7 codes: about 23 bits against one guess
PAKE = "spake2-ed25519-v1"  # the `pake` member of a request; 0.1.0 requests have none
PAKE_MESSAGE_BYTES = 33  # spake2's message: one side byte and one Ed25519 point
# What spake2 raises for a message that is not a point of the group (NotOnCurve is neither a
# SPAKEError nor a ValueError: a forged one got through and stopped a device's inbox in CI).
_BAD_PAKE_MESSAGE = (SPAKEError, NotOnCurve, ValueError)
MAX_SECRET_PAYLOAD = 256 * 1024
_CODE_RE = re.compile(f"[0-9]{{{NAMEPLATE_DIGITS + SECRET_DIGITS}}}")


class Role(StrEnum):
    INVITER = "inviter"  # the existing device: shows the code, sends the account key
    JOINER = "joiner"  # the new device: the user typed the code here


class State(StrEnum):
    INVITING = "inviting"  # inviter: the code is on screen, waiting for the new device
    CONFIRMING = "confirming"  # inviter: PAKE answered, waiting for the joiner's proof
    PROVEN = "proven"  # inviter: the joiner proved the code; the key is about to go
    SENT = "sent"  # inviter: the sealed key went out; waiting for the log to admit the joiner
    JOINING = "joining"  # joiner: PAKE message sent, waiting for the inviter's answer
    RECEIVING = "receiving"  # joiner: the inviter proved the code; waiting for the key
    COMPLETED = "completed"
    REJECTED = "rejected"  # cancelled by a user (either side)
    EXPIRED = "expired"
    FAILED = "failed"  # a check failed (wrong code, forged or malformed message): for good


TERMINAL = frozenset({State.COMPLETED, State.REJECTED, State.EXPIRED, State.FAILED})
OPEN_INVITATION = frozenset({State.INVITING})


@dataclass(frozen=True)
class Pairing:
    pairing_id: str  # this device's id for it (the API's)
    role: Role
    state: State
    me: str
    my_keys: DevicePublic
    nameplate: str
    expires_at: int
    session: str | None = None  # the id on the wire: the joiner's pairing_id
    code: str | None = None  # inviter: the code to show, until a request uses it up
    peer: str | None = None
    peer_name: str | None = None
    peer_keys: DevicePublic | None = None
    pake_state: bytes | None = None  # joiner: the SPAKE2 side waiting for the answer
    session_key: bytes | None = None  # both: after the PAKE, bound to the transcript
    key_box: str | None = None  # joiner: the sealed payload while it is being installed
    reason: str | None = None
    my_name: str = ""  # inviter: told to the joiner, to show whom it paired with

    def to_json(self) -> dict[str, Any]:
        return {
            "pairing_id": self.pairing_id,
            "role": self.role.value,
            "state": self.state.value,
            "me": self.me,
            "my_keys": self.my_keys.to_json(),
            "nameplate": self.nameplate,
            "expires_at": self.expires_at,
            "session": self.session,
            "code": self.code,
            "peer": self.peer,
            "peer_name": self.peer_name,
            "peer_keys": self.peer_keys.to_json() if self.peer_keys else None,
            "pake_state": crypto.b64(self.pake_state) if self.pake_state else None,
            "session_key": crypto.b64(self.session_key) if self.session_key else None,
            "key_box": self.key_box,
            "reason": self.reason,
            "my_name": self.my_name,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pairing:
        """Raises KeyError/ValueError for a record from 0.1.0 (the caller drops it)."""
        return cls(
            pairing_id=d["pairing_id"],
            role=Role(d["role"]),
            state=State(d["state"]),
            me=d["me"],
            my_keys=DevicePublic.from_json(d["my_keys"]),
            nameplate=d["nameplate"],
            expires_at=d["expires_at"],
            session=d["session"],
            code=d["code"],
            peer=d["peer"],
            peer_name=d["peer_name"],
            peer_keys=DevicePublic.from_json(d["peer_keys"]) if d["peer_keys"] else None,
            pake_state=crypto.unb64(d["pake_state"]) if d["pake_state"] else None,
            session_key=crypto.unb64(d["session_key"]) if d["session_key"] else None,
            key_box=d["key_box"],
            reason=d["reason"],
            my_name=d["my_name"],
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
class Release:
    """Inviter, after the joiner proved the code: the caller supplies what to send."""

    secret: dict[str, Any]


@dataclass(frozen=True)
class Reject:
    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class Tick:
    now: int


Event = Received | Release | Reject | Tick


# --- effects ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    to: str  # "*": every announced device whose nameplate matches (the caller resolves it)
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class NeedSecret:
    """Inviter: the joiner is proven; answer with `Release(secret)` (the account key and the log
    admitting `pairing.peer`). The PROVEN state is saved first, so a crash asks again."""


@dataclass(frozen=True)
class Install:
    """Joiner: the transfer authenticated: install this payload.

    `pending` is the state to keep on disk until the install is done: the outcome's COMPLETED
    state must only be saved after the key is in place, or a crash would leave a "completed"
    pairing without a key."""

    payload: dict[str, Any]
    pending: Pairing


@dataclass(frozen=True)
class Notify:
    event: str  # pairing.updated / pairing.completed / security.alert


Effect = Send | NeedSecret | Install | Notify


@dataclass(frozen=True)
class Outcome:
    pairing: Pairing
    effects: list[Effect] = field(default_factory=list)


class IllegalInput(Exception):
    """A user action that does not fit the state (the API answers it as a clear error)."""


class BadCode(ValueError):
    """What the user typed is not a pairing code (the API answers invalid_params)."""


# --- the code -----------------------------------------------------------------------------------
def nameplate_of(device_id: str) -> str:
    """The three digits that name a device in its codes: the new device sends its request only to
    the announced devices with these digits (a collision among a handful of devices is rare and
    costs only an ignored request)."""
    number = int(digest(b"autocrypt-sma nameplate|" + device_id.encode())[:12], 16)
    return f"{number % 10**NAMEPLATE_DIGITS:0{NAMEPLATE_DIGITS}d}"


def format_code(nameplate: str, secret: str) -> str:
    """`417-209-3551`: read aloud in three groups like a phone number."""
    return f"{nameplate}-{secret[:3]}-{secret[3:]}"


def parse_code(text: str) -> tuple[str, str]:
    """(nameplate, secret) from what the user typed; spaces and dashes do not matter."""
    digits = re.sub(r"[\s\-]", "", text)
    if not _CODE_RE.fullmatch(digits):
        raise BadCode(
            f"a pairing code is {NAMEPLATE_DIGITS + SECRET_DIGITS} digits, "
            "as shown by 'Add a device' on the other device"
        )
    return digits[:NAMEPLATE_DIGITS], digits[NAMEPLATE_DIGITS:]


def _password(nameplate: str, secret: str) -> bytes:
    return f"autocrypt-sma pairing|{nameplate}|{secret}".encode()


def _session_key(
    pake_key: bytes,
    *,
    session: str,
    nameplate: str,
    joiner: tuple[str, DevicePublic, bytes],
    inviter: tuple[str, DevicePublic, bytes],
) -> bytes:
    """The PAKE key bound to both device ids, both device keys and both PAKE messages."""
    transcript = canonical(
        {
            "session": session,
            "nameplate": nameplate,
            "joiner": {"id": joiner[0], "keys": joiner[1].to_json(), "msg": crypto.b64(joiner[2])},
            "inviter": {
                "id": inviter[0],
                "keys": inviter[1].to_json(),
                "msg": crypto.b64(inviter[2]),
            },
        }
    )
    return hkdf(pake_key, salt=session.encode(), info=b"autocrypt-sma pairing v2|" + transcript)


def confirmation(session_key: bytes, role: Role) -> bytes:
    """Each side's proof that it derived the same key (and so knew the code)."""
    mac_key = hkdf(session_key, salt=b"", info=b"autocrypt-sma pairing v2 confirm")
    return hmac.new(mac_key, b"confirm|" + role.value.encode(), "sha256").digest()


def _transfer_key(session_key: bytes) -> bytes:
    return hkdf(session_key, salt=b"", info=b"autocrypt-sma pairing v2 key transfer")


def _associated(session: str) -> bytes:
    return canonical({"pairing_id": session, "type": "pair-key"})


# --- starting ----------------------------------------------------------------------------------
def invite(*, me: str, my_keys: DevicePublic, name: str, now: int, random: RandomBytes) -> Outcome:
    """ "Add a device" on an existing device: a new one-time code, shown until used or expired."""
    nameplate = nameplate_of(me)
    secret = f"{int.from_bytes(random(8), 'big') % 10**SECRET_DIGITS:0{SECRET_DIGITS}d}"
    p = Pairing(
        pairing_id=random(16).hex(),
        role=Role.INVITER,
        state=State.INVITING,
        me=me,
        my_keys=my_keys,
        nameplate=nameplate,
        expires_at=now + PAIRING_TTL,
        code=format_code(nameplate, secret),
        my_name=name[:64],
    )
    return Outcome(p, [Notify("pairing.updated")])


def join(
    *, me: str, my_keys: DevicePublic, name: str, code: str, now: int, random: RandomBytes
) -> Outcome:
    """On the new device, with the code the user typed: the SPAKE2 request (raises BadCode)."""
    nameplate, secret = parse_code(code)
    pairing_id = random(16).hex()
    side = SPAKE2_A(
        _password(nameplate, secret), idA=me.encode(), idB=nameplate.encode(), entropy_f=random
    )
    message = side.start()
    p = Pairing(
        pairing_id=pairing_id,
        role=Role.JOINER,
        state=State.JOINING,
        me=me,
        my_keys=my_keys,
        nameplate=nameplate,
        expires_at=now + PAIRING_TTL,
        session=pairing_id,
        pake_state=bytes(side.serialize()),
    )
    request = {
        "pairing_id": pairing_id,
        "pake": PAKE,
        "nameplate": nameplate,
        "name": name,
        "keys": my_keys.to_json(),
        "msg": crypto.b64(message),
    }
    return Outcome(p, [Send("*", "pair-request", request), Notify("pairing.updated")])


# --- the machine -------------------------------------------------------------------------------
def _fail(p: Pairing, reason: str, to: str | None = None, *, tell: bool = True) -> Outcome:
    """One failed check ends the pairing for good and tells the user once (no oracle: the peer
    is only told that it failed)."""
    failed = replace(
        p,
        state=State.FAILED,
        reason=reason,
        code=None,
        pake_state=None,
        session_key=None,
        key_box=None,
    )
    effects: list[Effect] = [Notify("security.alert"), Notify("pairing.updated")]
    target = to or p.peer
    if tell and target and p.session:
        effects.insert(
            0, Send(target, "pair-reject", {"pairing_id": p.session, "reason": "failed"})
        )
    return Outcome(failed, effects)


def _end(p: Pairing, state: State, reason: str) -> Pairing:
    return replace(
        p, state=state, reason=reason, code=None, pake_state=None, session_key=None, key_box=None
    )


def step(p: Pairing, event: Event, *, random: RandomBytes) -> Outcome:
    if p.state in TERMINAL:
        if isinstance(event, Reject | Release):
            raise IllegalInput(f"the pairing is {p.state.value}")
        return Outcome(p)
    if isinstance(event, Tick):
        if event.now >= p.expires_at:
            return Outcome(
                _end(p, State.EXPIRED, "ten minutes passed: start again with a new code"),
                [Notify("pairing.updated")],
            )
        return Outcome(p)
    if isinstance(event, Reject):
        effects: list[Effect] = [Notify("pairing.updated")]
        if p.peer and p.session:
            effects.insert(
                0, Send(p.peer, "pair-reject", {"pairing_id": p.session, "reason": "rejected"})
            )
        return Outcome(_end(p, State.REJECTED, event.reason), effects)
    if isinstance(event, Release):
        return _release(p, event, random)
    if p.role is Role.INVITER:
        return _inviter_receives(p, event, random)
    return _joiner_receives(p, event)


def _release(p: Pairing, event: Release, random: RandomBytes) -> Outcome:
    if p.state is not State.PROVEN or p.session_key is None or p.peer is None:
        raise IllegalInput(f"nothing to send: the pairing is {p.state.value}")
    assert p.session is not None
    box = crypto.seal(
        canonical(event.secret), _transfer_key(p.session_key), _associated(p.session), random
    )
    return Outcome(
        replace(p, state=State.SENT, session_key=None),
        [
            Send(p.peer, "pair-key", {"pairing_id": p.session, "box": box}),
            Notify("pairing.updated"),
        ],
    )


def _inviter_receives(p: Pairing, message: Received, random: RandomBytes) -> Outcome:
    data, kind = message.data, message.type
    if kind == "pair-request":
        if p.state is not State.INVITING:
            return Outcome(p)  # used up: the caller counts it as unsolicited
        return _answer_request(p, message, random)
    if p.session is None or data.get("pairing_id") != p.session:
        return Outcome(p)  # not ours: ignored, never an oracle
    if message.sender != p.peer:
        return Outcome(p)  # only the device that used the invitation takes part
    if kind == "pair-reject":
        if data.get("reason") == "failed" and p.state is State.CONFIRMING:
            return _fail(
                p, "the new device's code did not match: start again with a new code", tell=False
            )
        if data.get("reason") == "failed" and p.state in (State.PROVEN, State.SENT):
            # The joiner proved the code, then could not open what arrived: the sealed key was
            # changed on the way (or never came). Not a cancel: an alert, and a new code.
            return _fail(
                p,
                "the new device could not open the key it was sent (changed on the way?): "
                "start again with a new code",
                tell=False,
            )
        return Outcome(
            _end(p, State.REJECTED, "the new device cancelled"), [Notify("pairing.updated")]
        )
    if kind == "pair-confirm" and p.state is State.CONFIRMING:
        assert p.session_key is not None
        try:
            proof = crypto.unb64(data.get("confirm"), 32)
        except RemoteProtocolError:
            return _fail(p, "the new device's confirmation is malformed")
        if not hmac.compare_digest(proof, confirmation(p.session_key, Role.JOINER)):
            return _fail(p, "the new device did not prove the code: start again with a new code")
        return Outcome(replace(p, state=State.PROVEN), [NeedSecret(), Notify("pairing.updated")])
    return Outcome(p)  # a replay, a reorder, or an attack: unchanged


def _answer_request(p: Pairing, message: Received, random: RandomBytes) -> Outcome:
    """The one request an invitation answers: it binds the invitation to its sender for good."""
    data = message.data
    if data.get("nameplate") != p.nameplate:
        return Outcome(p)  # meant for another device (a nameplate collision)
    try:
        keys = DevicePublic.from_json(data.get("keys"))
        theirs = crypto.unb64(data.get("msg"), PAKE_MESSAGE_BYTES)
        session = str(data["pairing_id"])
    except (RemoteProtocolError, KeyError):
        return Outcome(p)  # malformed: no guess spent (the caller reports the message)
    assert p.code is not None
    _, secret = parse_code(p.code)
    side = SPAKE2_B(
        _password(p.nameplate, secret),
        idA=message.sender.encode(),
        idB=p.nameplate.encode(),
        entropy_f=random,
    )
    mine = side.start()
    try:
        pake_key = side.finish(theirs)
    except _BAD_PAKE_MESSAGE:
        return Outcome(p)  # not a group element: no guess, the invitation stays open
    bound = replace(
        p,
        state=State.CONFIRMING,
        code=None,
        session=session,
        peer=message.sender,
        peer_keys=keys,
        peer_name=str(data.get("name", ""))[:64] or "device",
    )
    session_key = _session_key(
        pake_key,
        session=session,
        nameplate=p.nameplate,
        joiner=(message.sender, keys, theirs),
        inviter=(p.me, p.my_keys, mine),
    )
    accept = {
        "pairing_id": session,
        "name": p.my_name,
        "keys": p.my_keys.to_json(),
        "msg": crypto.b64(mine),
        "confirm": crypto.b64(confirmation(session_key, Role.INVITER)),
    }
    return Outcome(
        replace(bound, session_key=session_key),
        [Send(message.sender, "pair-accept", accept), Notify("pairing.updated")],
    )


def _joiner_receives(p: Pairing, message: Received) -> Outcome:
    data, kind = message.data, message.type
    if data.get("pairing_id") != p.session:
        return Outcome(p)  # not ours: ignored, never an oracle
    if p.peer is not None and message.sender != p.peer:
        return Outcome(p)  # the pairing is bound to the device that answered first
    if kind == "pair-reject" and p.peer is not None:
        return Outcome(
            _end(p, State.REJECTED, "the other device cancelled"), [Notify("pairing.updated")]
        )
    if kind == "pair-accept" and p.state is State.JOINING:
        if nameplate_of(message.sender) != p.nameplate:
            # The code names the device that must answer: an accept from any other device is
            # not an attempt at this code (a stray or forged answer), so it spends no guess
            # and does not end the join. (Anyone who can write to the mailbox can still grind
            # a device id with these three digits; that costs them the join's one guess, and
            # the provider could have dropped the messages anyway.)
            return Outcome(p)
        return _check_accept(p, message)
    if kind == "pair-key" and p.state is State.RECEIVING and p.key_box is None:
        return _install(replace(p, key_box=str(data.get("box", ""))))
    return Outcome(p)  # a replay, a reorder, or an attack: unchanged


def _check_accept(p: Pairing, message: Received) -> Outcome:
    """The first accept is the joiner's one attempt: a wrong code or a forged answer fails it."""
    data = message.data
    assert p.pake_state is not None
    assert p.session is not None
    try:
        keys = DevicePublic.from_json(data.get("keys"))
        theirs = crypto.unb64(data.get("msg"), PAKE_MESSAGE_BYTES)
        proof = crypto.unb64(data.get("confirm"), 32)
    except RemoteProtocolError as exc:
        return _fail(p, f"malformed answer: {exc}", to=message.sender)
    side = SPAKE2_A.from_serialized(p.pake_state)
    try:
        pake_key = side.finish(theirs)
    except _BAD_PAKE_MESSAGE:
        return Outcome(p)  # not a group element: no guess, the join stays open
    session_key = _session_key(
        pake_key,
        session=p.session,
        nameplate=p.nameplate,
        joiner=(p.me, p.my_keys, _message_of(side)),
        inviter=(message.sender, keys, theirs),
    )
    if not hmac.compare_digest(proof, confirmation(session_key, Role.INVITER)):
        return _fail(
            p,
            "the code did not match (mistyped, or another device answered): "
            "start again with a new code",
            to=message.sender,
        )
    proven = replace(
        p,
        state=State.RECEIVING,
        peer=message.sender,
        peer_keys=keys,
        peer_name=str(data.get("name", ""))[:64] or None,
        pake_state=None,
        session_key=session_key,
    )
    confirm = {
        "pairing_id": p.session,
        "confirm": crypto.b64(confirmation(session_key, Role.JOINER)),
    }
    return Outcome(
        proven, [Send(message.sender, "pair-confirm", confirm), Notify("pairing.updated")]
    )


def _message_of(side: Any) -> bytes:
    """The joiner's own PAKE message, as spake2 keeps it in its state."""
    return bytes(side.side + side.outbound_message)


def _install(p: Pairing) -> Outcome:
    assert p.session_key is not None
    assert p.session is not None
    try:
        plaintext = crypto.open_sealed(
            p.key_box, _transfer_key(p.session_key), _associated(p.session)
        )
        if len(plaintext) > MAX_SECRET_PAYLOAD:
            raise RemoteProtocolError("key payload too large")
        payload = json.loads(plaintext)
        if not isinstance(payload, dict):
            raise RemoteProtocolError("key payload is not an object")
    except (RemoteProtocolError, ValueError) as exc:
        return _fail(p, f"the key transfer did not verify: {exc}")
    done = _end(p, State.COMPLETED, "")
    done = replace(done, reason=None)
    return Outcome(done, [Install(payload, pending=p), Notify("pairing.completed")])


def resume_install(p: Pairing) -> Outcome:
    """After a crash between the key's arrival and the end of the install: do it again
    (installing is idempotent)."""
    if p.role is Role.JOINER and p.state is State.RECEIVING and p.key_box:
        return _install(p)
    return Outcome(p)


def complete(p: Pairing) -> Outcome:
    """Inviter: the device log now admits the joiner (it installed the key and published)."""
    if p.role is not Role.INVITER or p.state is not State.SENT:
        return Outcome(p)
    return Outcome(replace(p, state=State.COMPLETED), [Notify("pairing.completed")])
