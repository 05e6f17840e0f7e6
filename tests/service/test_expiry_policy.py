"""The opt-in expiry policy cannot be triggered by withholding (issue 16 item 9): it never
removes a device itself, proposes one only when its announcement, its device-to-device messages
and this device's own syncing all agree for the whole period, and asks once.

The devices sync by hand here (no background loops), a simulated day at a time."""

from __future__ import annotations

from typing import Any

import pytest

from native_host.core import layout
from native_host.service.expiry import OBSERVE_GAP
from native_host.service.runtime import AccountRuntime
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_keysync_flow import key_for, keys, mail, pair

__all__ = ["keys"]

DAY = 86400.0
PERIOD_DAYS = 10


def manual(device: Device) -> AccountRuntime:
    """Restarted without background loops; the clock goes on from where it was."""
    now = device.service._clock()  # type: ignore[attr-defined]
    device.service.stop(wait=10)
    service = device.restart()
    service._clock.now = now  # type: ignore[attr-defined]
    return service.runtime(ACCOUNT)


def advance(device: Device, seconds: float) -> None:
    device.service._clock.advance(seconds)  # type: ignore[attr-defined]


def proposals(device: Device) -> list[dict[str, Any]]:
    found = []
    while not device.events.empty():
        name, data = device.events.get_nowait()
        if name == "devices.expiry_proposed":
            found.append(data)
    return found


def hide_announcements(server: Server, device_id: str) -> int:
    """The provider deletes every announcement of `device_id` the moment it appears."""
    box = server.mailbox.folders[layout.ANNOUNCE_FOLDER]
    mine = f"Autocrypt-SMA-Device: {device_id}".encode()
    kind = b"Autocrypt-SMA-Type: announce"
    hidden = [uid for uid, raw in box.messages.items() if mine in raw and kind in raw]
    server.mailbox.delete_messages(layout.ANNOUNCE_FOLDER, hidden)
    return len(hidden)


@pytest.fixture
def paired(laptop: Device, phone: Device) -> tuple[AccountRuntime, AccountRuntime]:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    laptop_rt, phone_rt = manual(laptop), manual(phone)
    laptop_rt.set_expiry_policy(PERIOD_DAYS)
    return laptop_rt, phone_rt


def test_a_live_device_whose_announcements_are_withheld_is_neither_removed_nor_proposed(
    laptop: Device,
    phone: Device,
    server: Server,
    paired: tuple[AccountRuntime, AccountRuntime],
    keys: list[bytes],
) -> None:
    laptop_rt, phone_rt = paired
    phone_id = phone_rt.trust.me
    hidden = 0
    for day in range(3 * PERIOD_DAYS):
        for device in (laptop, phone):
            advance(device, DAY)
        # The phone is used: it learns a correspondent's key every few days and syncs it.
        if day % 4 == 0:
            phone_rt.peers.ingest(
                mail(f"c{day}@example.net", key_for(f"c{day}@example.net"), 1_790_000_000 + day)
            )
        phone_rt.sync()
        hidden += hide_announcements(server, phone_id)
        laptop_rt.sync()
        phone_rt.sync()  # the laptop's acks
    assert hidden >= 3 * PERIOD_DAYS - 1  # the phone re-announced daily; all of it withheld
    [phone_view] = [d for d in laptop_rt.devices(PERIOD_DAYS) if d["device_id"] == phone_id]
    assert phone_view["stale"] is True  # what the old policy went by
    assert proposals(laptop) == []
    assert laptop_rt.trust.device_log().is_member(phone_id)
    heard = laptop_rt.record.expiry_watch.heard[phone_id]  # what kept it: its key updates
    assert laptop.service._clock() - heard < 5 * DAY  # type: ignore[attr-defined]


def test_a_silent_device_is_proposed_once_and_never_removed_by_the_policy(
    laptop: Device,
    phone: Device,
    server: Server,
    paired: tuple[AccountRuntime, AccountRuntime],
) -> None:
    """Withholding everything (or a phone really lost): the user is asked, once, and decides."""
    laptop_rt, phone_rt = paired
    phone_id = phone_rt.trust.me
    asked: list[dict[str, Any]] = []
    for _day in range(PERIOD_DAYS + 2):
        advance(laptop, DAY)
        laptop_rt.sync()
        asked += proposals(laptop)
    assert [[d["device_id"] for d in p["devices"]] for p in asked] == [[phone_id]]
    assert asked[0]["devices"][0]["name"] == "Phone"
    assert laptop_rt.trust.device_log().is_member(phone_id)  # nothing removed
    # Persisted: a restart does not ask again.
    laptop_rt = manual(laptop)
    for _day in range(3):
        advance(laptop, DAY)
        laptop_rt.sync()
    assert proposals(laptop) == []
    assert laptop_rt.trust.device_log().is_member(phone_id)
    assert laptop_rt.expire(PERIOD_DAYS) == [phone_id]  # the user's decision


def test_a_device_that_was_offline_itself_has_no_evidence_and_proposes_nothing(
    laptop: Device, phone: Device, paired: tuple[AccountRuntime, AccountRuntime]
) -> None:
    laptop_rt, _phone_rt = paired
    advance(laptop, 3 * PERIOD_DAYS * DAY)  # switched off for a month (a gap > OBSERVE_GAP)
    assert OBSERVE_GAP < 3 * PERIOD_DAYS * DAY
    for _day in range(PERIOD_DAYS - 1):
        laptop_rt.sync()
        advance(laptop, DAY)
    laptop_rt.sync()
    assert proposals(laptop) == []  # it has watched for less than the period since it came back
    for _day in range(2):
        advance(laptop, DAY)
        laptop_rt.sync()
    assert [p["devices"][0]["name"] for p in proposals(laptop)] == ["Phone"]
