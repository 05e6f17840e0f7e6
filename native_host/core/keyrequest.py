"""Getting back a rolled account key that never arrived: when to ask, whom, and whether to answer.

A roll hands the new key to each member once (`account-key`, no acknowledgement). The server can
drop that message, so the member that lacks it asks: its verified log names the current key's
fingerprint, and a member whose keyring does not hold that key sends a signed `key-request` to
the member that signed the roll (then, in turn, to the others), with backoff. A member that holds
the key answers a valid request from a member of its own verified log with the same `account-key`
message a roll sends, at most once per ANSWER_INTERVAL per requester. Pure: the service layer
(`service/lifecycle.py`) reads the keyring, persists the state and sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from native_host.core import devicelog
from native_host.core.crypto import verify_document
from native_host.core.envelope import MessageType, SmaMessage
from native_host.errors import RemoteProtocolError

# The roll's own message usually arrives within a second of its log entry: the first request
# waits this long, then each next one twice as long as the last, up to MAX_INTERVAL.
FIRST_DELAY = 30.0
MAX_INTERVAL = 3600.0
# A responder answers one requester at most this often. Honest requests are at least
# 2 * FIRST_DELAY apart and each replaces the previous one in the inbox, so only replays and
# duplicates (the server's) come faster.
ANSWER_INTERVAL = 30.0


@dataclass(frozen=True)
class KeyRequest:
    """What a member missing the current account key remembers (in its account record, so a
    restart neither asks again at once nor forgets to ask)."""

    fingerprint: str  # the key the verified log names and this device does not hold
    attempts: int  # requests sent so far
    next_at: float  # when the next one is due (this device's clock)
    sent_to: str | None = None  # the inbox our last request went to,
    sent_uid: int | None = None  # and its UID there: the next request replaces it

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "sent_to": self.sent_to,
            "sent_uid": self.sent_uid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRequest:
        uid = data.get("sent_uid")
        to = data.get("sent_to")
        return cls(
            str(data["fingerprint"]),
            int(data["attempts"]),
            float(data["next_at"]),
            None if to is None else str(to),
            None if uid is None else int(uid),
        )


def noticed(current: KeyRequest | None, wanted: str, now: float) -> KeyRequest:
    """The state once we know the log names `wanted` and we do not hold it: unchanged if we were
    already after that key, else a fresh one whose first request waits FIRST_DELAY (the roll's
    own message is probably on its way)."""
    if current is not None and current.fingerprint == wanted:
        return current
    return KeyRequest(wanted, 0, now + FIRST_DELAY)


def due(state: KeyRequest, now: float) -> bool:
    return now >= state.next_at


def interval(attempts: int) -> float:
    """The wait after the `attempts`-th request: 60 s, 2, 4, ... minutes, at most an hour."""
    return min(FIRST_DELAY * 2.0 ** min(attempts, 32), MAX_INTERVAL)


def after_send(state: KeyRequest, now: float, to: str) -> KeyRequest:
    """Saved before the request is appended: a crash then delays the next one, never repeats it
    early. The previous request's place stays in the state until the new one's UID is known."""
    attempts = state.attempts + 1
    return KeyRequest(state.fingerprint, attempts, now + interval(attempts), to, None)


def roller(chain: devicelog.DeviceLog) -> str | None:
    """Who signed the entry that made the current account key (a roll, a removal, the genesis)."""
    wanted = chain.account_key
    for entry in reversed(chain.entries()):
        if entry.get("account_key") == wanted:
            return str(entry.get("by") or entry.get("device_id"))
    return None


def target(chain: devicelog.DeviceLog, me: str, attempts: int) -> str | None:
    """Whom the next request goes to: the roller first (it surely has the key), then each other
    member in turn (each received it from the roller), so a roller that is gone or keeps losing
    our requests does not stop us. None when no other member is left."""
    others = sorted(d for d in chain.members() if d != me)
    first = roller(chain)
    candidates = ([first] if first in others else []) + [d for d in others if d != first]
    if not candidates:
        return None
    return candidates[attempts % len(candidates)]


def request_data(fingerprint: str) -> dict[str, Any]:
    return {"fingerprint": fingerprint}


def judge(
    chain: devicelog.DeviceLog,
    me: str,
    message: SmaMessage,
    answered: dict[str, float],
    now: float,
) -> str:
    """Whether to answer a `key-request` (the fingerprint to send), or RemoteProtocolError: only
    a member of our verified log, signing with the keys the log pinned for it, addressed to us,
    asking for the key the log names now, and not answered within ANSWER_INTERVAL."""
    if message.type is not MessageType.KEY_REQUEST:
        raise RemoteProtocolError(f"{message.type} is not a key request")
    member = chain.members().get(message.sender)
    if member is None or message.sender == me:
        raise RemoteProtocolError(f"key request from {message.sender}, not a member")
    if message.to != me:
        raise RemoteProtocolError("key request addressed to another device (a replay?)")
    if not verify_document(message.document, member.keys):
        raise RemoteProtocolError("key request signature does not verify")
    wanted = message.data.get("fingerprint")
    if wanted is None or wanted != chain.account_key:
        raise RemoteProtocolError("key request for a key that is not the current account key")
    last = answered.get(message.sender)
    if last is not None and 0 <= now - last < ANSWER_INTERVAL:
        raise RemoteProtocolError(
            f"key request from {message.sender} answered {now - last:.0f} s ago; rate-limited"
        )
    return str(wanted)


def answered_after(
    chain: devicelog.DeviceLog, answered: dict[str, float], requester: str, now: float
) -> dict[str, float]:
    """The responder's rate-limit table after answering: members only (so it stays as small as
    the log), with this answer's time."""
    members = chain.members()
    kept = {d: t for d, t in answered.items() if d in members and d != requester}
    kept[requester] = now
    return kept
