"""The server deletes a device's inbox folder: what is sent to it meanwhile is not lost, and once
the owner has recreated it (new UIDVALIDITY) it reads what arrives there. Found by
tests/adversary: after the attack a new device's pair-request went to an inbox the adversary had
just deleted, the sender dropped it, and that pairing hung until it expired."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from native_host.core import layout
from native_host.service.runtime import AccountRuntime
from native_host.service.trust import OUTBOX_RETRY
from tests.service.imap_backed import dovecot, server_fixture
from tests.service.test_instance import ACCOUNT, Device, Server, configured

__all__ = ["dovecot"]


@pytest.fixture(params=["memory", "dovecot"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from server_fixture(request)


def manual(device: Device, name: str) -> AccountRuntime:
    """A joined device whose syncs the test runs itself (no background loops)."""
    configured(device, name)
    device.service.stop()
    return device.restart().runtime(ACCOUNT)


def clock(device: Device) -> Any:
    return device.service._clock  # type: ignore[attr-defined]


def state(runtime: AccountRuntime, pairing_id: str) -> str | None:
    data = runtime.record.pairings.get(pairing_id)
    return None if data is None else str(data["state"])


def test_a_pair_request_to_a_deleted_inbox_arrives_once_the_owner_recreated_it(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt = manual(laptop, "Laptop")
    phone_rt = manual(phone, "Phone")
    laptop_rt.sync()
    phone_rt.sync()
    laptop_id = laptop_rt.trust.me
    inbox = layout.inbox_folder(laptop_id)
    before = server.mailbox.status(inbox).uidvalidity
    server.mailbox.delete_folder(inbox)  # the server, just before the phone asks

    invitation = laptop_rt.with_store(lambda s: laptop_rt.trust.invite(s))
    pairing_id = invitation.pairing_id
    joined = phone_rt.with_store(lambda s: phone_rt.trust.join(s, str(invitation.code)))
    assert [m["to"] for m in phone_rt.record.outbox] == [laptop_id]  # kept, not dropped
    assert phone_rt.trust.outbox_due() == clock(phone)() + OUTBOX_RETRY
    phone_rt.sync()  # too early for a retry: nothing changes
    assert len(phone_rt.record.outbox) == 1

    laptop_rt.sync()  # finds its inbox gone, recreates it, reports it
    assert server.mailbox.status(inbox).uidvalidity != before
    assert state(laptop_rt, pairing_id) == "inviting"
    clock(phone).advance(OUTBOX_RETRY)
    phone_rt.sync()  # the retry lands in the recreated inbox
    assert phone_rt.record.outbox == []
    assert phone_rt.trust.outbox_due() is None
    laptop_rt.sync()
    assert state(laptop_rt, pairing_id) == "confirming"  # the request was read

    # And the pairing runs to the end through the recreated inbox.
    for _ in range(4):
        phone_rt.sync()
        laptop_rt.sync()
    assert state(laptop_rt, pairing_id) == state(phone_rt, joined) == "completed"
    alerts = []
    while not laptop.events.empty():
        name, data = laptop.events.get()
        if name == "security.alert":
            alerts.append(data["message"])
    assert any("inbox folder was deleted" in a for a in alerts), alerts


def test_a_message_to_a_missing_inbox_is_given_up_when_its_pairing_expires(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt = manual(laptop, "Laptop")
    phone_rt = manual(phone, "Phone")
    laptop_rt.sync()
    phone_rt.sync()
    laptop_id = laptop_rt.trust.me
    invitation = laptop_rt.with_store(lambda s: laptop_rt.trust.invite(s))
    server.mailbox.delete_folder(layout.inbox_folder(laptop_id))  # and the laptop never returns
    phone_rt.with_store(lambda s: phone_rt.trust.join(s, str(invitation.code)))
    for _ in range(5):
        clock(phone).advance(OUTBOX_RETRY)
        phone_rt.sync()
    assert len(phone_rt.record.outbox) == 1  # still trying, one message, not one per try
    clock(phone).advance(600)
    phone_rt.sync()
    assert phone_rt.record.outbox == []
    assert phone_rt.trust.outbox_due() is None
