"""Removal finishes everywhere (issue 16 item 8): the removed device names the keys its
Thunderbird must drop (`device.removed` carries `account_keys`), and every remaining device
tells its user once, also after a restart, that the removed device still knows the mailbox
password (`devices.member_removed`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from native_host.api.schemas import schemas
from tests.service.imap_backed import dovecot, server_fixture
from tests.service.test_instance import ACCOUNT, Device, Server
from tests.service.test_keysync_flow import settle
from tests.service.test_lifecycle_flow import device_id, fingerprint, runtime, tablet, three

__all__ = ["dovecot", "tablet"]


@pytest.fixture(params=["memory"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from server_fixture(request)


def drain(device: Device, name: str) -> list[dict[str, Any]]:
    """The `name` events so far, each checked against its schema."""
    found = []
    while not device.events.empty():
        event, data = device.events.get_nowait()
        problems = schemas().event_problems({"event": event, "data": data})
        assert problems == [], (event, problems)
        if event == name:
            found.append(data)
    return found


def test_every_remaining_device_says_once_to_change_the_password(
    laptop: Device, phone: Device, tablet: Device
) -> None:
    everyone = three(laptop, phone, tablet)
    old = fingerprint(laptop)
    tablet_id, laptop_id = device_id(tablet), device_id(laptop)
    for device in everyone:
        drain(device, "devices.member_removed")  # nothing about the history before: none
    tablet_rt = runtime(tablet)
    new = runtime(laptop).remove_device(tablet_id)
    settle(everyone, lambda: tablet_rt.removed and fingerprint(phone) == new)

    [removed] = drain(tablet, "device.removed")
    assert old in removed["account_keys"]  # what the tablet's Thunderbird got, to take out
    advice: dict[int, list[dict[str, Any]]] = {laptop.seed: [], phone.seed: []}

    def told() -> bool:
        for device in (laptop, phone):
            advice[device.seed] += drain(device, "devices.member_removed")
        return all(advice.values())

    settle([laptop, phone], told)
    for device in (laptop, phone):
        [event] = advice[device.seed]
        assert event["device_id"] == tablet_id
        assert event["name"] == "Tablet"
        assert event["by"] == laptop_id
        assert event["left"] is False
        assert event["by_this_device"] is (device is laptop)

    # Once: more syncs, and a restart, say nothing more.
    for device in (laptop, phone):
        runtime(device).sync()
        device.service.stop(wait=10)
        device.restart().runtime(ACCOUNT).sync()
        assert drain(device, "devices.member_removed") == []
