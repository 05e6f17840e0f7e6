"""Pairing end to end in the service layer, on the in-memory account (the host-level test runs the
same flow on Dovecot): codes agree, approval transfers the key, the log admits the new device."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from native_host.adapters.pgp import load_secret
from native_host.core import envelope, layout
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


def showing(laptop: Device, phone: Device) -> str:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pairing_id = phone.service.runtime(ACCOUNT).with_store(
        lambda store: phone.service.runtime(ACCOUNT).trust.request(store, None)
    )
    wait_for(
        lambda: state(laptop, pairing_id) == "showing" and state(phone, pairing_id) == "showing"
    )
    return pairing_id


def test_pairing_transfers_the_account_key_and_admits_the_device(
    laptop: Device, phone: Device
) -> None:
    pairing_id = showing(laptop, phone)
    requested = laptop.wait_event("pairing.requested")
    old, new = laptop.service.runtime(ACCOUNT).trust, phone.service.runtime(ACCOUNT).trust
    codes = {old.view(old.pairing(pairing_id))["sas"], new.view(new.pairing(pairing_id))["sas"]}
    assert len(codes) == 1
    assert requested["pairing"]["sas"] in codes
    assert not new.is_paired()
    laptop.service.runtime(ACCOUNT).with_store(lambda s: old.decide(s, pairing_id, True))
    phone.service.runtime(ACCOUNT).with_store(lambda s: new.decide(s, pairing_id, True))
    wait_for(
        lambda: state(phone, pairing_id) == "completed" and state(laptop, pairing_id) == "completed"
    )
    assert new.is_paired()
    assert phone.secrets.get(account_key_name(ACCOUNT)) == laptop.secrets.get(
        account_key_name(ACCOUNT)
    )
    fingerprint = load_secret(phone.secrets.get(account_key_name(ACCOUNT)) or "").fingerprint
    assert old.device_log().account_key == fingerprint
    devices = laptop.service.runtime(ACCOUNT).devices()
    assert all(d["paired"] for d in devices)


def test_the_account_key_never_crosses_the_server_in_the_clear(
    laptop: Device, phone: Device, server: Server
) -> None:
    pairing_id = showing(laptop, phone)
    seen: list[bytes] = []
    original = server.mailbox.append

    def spy(folder: str, message: bytes) -> int | None:
        seen.append(message)
        return original(folder, message)

    server.mailbox.append = spy  # type: ignore[method-assign]
    old, new = laptop.service.runtime(ACCOUNT).trust, phone.service.runtime(ACCOUNT).trust
    laptop.service.runtime(ACCOUNT).with_store(lambda s: old.decide(s, pairing_id, True))
    phone.service.runtime(ACCOUNT).with_store(lambda s: new.decide(s, pairing_id, True))
    wait_for(lambda: state(phone, pairing_id) == "completed")
    secret = laptop.secrets.get(account_key_name(ACCOUNT)) or ""
    body = secret.splitlines()[3]
    assert seen
    for raw in seen:
        document = envelope.parse(raw).document
        assert body not in str(document)


def test_rejecting_on_either_side_transfers_nothing(laptop: Device, phone: Device) -> None:
    pairing_id = showing(laptop, phone)
    old, new = laptop.service.runtime(ACCOUNT).trust, phone.service.runtime(ACCOUNT).trust
    phone.service.runtime(ACCOUNT).with_store(lambda s: new.decide(s, pairing_id, False))
    wait_for(lambda: state(laptop, pairing_id) == "rejected")
    with pytest.raises(HostError) as late:
        laptop.service.runtime(ACCOUNT).with_store(lambda s: old.decide(s, pairing_id, True))
    assert late.value.code is ErrorCode.PAIRING_STATE
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None


def test_a_pairing_expires_after_ten_minutes(laptop: Device, phone: Device) -> None:
    pairing_id = showing(laptop, phone)
    laptop.service.runtime(ACCOUNT)._clock.advance(601)  # type: ignore[attr-defined]
    old = laptop.service.runtime(ACCOUNT).trust
    with pytest.raises(HostError) as expired:
        laptop.service.runtime(ACCOUNT).with_store(lambda s: old.decide(s, pairing_id, True))
    assert expired.value.code is ErrorCode.PAIRING_EXPIRED
    assert state(laptop, pairing_id) == "expired"


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
@pytest.mark.parametrize("kind", ["pair-request", "pair-accept", "pair-reveal", "pair-key"])
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
    sender = phone if kind in ("pair-request", "pair-reveal") else laptop
    new = phone.service.runtime(ACCOUNT)
    with contextlib.suppress(Crash):
        new.with_store(lambda store: new.trust.request(store, None))
    [pairing_id] = new.trust.record.pairings

    def decide(device: Device) -> None:
        rt = device.service.runtime(ACCOUNT)
        with contextlib.suppress(Crash):
            rt.with_store(lambda s: rt.trust.decide(s, pairing_id, True))

    def restart_if_crashed() -> None:
        if crashed and crashed[0]:
            crashed[0] = False  # (restart once)
            sender.service.stop()
            sender.restart().start_background()

    for device in (laptop, phone):
        wait_for(lambda d=device: bool(crashed) or state(d, pairing_id) == "showing")
        restart_if_crashed()
        wait_for(lambda d=device: state(d, pairing_id) == "showing")
    decide(laptop)
    restart_if_crashed()
    decide(phone)
    wait_for(
        lambda: state(phone, pairing_id) == "completed" and state(laptop, pairing_id) == "completed"
    )
    assert crashed == [False]
    for device in (laptop, phone):
        rt = device.service.runtime(ACCOUNT)
        assert list(rt.trust.record.pairings) == [pairing_id]
        assert rt.trust.record.outbox == []
        ops = [(e["op"], e["device_id"]) for e in rt.trust.device_log().entries()]
        assert [op for op, _ in ops] == ["genesis", "add"]
