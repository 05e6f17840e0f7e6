"""A stolen device, removed, tries to get back in: three real hosts, a real Dovecot, the real
Secret Service. The thief holds the stolen device's key (read from its keyring) and the mailbox
password, and appends log entries of its own making with a hash chosen to win the old fork rule."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import keyring

from native_host.adapters.imap_store import ImapStore
from native_host.adapters.keyring_secrets import SERVICE_PREFIX
from native_host.core import devicelog, envelope, layout
from native_host.core.crypto import DeviceKeys
from native_host.core.envelope import MessageType
from native_host.service.accounts import device_key_name
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import imap, paired
from tests.host.test_lifecycle_imap import me
from tests.host.test_pairing_imap import joined

__all__ = ["dovecot", "imap", "mail"]


def the_log(store: ImapStore) -> list[dict[str, Any]]:
    """Every log entry in the announcement folder, as anyone with the password reads them."""
    batch = store.fetch(
        layout.ANNOUNCE_FOLDER, None, limit=500, max_size=envelope.MAX_MESSAGE_BYTES
    )
    entries = []
    for message in batch.messages:
        assert message.raw is not None
        parsed = envelope.parse(message.raw)
        if parsed.type is MessageType.LOG:
            entries.append(parsed.data)
    return entries


def attack_findings(host: CheckedHost) -> list[str]:
    return [
        str(m["data"].get("finding"))
        for m in list(host.received)
        if m.get("event") == "security.alert" and m["data"]["kind"] == "device_log"
    ]


def test_a_removed_device_with_its_key_and_the_password_stays_out(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], imap: ImapStore
) -> None:
    account = {"account": mail["account"]}
    laptop, phone = paired(spawn, mail)
    tablet = joined(spawn, mail, "tablet", "Tablet")
    code = laptop.call("pairing.invite", account)["pairing"]["code"]
    tablet.call("pairing.join", {**account, "code": code})
    tablet.wait_event("pairing.completed", 15)
    laptop_id, phone_id, tablet_id = me(laptop, account), me(phone, account), me(tablet, account)
    deadline = time.monotonic() + 20
    while len([d for d in phone.call("devices.list", account)["devices"] if d["paired"]]) < 3:
        assert time.monotonic() < deadline, "the phone never saw the tablet paired"
        time.sleep(0.2)
    stolen = keyring.get_password(SERVICE_PREFIX + "tablet", device_key_name(mail["account"]))
    assert stolen is not None
    keys = DeviceKeys.from_secret(stolen)
    before = the_log(imap)
    tablet.close()  # the thief takes it offline: it never learns of its removal

    removed = laptop.call("device.remove", {**account, "device_id": tablet_id})
    new_key = removed["account_key"]
    genesis = next(e for e in before if e["op"] == "genesis")
    snapshot = devicelog.DeviceLog(devicelog.entry_hash(genesis))
    snapshot.receive_all(before)
    removal = next(e for e in the_log(imap) if e["op"] == "remove")
    below = devicelog.entry_hash(removal)

    def ground(make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        for at in range(10_000):
            entry = make(1_900_000_000 + at)
            if devicelog.entry_hash(entry) < below:
                return entry
        raise AssertionError("no smaller hash")

    thief_key = "F" * 40
    for entry in (
        ground(lambda at: devicelog.roll(snapshot, tablet_id, keys, thief_key, at)),
        ground(lambda at: devicelog.rename(snapshot, tablet_id, keys, tablet_id, "mine", at)),
    ):
        raw = envelope.build(
            MessageType.LOG, tablet_id, entry, account=mail["account"], now=1.9e9, random=os.urandom
        )
        imap.append(layout.ANNOUNCE_FOLDER, raw)

    for host in (laptop, phone):
        deadline = time.monotonic() + 30
        while attack_findings(host).count("removed_acted") < 2:
            assert time.monotonic() < deadline, (host, attack_findings(host))
            time.sleep(0.2)
        host.call("sync", account)
        paired_ids = {
            d["device_id"] for d in host.call("devices.list", account)["devices"] if d["paired"]
        }
        assert paired_ids == {laptop_id, phone_id}
        assert host.call("account.key", account)["fingerprint"] == new_key != thief_key
        assert "fork" not in attack_findings(host)
        assert host.problems() == []
