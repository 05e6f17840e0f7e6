"""The server deletes a device's inbox folder: what is sent to it meanwhile is not lost, and once
the owner has recreated it (new UIDVALIDITY) it reads what arrives there. Found by
tests/adversary: after the attack a new device's pair-request went to an inbox the adversary had
just deleted, the sender dropped it, and that pairing hung until it expired. And a folder that
vanishes between a key-sync resend and the delete of the batch it replaces (its owner was just
removed) fails no sync: tests/stress/test_load met that race in CI. Nor does an inbox that goes
between its status and its read: the next cycle decides (removed, or recreate and report)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from native_host.core import layout
from native_host.core.keysync import RETRY_MIN, SEND_MAX_DELAY
from native_host.service.runtime import AccountRuntime
from native_host.service.trust import OUTBOX_RETRY
from tests.service.imap_backed import dovecot, server_fixture
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_keysync_flow import T0, key_for, mail

__all__ = ["dovecot"]


@pytest.fixture(params=["memory", "dovecot"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    yield from server_fixture(request)


def manual(device: Device, name: str) -> AccountRuntime:
    """A joined device whose syncs the test runs itself (no background loops)."""
    configured(device, name)
    device.service.stop()
    return device.restart().runtime(ACCOUNT)


def both(laptop: Device, phone: Device) -> tuple[AccountRuntime, AccountRuntime]:
    """A laptop and a phone on the account, each synced once, not paired."""
    laptop_rt, phone_rt = manual(laptop, "Laptop"), manual(phone, "Phone")
    laptop_rt.sync()
    phone_rt.sync()
    return laptop_rt, phone_rt


def alerts(device: Device) -> list[str]:
    """The security alerts the device raised so far (taken from its events)."""
    said = []
    while not device.events.empty():
        name, data = device.events.get()
        if name == "security.alert":
            said.append(data["message"])
    return said


def clock(device: Device) -> Any:
    return device.service._clock  # type: ignore[attr-defined]


def state(runtime: AccountRuntime, pairing_id: str) -> str | None:
    data = runtime.record.pairings.get(pairing_id)
    return None if data is None else str(data["state"])


def test_a_pair_request_to_a_deleted_inbox_arrives_once_the_owner_recreated_it(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt, phone_rt = both(laptop, phone)
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
    said = alerts(laptop)
    assert any("inbox folder was deleted" in a for a in said), said


def test_a_message_to_a_missing_inbox_is_given_up_when_its_pairing_expires(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt, phone_rt = both(laptop, phone)
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


class DeletesAfterAppend:
    """The laptop's connection; right after it appends to `inbox`, another device (the one that
    removed its owner) deletes that folder: the race tests/stress/test_load met in CI."""

    def __init__(self, store: Any, server: Server, inbox: str) -> None:
        self._store, self._server, self._inbox = store, server, inbox
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(self, folder: str, message: bytes) -> int | None:
        uid: int | None = self._store.append(folder, message)
        if self.armed and folder == self._inbox:
            self.armed = False
            self._server.mailbox.delete_folder(folder)
        return uid


def test_a_key_sync_resend_to_an_inbox_deleted_meanwhile_does_not_fail_the_sync(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt, phone_rt = both(laptop, phone)
    invitation = laptop_rt.with_store(lambda s: laptop_rt.trust.invite(s))
    joined = phone_rt.with_store(lambda s: phone_rt.trust.join(s, str(invitation.code)))
    for _ in range(6):
        phone_rt.sync()
        laptop_rt.sync()
    assert state(laptop_rt, invitation.pairing_id) == state(phone_rt, joined) == "completed"
    phone_inbox = layout.inbox_folder(phone_rt.trust.me)

    addr = "carol@example.net"
    laptop_rt.peers.ingest(mail(addr, key_for(addr), T0))
    clock(laptop).advance(SEND_MAX_DELAY + 1)
    laptop_rt.sync()  # a batch to the phone, which does not read it yet
    assert server.mailbox.status(phone_inbox).messages >= 1
    link = laptop_rt.peers.sync.repo.link(phone_rt.trust.me)
    assert link is not None
    assert link.pending
    assert link.acked < link.sent

    wrapped = DeletesAfterAppend(laptop_rt._connected(), server, phone_inbox)
    laptop_rt._store = wrapped  # type: ignore[assignment]
    wrapped.armed = True
    clock(laptop).advance(RETRY_MIN + 1)
    laptop_rt.sync()  # the resend lands, then the folder (with the batch it replaces) is gone
    assert not wrapped.armed, "the laptop resent nothing: the race was not run"
    assert phone_inbox not in server.mailbox.list_folders(layout.ANNOUNCE_FOLDER)
    laptop_rt.sync()  # and later cycles are quiet too


class DeletesBeforeFetch:
    """The phone's connection; the folder it is about to read is deleted first."""

    def __init__(self, store: Any, server: Server, inbox: str) -> None:
        self._store, self._server, self._inbox = store, server, inbox
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def fetch(self, folder: str, *args: Any, **kwargs: Any) -> Any:
        if self.armed and folder == self._inbox:
            self.armed = False
            self._server.mailbox.delete_folder(folder)
        return self._store.fetch(folder, *args, **kwargs)


def test_an_inbox_deleted_between_its_status_and_its_read_is_no_outage(
    laptop: Device, phone: Device, server: Server
) -> None:
    _laptop_rt, phone_rt = both(laptop, phone)
    phone_inbox = layout.inbox_folder(phone_rt.trust.me)
    phone_rt.record.inbox.status = None  # as if something arrived: the phone reads its inbox
    wrapped = DeletesBeforeFetch(phone_rt._connected(), server, phone_inbox)
    phone_rt._store = wrapped  # type: ignore[assignment]
    phone_rt.sync()  # no error: the status said the inbox was there, then it was gone
    assert not wrapped.armed, "the phone did not read its inbox: the race was not run"
    phone_rt.sync()  # the next cycle finds it missing: not removed, so it recreates and says so
    assert phone_inbox in server.mailbox.list_folders(layout.ANNOUNCE_FOLDER)
    said = alerts(phone)
    assert any("inbox folder was deleted" in a for a in said), said
