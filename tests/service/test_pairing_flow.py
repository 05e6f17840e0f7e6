"""Pairing end to end in the service layer, on the in-memory account (the host-level test runs the
same flow on Dovecot): the code shown on the old device, typed on the new one, transfers the key
and the log admits the new device; a wrong code, a cancel or expiry transfers nothing."""

from __future__ import annotations

import contextlib
import queue
import time
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.pgp import load_secret
from native_host.core import envelope, layout
from native_host.core import pairing as pm
from native_host.errors import ErrorCode, HostError
from native_host.service.accounts import account_key_name
from tests.service.test_instance import ACCOUNT, Device, Server, configured


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def state(device: Device, pairing_id: str) -> str:
    pairing = device.service.runtime(ACCOUNT).trust.record.pairings.get(pairing_id)
    return str(pairing["state"]) if pairing else "unknown"


def invite(device: Device) -> tuple[str, str]:
    """ "Add a device" on `device`: (its pairing id, the code it shows)."""
    rt = device.service.runtime(ACCOUNT)
    invitation = rt.with_store(lambda store: rt.trust.invite(store))
    assert invitation.code is not None
    return invitation.pairing_id, invitation.code


def join(device: Device, code: str) -> str:
    """The code typed on the new `device`: its pairing id."""
    rt = device.service.runtime(ACCOUNT)
    return str(rt.with_store(lambda store: rt.trust.join(store, code)))


def pair(old: Device, new: Device) -> tuple[str, str]:
    """A whole honest pairing: (the inviter's pairing id, the joiner's), both completed."""
    invitation, code = invite(old)
    joined = join(new, code)
    wait_for(lambda: state(new, joined) == "completed" and state(old, invitation) == "completed")
    return invitation, joined


def alerts(device: Device) -> list[dict[str, Any]]:
    """Every security.alert the device emitted so far (the queue is drained into a list)."""
    seen: list[tuple[str, dict[str, Any]]] = device.__dict__.setdefault("seen_events", [])
    with contextlib.suppress(queue.Empty):
        while True:
            seen.append(device.events.get_nowait())
    return [d for e, d in seen if e == "security.alert"]


def test_pairing_transfers_the_account_key_and_admits_the_device(
    laptop: Device, phone: Device
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    old, new = laptop.service.runtime(ACCOUNT).trust, phone.service.runtime(ACCOUNT).trust
    invitation, code = invite(laptop)
    assert old.view(old.pairing(invitation))["code"] == code
    assert not new.is_paired()
    joined = join(phone, code)
    wait_for(
        lambda: state(phone, joined) == "completed" and state(laptop, invitation) == "completed"
    )
    assert new.is_paired()
    assert old.view(old.pairing(invitation))["code"] is None  # used up
    assert phone.secrets.get(account_key_name(ACCOUNT)) == laptop.secrets.get(
        account_key_name(ACCOUNT)
    )
    fingerprint = load_secret(phone.secrets.get(account_key_name(ACCOUNT)) or "").fingerprint
    assert old.device_log().account_key == fingerprint
    devices = laptop.service.runtime(ACCOUNT).devices()
    assert all(d["paired"] for d in devices)
    assert alerts(laptop) == alerts(phone) == []


def test_a_pairing_with_two_paired_devices_raises_no_alert(
    laptop: Device, phone: Device, server: Server, tmp_path: Path
) -> None:
    """0.1.0 asked every member; the second one's answer raised a spurious alert. Now only the
    device whose code was typed takes part."""
    from tests.service.test_instance import Device as NewDevice

    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone)
    tablet = NewDevice(tmp_path / "tablet", server, 3)
    configured(tablet, "Tablet")
    pair(phone, tablet)
    wait_for(lambda: all(d["paired"] for d in laptop.service.runtime(ACCOUNT).devices()))
    assert len(laptop.service.runtime(ACCOUNT).devices()) == 3
    for device in (laptop, phone, tablet):
        assert alerts(device) == [], device


def test_the_account_key_never_crosses_the_server_in_the_clear(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    seen: list[bytes] = []
    original = server.mailbox.append

    def spy(folder: str, message: bytes) -> int | None:
        seen.append(message)
        return original(folder, message)

    server.mailbox.append = spy  # type: ignore[method-assign]
    invitation, code = invite(laptop)
    pair_id = join(phone, code)
    wait_for(lambda: state(phone, pair_id) == "completed")
    secret = laptop.secrets.get(account_key_name(ACCOUNT)) or ""
    body = secret.splitlines()[3]
    assert seen
    for raw in seen:
        document = envelope.parse(raw).document
        assert body not in str(document)
        assert code.replace("-", "")[3:] not in str(document)  # the secret digits never travel
    assert invitation


def test_a_wrong_code_fails_both_sides_for_good_and_transfers_nothing(
    laptop: Device, phone: Device
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    invitation, code = invite(laptop)
    typo = code[:-1] + str((int(code[-1]) + 1) % 10)
    joined = join(phone, typo)
    wait_for(lambda: state(phone, joined) == "failed" and state(laptop, invitation) == "failed")
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None
    wait_for(lambda: len(alerts(laptop)) == 1 and len(alerts(phone)) == 1)
    assert alerts(laptop)[0]["kind"] == "pairing"
    # The right code afterwards does not revive the invitation: the user starts again.
    again = join(phone, code)
    time.sleep(0.5)
    assert state(laptop, invitation) == "failed"
    assert state(phone, again) == "joining"
    rt = laptop.service.runtime(ACCOUNT)
    with pytest.raises(HostError) as late:
        rt.with_store(lambda s: rt.trust.cancel(s, invitation))
    assert late.value.code is ErrorCode.PAIRING_STATE
    pair(laptop, phone)


def test_cancelling_either_side_transfers_nothing(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    invitation, code = invite(laptop)
    rt = laptop.service.runtime(ACCOUNT)
    rt.with_store(lambda s: rt.trust.cancel(s, invitation))
    assert state(laptop, invitation) == "rejected"
    joined = join(phone, code)
    time.sleep(0.5)
    assert state(phone, joined) == "joining"  # a cancelled invitation answers nothing
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None


def test_a_new_invitation_ends_the_open_one(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    first, _ = invite(laptop)
    second, _ = invite(laptop)
    assert state(laptop, first) == "rejected"
    assert state(laptop, second) == "inviting"


def test_an_invitation_expires_after_ten_minutes(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    invitation, code = invite(laptop)
    laptop.service.runtime(ACCOUNT)._clock.advance(601)  # type: ignore[attr-defined]
    old = laptop.service.runtime(ACCOUNT).trust
    with pytest.raises(HostError) as expired:
        laptop.service.runtime(ACCOUNT).with_store(lambda s: old.cancel(s, invitation))
    assert expired.value.code is ErrorCode.PAIRING_EXPIRED
    assert state(laptop, invitation) == "expired"
    joined = join(phone, code)
    time.sleep(0.5)
    assert state(phone, joined) == "joining"
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None


def test_bad_codes_and_wrong_sides_are_clear_errors(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    for code in ("12345", "999-999-9999" if pm.nameplate_of(laptop_id(laptop)) != "999" else "0"):
        with pytest.raises(HostError) as bad:
            join(phone, code)
        assert bad.value.code is ErrorCode.INVALID_PARAMS
    with pytest.raises(HostError) as unpaired:
        invite(phone)
    assert unpaired.value.code is ErrorCode.INVALID_REQUEST


def laptop_id(device: Device) -> str:
    record = device.service.runtime(ACCOUNT).record.device
    assert record is not None
    return record.device_id


def test_a_forged_inbox_message_is_reported_and_dropped(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    me = laptop.service.runtime(ACCOUNT).record.device
    assert me is not None
    server.mailbox.append(
        layout.inbox_folder(me.device_id), b"Subject: hi\r\nAutocrypt-SMA: 1\r\n\r\nx"
    )
    alert = laptop.wait_event("security.alert")
    assert alert["kind"] == "inbox"
    wait_for(lambda: server.mailbox.status(layout.inbox_folder(me.device_id)).messages == 0)


def test_a_genesis_whose_append_failed_is_published_by_the_next_join(
    laptop: Device, server: Server
) -> None:
    from native_host.ports import StoreError

    original = server.mailbox.append
    failed: list[bool] = []

    def flaky(folder: str, message: bytes) -> int | None:
        if not failed and envelope.parse(message).type.value == "log":
            failed.append(True)
            raise StoreError("connection cut")
        return original(folder, message)

    server.mailbox.append = flaky  # type: ignore[method-assign]
    laptop.service.configure(ACCOUNT, laptop_settings(), "right")
    runtime = laptop.service.runtime(ACCOUNT)
    with pytest.raises(StoreError):
        runtime.join("Laptop")
    assert runtime.trust.record.unpublished  # saved, queued, not lost
    runtime.join("Laptop")
    assert runtime.trust.record.unpublished == []
    logs = [
        m
        for m in server.mailbox.fetch(
            layout.ANNOUNCE_FOLDER, None, limit=50, max_size=1 << 20
        ).messages
    ]
    assert sum(envelope.parse(m.raw or b"").type.value == "log" for m in logs) == 1
    assert runtime.trust.is_paired()


def laptop_settings() -> Any:
    from tests.service.test_instance import SETTINGS

    return SETTINGS


class Crash(BaseException):
    """The process dies here (nothing after it runs, nothing catches it)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("kind", ["pair-request", "pair-accept", "pair-confirm", "pair-key"])
def test_a_crash_before_a_pairing_message_is_sent_loses_nothing(
    laptop: Device, phone: Device, server: Server, kind: str
) -> None:
    """The step is saved, then the device dies before its message reaches the server: after
    the restart the message is sent and the pairing completes, once."""
    original = server.mailbox.append
    crashed: list[bool] = []

    def dying(folder: str, message: bytes) -> int | None:
        if not crashed and envelope.parse(message).type.value == kind:
            crashed.append(True)
            raise Crash(kind)  # in the API call or in the background sync that sent it
        return original(folder, message)

    server.mailbox.append = dying  # type: ignore[method-assign]
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    sender = phone if kind in ("pair-request", "pair-confirm") else laptop
    invitation, code = invite(laptop)
    new = phone.service.runtime(ACCOUNT)
    with contextlib.suppress(Crash):
        new.with_store(lambda store: new.trust.join(store, code))
    [joined] = new.trust.record.pairings
    wait_for(lambda: bool(crashed))
    sender.service.stop()
    sender.restart().start_background()
    wait_for(
        lambda: state(phone, joined) == "completed" and state(laptop, invitation) == "completed"
    )
    assert crashed == [True]
    for device, pairing_id in ((laptop, invitation), (phone, joined)):
        rt = device.service.runtime(ACCOUNT)
        assert list(rt.trust.record.pairings) == [pairing_id]
        assert rt.trust.record.outbox == []
        ops = [(e["op"], e["device_id"]) for e in rt.trust.device_log().entries()]
        assert [op for op, _ in ops] == ["genesis", "add"]
