"""Device lifecycle between real runtimes on the in-memory store: removal online and offline with
a key roll, leaving, renaming, stale expiry with an injected clock, and concurrent removals."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from native_host.adapters.pgp import load_secret
from native_host.core import layout
from native_host.core.keysync import seal_chunk
from native_host.errors import ErrorCode, HostError
from native_host.service.accounts import (
    account_key_name,
    device_key_name,
    next_key_name,
    old_keys_name,
)
from tests.service.imap_backed import dovecot, server_fixture
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_keysync_flow import (
    T0,
    key_for,
    keys,
    mail,
    pair,
    runtime,
    settle,
    table,
)

__all__ = ["dovecot", "keys"]


@pytest.fixture(params=["memory", "dovecot"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from server_fixture(request)


def fingerprint(device: Device) -> str | None:
    armored = device.secrets.get(account_key_name(ACCOUNT))
    return None if armored is None else load_secret(armored).fingerprint


def device_id(device: Device) -> str:
    record = runtime(device).record.device
    assert record is not None
    return record.device_id


@pytest.fixture
def tablet(tmp_path: Path, server: Server) -> Device:
    return Device(tmp_path / "tablet", server, 3)


def three(laptop: Device, phone: Device, tablet: Device) -> list[Device]:
    for device, name in ((laptop, "Laptop"), (phone, "Phone"), (tablet, "Tablet")):
        configured(device, name)
    pair(laptop, phone, [laptop, phone])
    pair(laptop, tablet, [laptop, phone, tablet])
    everyone = [laptop, phone, tablet]
    settle(everyone, lambda: all(runtime(d).trust.is_paired() for d in everyone))
    settle(
        everyone, lambda: all(len(runtime(d).trust.device_log().members()) == 3 for d in everyone)
    )
    return everyone


def test_removing_an_online_device_rolls_the_key_and_shuts_it_out(
    laptop: Device, phone: Device, tablet: Device, server: Server, keys: list[bytes]
) -> None:
    everyone = three(laptop, phone, tablet)
    old = fingerprint(laptop)
    assert old == fingerprint(phone) == fingerprint(tablet)
    tablet_id = device_id(tablet)
    tablet_rt = runtime(tablet)
    result = runtime(laptop).remove_device(tablet_id)
    assert result is not None
    assert result != old
    settle(everyone, lambda: fingerprint(phone) == result)
    settle(everyone, lambda: tablet_rt.removed)
    removed = tablet.wait_event("device.removed")
    assert removed["device_id"] == tablet_id
    assert removed["by"] == device_id(laptop)
    # The removed device forgot every secret of the account; the others keep the old key.
    assert tablet.secrets.get(account_key_name(ACCOUNT)) is None
    assert tablet.secrets.get(device_key_name(ACCOUNT)) is None
    assert runtime(laptop).lifecycle.old_key_count() == 1
    assert runtime(phone).lifecycle.old_key_count() == 1
    log = runtime(phone).trust.device_log()
    assert log.account_key == result
    assert tablet_id not in log.members()
    assert layout.inbox_folder(tablet_id) not in server.mailbox.list_folders(layout.INBOX_PREFIX)
    # What comes after the removal never reaches it: key sync goes to the phone only.
    runtime(laptop).peers.ingest(mail("late@example.net", key_for("late@example.net"), T0))
    settle([laptop, phone], lambda: "late@example.net" in table(phone))
    assert layout.inbox_folder(tablet_id) not in server.mailbox.list_folders(layout.INBOX_PREFIX)
    # It can come back only as a new device, through a new pairing.
    fresh = tablet.service.runtime(ACCOUNT)
    assert fresh.record.device is None
    fresh.join("Tablet again")
    assert device_id(tablet) != tablet_id
    assert not fresh.trust.is_paired()
    assert fingerprint(tablet) is None


def test_a_removed_device_that_was_offline_finds_out_when_it_returns(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    three(laptop, phone, tablet)
    tablet_id = device_id(tablet)
    tablet.service.stop(wait=10)
    new = runtime(phone).remove_device(tablet_id)
    settle([laptop, phone], lambda: fingerprint(laptop) == new)
    back = tablet.restart().runtime(ACCOUNT)
    back.sync()  # its inbox is gone; the log says why
    assert back.removed
    assert tablet.wait_event("device.removed")["device_id"] == tablet_id
    assert fingerprint(tablet) is None


def test_a_removed_device_cannot_push_key_updates_any_more(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    three(laptop, phone, tablet)
    tablet_rt = runtime(tablet)
    tablet_id, tablet_keys = device_id(tablet), tablet_rt.trust.device_keys()
    laptop_id = device_id(laptop)
    laptop_public = runtime(laptop).trust.device_log().members()[laptop_id].keys
    runtime(phone).remove_device(tablet_id)
    settle([laptop, phone], lambda: not runtime(laptop).trust.device_log().is_member(tablet_id))
    # The removed device (or whoever stole it) still has its device key and tries anyway.
    forged = seal_chunk(
        b"x\x9c\x03\x00\x00\x00\x00\x01",
        sender=tablet_id,
        sender_keys=tablet_keys,
        recipient=laptop_id,
        recipient_keys=laptop_public,
        account=ACCOUNT,
        now=T0,
        random=lambda n: bytes(n),
    )
    server.mailbox.append(layout.inbox_folder(laptop_id), forged)
    runtime(laptop).sync()
    seen = []
    while not laptop.events.empty():
        seen.append(laptop.events.get())
    alerts = [data["message"] for name, data in seen if name == "security.alert"]
    assert any("not a member" in a for a in alerts), alerts


def test_leaving_makes_the_smallest_remaining_device_roll_the_key(
    laptop: Device, phone: Device, tablet: Device
) -> None:
    everyone = three(laptop, phone, tablet)
    old = fingerprint(laptop)
    tablet_rt = runtime(tablet)
    tablet_id = device_id(tablet)
    tablet_rt.leave()
    assert tablet_rt.removed
    assert tablet.wait_event("device.removed")["by"] == tablet_id
    assert fingerprint(tablet) is None
    rest = [laptop, phone]
    settle(rest, lambda: fingerprint(laptop) == fingerprint(phone) != old)
    log = runtime(laptop).trust.device_log()
    assert log.account_key == fingerprint(laptop)
    assert set(log.members()) == {device_id(laptop), device_id(phone)}
    assert everyone


def test_renaming_is_seen_by_every_device(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    runtime(laptop).rename_device(device_id(phone), "Old phone")
    settle(
        [laptop, phone],
        lambda: {d["name"] for d in runtime(phone).devices()} == {"Laptop", "Old phone"},
    )


def test_stale_devices_expire_by_the_injected_clock(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    phone.service.stop()  # the phone is never used again
    assert [d["stale"] for d in runtime(laptop).devices()] == [False, False]
    assert runtime(laptop).expire(90) == []
    laptop.service._clock.advance(91 * 86400)  # type: ignore[attr-defined]
    runtime(laptop).sync()  # the laptop refreshes its own announcement (daily), not the phone's
    views = {d["name"]: d["stale"] for d in runtime(laptop).devices()}
    assert views == {"Laptop": False, "Phone": True}
    removed = runtime(laptop).expire(90)
    assert removed == [device_id(phone)]
    assert not runtime(laptop).trust.device_log().is_member(removed[0])


def test_concurrent_removals_settle_on_one_key(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    everyone = three(laptop, phone, tablet)
    for device in everyone:
        device.service.stop(
            wait=10
        )  # no background sync: both removals happen before either is seen
    laptop_rt = laptop.restart().runtime(ACCOUNT)
    phone_rt = phone.restart().runtime(ACCOUNT)
    tablet_id = device_id(tablet)
    first = laptop_rt.remove_device(tablet_id)
    second = phone_rt.remove_device(tablet_id)
    assert first != second
    for _ in range(6):
        laptop_rt.sync()
        phone_rt.sync()
    chain = laptop_rt.trust.device_log()
    assert chain.account_key == phone_rt.trust.device_log().account_key
    assert chain.account_key in (first, second)
    assert fingerprint(laptop) == fingerprint(phone) == chain.account_key
    assert tablet_id not in chain.members()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_remove_refuses_what_makes_no_sense(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    with pytest.raises(HostError) as unpaired:
        runtime(phone).remove_device(device_id(laptop))
    assert unpaired.value.code is ErrorCode.NOT_PAIRED
    with pytest.raises(HostError) as last:
        runtime(laptop).remove_device(device_id(laptop))
    assert last.value.code is ErrorCode.INVALID_REQUEST


class Crash(BaseException):
    """The process dies here (nothing after it runs, nothing catches it)."""


@pytest.mark.parametrize("where", ["before-folders", "before-remove-entry"])
def test_a_removal_cut_short_by_a_crash_is_finished_after_the_restart(
    laptop: Device,
    phone: Device,
    tablet: Device,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    three(laptop, phone, tablet)
    old = fingerprint(laptop)
    tablet_id = device_id(tablet)
    tablet_rt = runtime(tablet)
    laptop_rt = runtime(laptop)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise Crash(where)

    if where == "before-folders":  # the `remove` entry (with the new key) is on the server
        monkeypatch.setattr(laptop_rt.lifecycle, "_drop_device_folders", crash)
    else:  # the intent and the next key are saved, the `remove` entry is not
        monkeypatch.setattr("native_host.service.lifecycle.devicelog.remove", crash)
    with pytest.raises(Crash):
        laptop_rt.remove_device(tablet_id)
    monkeypatch.undo()
    laptop.service.stop(wait=10)
    back = laptop.restart().runtime(ACCOUNT)
    back.sync()  # the restarted host's first sync finishes the removal
    rest = [laptop, phone]
    settle(rest, lambda: fingerprint(laptop) == fingerprint(phone) != old)
    chain = back.trust.device_log()
    assert chain.account_key == fingerprint(laptop)
    removals = [e for e in chain.entries() if e["op"] == "remove"]
    assert len(removals) == 1  # one entry removes and rolls; no second key, no `roll`
    assert removals[0]["account_key"] == chain.account_key
    assert [e["op"] for e in chain.entries()].count("roll") == 0
    assert set(chain.members()) == {device_id(laptop), device_id(phone)}
    assert layout.inbox_folder(tablet_id) not in server.mailbox.list_folders(layout.INBOX_PREFIX)
    settle([tablet], lambda: tablet_rt.removed)
    assert fingerprint(tablet) is None


def test_no_account_key_outlives_the_membership_it_came_with(laptop: Device) -> None:
    """Earlier keys (kept after rolls) and a next key go with the rest: when the account is
    removed, and when a device identity starts anew over what an earlier life left behind
    (found by tests/host/test_secret_key_imap.py, whose instances met an earlier test's keys)."""
    stale = {
        old_keys_name(ACCOUNT): '["an earlier life\'s key"]',
        next_key_name(ACCOUNT): "an earlier life's next key",
    }
    for name, value in stale.items():
        laptop.secrets.set(name, value)
    configured(laptop, "Laptop")  # joins as a new device
    assert all(laptop.secrets.get(name) is None for name in stale)
    assert runtime(laptop).lifecycle.old_key_count() == 0
    for name, value in stale.items():
        laptop.secrets.set(name, value)
    laptop.service.remove(ACCOUNT)
    for name in (*stale, account_key_name(ACCOUNT), device_key_name(ACCOUNT)):
        assert laptop.secrets.get(name) is None, name
