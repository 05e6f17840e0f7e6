"""The opt-in expiry policy's evidence: which paired devices it may *propose* to remove.

Announcements live in a folder the provider controls, so an old `last_seen` alone proves
nothing: withholding a live device's announcements would get it removed and wiped (issue 16
item 9). The policy therefore never removes anything itself. It proposes a device to the user
(`devices.expiry_proposed`, once) only when all of these held for the whole period:

- the device's announcement is older than the period (as before);
- no device-to-device message from it (a key update or ack, a rolled key, a key request, each
  signed by its device key) reached this device;
- this device synced successfully without a gap of more than OBSERVE_GAP (a device that was
  offline itself has seen nothing, so its silence says nothing), and the policy was on.

The user then removes with `devices.expire` or `device.remove`, or keeps the device. Pure
except for the clock values passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

OBSERVE_GAP = 2 * 86400  # longer without a successful sync: this device starts observing anew
SAVE_EVERY = 3600.0  # the last good sync is saved this often (a restart loses at most that)
MAX_HEARD = 1000  # devices remembered (the directory keeps at most 1000 too)


@dataclass
class ExpiryWatch:
    """Saved in the account record (`expiry_watch`)."""

    policy_since: float | None = None  # when the policy was switched on here
    observing_since: float = 0.0  # start of the current run of syncs without a long gap
    last_sync_ok: float = 0.0
    saved_sync_ok: float = 0.0  # (not saved) the value last written
    heard: dict[str, float] = field(default_factory=dict)  # member -> last verified message
    proposed: list[str] = field(default_factory=list)  # devices the user was already asked about

    def synced(self, now: float) -> bool:
        """A sync cycle succeeded; True when the record should be saved."""
        gap = now - self.last_sync_ok > OBSERVE_GAP
        if gap:
            self.observing_since = now
        self.last_sync_ok = now
        if gap or now - self.saved_sync_ok >= SAVE_EVERY:
            self.saved_sync_ok = now
            return True
        return False

    def heard_from(self, device_id: str, now: float) -> None:
        self.heard[device_id] = now
        if len(self.heard) > MAX_HEARD:
            oldest = min(self.heard, key=self.heard.__getitem__)
            del self.heard[oldest]

    def candidates(self, stale: Iterable[str], now: float, period: float) -> list[str]:
        """Of the devices whose announcement is older than `period`, those this device may
        propose: see the module docstring."""
        if self.policy_since is None or now - self.policy_since < period:
            return []
        if now - self.observing_since < period or now - self.last_sync_ok > OBSERVE_GAP:
            return []  # (the second: this cycle ends a gap, which `synced` has yet to see)
        return [d for d in stale if now - self.heard.get(d, 0.0) >= period]

    def to_ask(self, candidates: list[str]) -> list[str]:
        """The candidates the user has not been asked about; forgets those no longer candidates
        (heard from again, or removed), so a later absence asks again."""
        self.proposed = [d for d in self.proposed if d in candidates]
        new = [d for d in candidates if d not in self.proposed]
        self.proposed += new
        return new

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_since": self.policy_since,
            "observing_since": self.observing_since,
            "last_sync_ok": self.last_sync_ok,
            "heard": self.heard,
            "proposed": self.proposed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ExpiryWatch:
        data = data or {}
        since = data.get("policy_since")
        last = float(data.get("last_sync_ok") or 0.0)
        return cls(
            policy_since=None if since is None else float(since),
            observing_since=float(data.get("observing_since") or 0.0),
            last_sync_ok=last,
            saved_sync_ok=last,
            heard={str(k): float(v) for k, v in (data.get("heard") or {}).items()},
            proposed=[str(d) for d in data.get("proposed") or []],
        )
