"""What the announcement folder says about the account's devices, built up message by message.

Pure: it is fed (uid, raw bytes) pairs and never reads a folder itself. Announcements are claims
made through the server; nothing here makes a device trusted. Trust comes only from pairing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from native_host.core import devicelog, envelope
from native_host.core.crypto import DevicePublic, verify_document
from native_host.core.envelope import MessageType
from native_host.errors import RemoteProtocolError
from native_host.ports import StoredMessage, Watermark

MAX_DEVICES = 1000  # announcements kept in memory; beyond it new device ids are refused
MAX_REJECTIONS_KEPT = 100


@dataclass(frozen=True)
class Announcement:
    device_id: str
    name: str
    joined: int
    last_seen: int
    uid: int  # where it sits in the announcement folder (to replace it later)
    keys: dict[str, str] | None = None  # the device's public keys, self-signed (a claim, not trust)

    def newer_than(self, other: Announcement) -> bool:
        # Later last_seen wins; the UID breaks ties so every device picks the same one.
        return (self.last_seen, self.uid) > (other.last_seen, other.uid)


@dataclass(frozen=True)
class Rejection:
    uid: int
    reason: str


@dataclass
class Directory:
    devices: dict[str, Announcement] = field(default_factory=dict)
    watermark: Watermark | None = None
    rejected: list[Rejection] = field(default_factory=list)
    superseded: set[int] = field(default_factory=set)  # UIDs of older announcements of a device
    rejected_total: int = 0  # every rejection since this process started, kept or not
    # What the device log keeps (core/devicelog.py), saved with the directory. Entries read from
    # the folder go to `on_log` (the device log, which checks each one before keeping it, and
    # says whether it keeps it); with no `on_log` (a device that has not set one up) they are
    # dropped.
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    on_log: Callable[[Any], bool] | None = field(default=None, compare=False, repr=False)
    # Where each kept entry (by hash) was last read under the current UIDVALIDITY, so that a
    # device can tell when the server deleted one (runtime: written back). Only kept entries:
    # junk must not grow it. None: not tracked yet (until the next full rescan).
    log_uids: dict[str, int] | None = field(default_factory=dict)

    def reset(self) -> None:
        """Forget what UIDs point at: the folder's UIDVALIDITY changed (or it was recreated).

        Log entries stay: they are signed and hash-chained, so where they were read does not
        matter, and forgetting them would let the server drop members by recreating the folder.
        """
        self.devices.clear()
        self.rejected.clear()
        self.superseded.clear()
        self.watermark = None
        self.log_uids = {}

    def receive(self, message: StoredMessage) -> Announcement | None:
        """Take one message from the announcement folder; the announcement if it changed anything."""
        try:
            announcement = self._parse(message)
        except RemoteProtocolError as exc:
            self._reject(message.uid, str(exc))
            return None
        if announcement is None:
            return None
        current = self.devices.get(announcement.device_id)
        if current is None and len(self.devices) >= MAX_DEVICES:
            self._reject(message.uid, f"more than {MAX_DEVICES} devices announced")
            return None
        if current is not None and not announcement.newer_than(current):
            self.superseded.add(announcement.uid)
            return None
        if current is not None:
            self.superseded.add(current.uid)
        self.devices[announcement.device_id] = announcement
        return announcement

    def _parse(self, message: StoredMessage) -> Announcement | None:
        if message.raw is None:
            raise RemoteProtocolError(f"{message.size} bytes is over the size limit; not fetched")
        parsed = envelope.parse(message.raw)
        if parsed.type is MessageType.LOG:
            # The device log alone decides who belongs; it keeps only what verifies.
            kept = self.on_log is not None and self.on_log(parsed.data)
            if kept and self.log_uids is not None:
                with contextlib.suppress(TypeError, ValueError):  # (kept: it hashes)
                    self.log_uids[devicelog.entry_hash(parsed.data)] = message.uid
            return None
        if parsed.type is not MessageType.ANNOUNCE:
            raise RemoteProtocolError(
                f"a {parsed.type} message does not belong in the announcement folder"
            )
        data = parsed.data
        keys = data.get("keys")
        if keys is not None and not verify_document(parsed.document, DevicePublic.from_json(keys)):
            raise RemoteProtocolError(
                "announcement signature does not verify with the keys it carries"
            )
        return Announcement(
            parsed.sender, data["name"], data["joined"], data["last_seen"], message.uid, keys
        )

    def _reject(self, uid: int, reason: str) -> None:
        # The latest MAX_REJECTIONS_KEPT are kept; the count goes on, so that every one of them
        # can be reported once (a server that keeps injecting must not outrun the report).
        self.rejected_total += 1
        self.rejected.append(Rejection(uid, reason))
        if len(self.rejected) > MAX_REJECTIONS_KEPT:
            del self.rejected[0]
