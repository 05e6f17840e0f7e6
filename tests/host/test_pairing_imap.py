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


def states(host: CheckedHost, account: dict[str, Any]) -> list[str]:
    return [p["state"] for p in host.call("pairing.list", account)["pairings"]]


def test_full_pairing_flow(spawn: Callable[..., CheckedHost], mail: dict[str, Any]) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    assert phone.request("account.key", account)["error"]["code"] == "not_joined"
    started = time.monotonic()
    invitation = laptop.call("pairing.invite", account)["pairing"]
    assert invitation["state"] == "inviting"
    assert invitation["role"] == "inviter"
    listed = laptop.call("pairing.list", account)
    assert [p["code"] for p in listed["pairings"]] == [invitation["code"]]
    assert listed["unsolicited_requests"] == 0
    joined_id = phone.call("pairing.join", {**account, "code": invitation["code"]})["pairing_id"]
    done = phone.wait_event("pairing.completed", 10)["pairing"]
    installed = time.monotonic() - started
    assert done["pairing_id"] == joined_id
    assert done["peer_name"] == "Laptop"
    old_done = laptop.wait_event("pairing.completed", 10)["pairing"]
    elapsed = time.monotonic() - started
    assert old_done["pairing_id"] == invitation["pairing_id"]
    assert old_done["peer_name"] == "Phone"
    assert old_done["code"] is None
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


def test_a_wrong_code_fails_both_devices_over_dovecot(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    code = laptop.call("pairing.invite", account)["pairing"]["code"]
    typo = code[:-1] + str((int(code[-1]) + 1) % 10)
    phone.call("pairing.join", {**account, "code": typo})
    for host in (laptop, phone):
        alert = host.wait_event("security.alert", 10)
        assert alert["kind"] == "pairing"
    for _ in range(50):
        if states(laptop, account) == states(phone, account) == ["failed"]:
            break
        time.sleep(0.1)
    assert states(laptop, account) == states(phone, account) == ["failed"]
    assert phone.request("account.key", account)["error"]["code"] == "not_joined"


def test_wrong_sides_bad_codes_and_unknown_pairings_are_clear_errors(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    unknown = laptop.request("pairing.cancel", {**account, "pairing_id": "0" * 32})["error"]
    assert unknown["code"] == "pairing_not_found"
    paired_join = laptop.request("pairing.join", {**account, "code": "123-456-7890"})["error"]
    assert paired_join["code"] == "invalid_request"  # already paired
    assert phone.request("pairing.invite", account)["error"]["code"] == "invalid_request"
    for bad in ("12", "abc-def-ghij"):
        error = phone.request("pairing.join", {**account, "code": bad})["error"]
        assert error["code"] == "invalid_params", bad
