"""Pairing through two real hosts, a real Dovecot and the real keyring, as the add-on drives it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import device, dovecot, mail

__all__ = ["dovecot", "mail"]


def joined(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], instance: str, name: str
) -> CheckedHost:
    host = device(spawn, instance)
    host.call("account.configure", mail)
    host.call("sma.join", {"account": mail["account"], "device_name": name})
    return host


def test_full_pairing_flow(spawn: Callable[..., CheckedHost], mail: dict[str, Any]) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    assert phone.request("account.key", account)["error"]["code"] == "not_joined"
    started = time.monotonic()
    pairing_id = phone.call("pairing.request", account)["pairing_id"]
    requested = laptop.wait_event("pairing.requested", 10)["pairing"]
    shown = phone.wait_event("pairing.updated", 10)["pairing"]
    while shown["sas"] is None:
        shown = phone.wait_event("pairing.updated", 10)["pairing"]
    assert requested["pairing_id"] == pairing_id
    assert requested["sas"] == shown["sas"]
    assert requested["peer_name"] == "Phone"
    listed = laptop.call("pairing.list", account)["pairings"]
    assert [p["sas"] for p in listed] == [requested["sas"]]
    laptop.call("pairing.approve", {**account, "pairing_id": pairing_id})
    phone.call("pairing.approve", {**account, "pairing_id": pairing_id})
    phone.wait_event("pairing.completed", 10)
    installed = time.monotonic() - started
    laptop.wait_event("pairing.completed", 10)
    elapsed = time.monotonic() - started
    print(
        f"pairing wall time: new device holds the key after {installed:.2f} s, both completed after {elapsed:.2f} s"
    )
    old_key = laptop.call("account.key", account)
    new_key = phone.call("account.key", account)
    assert new_key == old_key
    assert "BEGIN PGP PUBLIC KEY BLOCK" in new_key["public_key"]
    for host in (laptop, phone):
        devices = host.call("devices.list", account)["devices"]
        assert [d["paired"] for d in devices] == [True, True]
    assert elapsed < 10


def test_approving_twice_or_unknown_pairings_are_clear_errors(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    unknown = laptop.request("pairing.approve", {**account, "pairing_id": "0" * 32})["error"]
    assert unknown["code"] == "pairing_not_found"
    assert (
        laptop.request("pairing.request", account)["error"]["code"] == "invalid_request"
    )  # already paired
