"""Device lifecycle through two real hosts, a real Dovecot and the real keyring: renaming, removal
with a key roll while the removed device is online, and what the removed device is left with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import paired

__all__ = ["dovecot", "mail"]


def me(host: CheckedHost, account: dict[str, str]) -> str:
    devices = host.call("devices.list", account)["devices"]
    return str(next(d["device_id"] for d in devices if d["self"]))


def test_removing_an_online_device_over_imap(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop, phone = paired(spawn, mail)
    phone_id = me(phone, account)
    renamed = laptop.call("device.rename", {**account, "device_id": phone_id, "name": "Old phone"})
    assert {d["name"] for d in renamed["devices"]} == {"Laptop", "Old phone"}
    assert all(d["stale"] is False for d in renamed["devices"])
    before = laptop.call("account.key", account)["fingerprint"]
    assert phone.call("account.key", account)["fingerprint"] == before

    refused = laptop.request("device.remove", {**account, "device_id": me(laptop, account)})
    assert refused["error"]["code"] == "invalid_params"
    result = laptop.call("device.remove", {**account, "device_id": phone_id})
    assert result["removed"] == phone_id
    assert result["account_key"] != before
    assert laptop.call("account.key", account)["fingerprint"] == result["account_key"]
    assert laptop.wait_event("account.key_rolled", 5)["fingerprint"] == result["account_key"]

    # The phone is online: it learns of it by itself (its inbox vanished; the log says why).
    removed = dict(phone.wait_event("device.removed", 20))
    keys = removed.pop("account_keys")
    assert removed == {"account": mail["account"], "device_id": phone_id, "by": me(laptop, account)}
    assert before in keys  # for the phone's add-on to take out of Thunderbird
    # The laptop tells its user, once, that the phone still knows the mailbox password.
    told = laptop.wait_event("devices.member_removed", 20)
    assert (told["device_id"], told["name"], told["by_this_device"]) == (
        phone_id,
        "Old phone",
        True,
    )
    assert phone.request("account.key", account)["error"]["code"] == "not_joined"
    assert phone.request("devices.list", account)["error"]["code"] == "not_joined"
    devices = laptop.call("devices.list", account)["devices"]
    assert [d["device_id"] for d in devices] == [me(laptop, account)]  # not even as unpaired
    for host in (laptop, phone):
        assert host.problems() == []
        assert "Traceback" not in host.stderr_text()
