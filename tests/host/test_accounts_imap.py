"""Accounts and the SMA through the real host, a real Dovecot and the real OS keyring.

Two hosts with two instances are two devices (two Thunderbird profiles); they find each other
through the account's SMA, and the first hears of the second by push.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest

from native_host.adapters.keyring_secrets import SERVICE_PREFIX
from native_host.service.accounts import password_name
from tests.host.harness import CheckedHost
from tests.servers.common import free_port
from tests.servers.dovecot_server import DovecotServer


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail(dovecot: DovecotServer) -> dict[str, Any]:
    user, password = dovecot.new_account()
    return {
        "account": f"{user}@example.org",
        "imap": {"host": dovecot.host, "port": dovecot.port, "security": "none", "username": user},
        "password": password,
    }


def device(spawn: Callable[..., CheckedHost], instance: str) -> CheckedHost:
    host = spawn()
    host.call("hello", {"instance": instance})
    return host


def test_two_devices_join_and_discover_each_other_by_push(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    laptop, phone = device(spawn, "laptop"), device(spawn, "phone")
    account = mail["account"]
    assert laptop.call("account.configure", mail) == {"account": account}
    first = laptop.call("sma.join", {"account": account, "device_name": "Laptop"})
    assert first["first_device"] is True
    phone.call("account.configure", mail)
    started = time.monotonic()
    second = phone.call("sma.join", {"account": account, "device_name": "Phone"})
    assert second["first_device"] is False
    assert {d["name"] for d in second["devices"]} == {"Laptop", "Phone"}
    # The laptop is told without asking: IDLE on the announcement folder, then a sync.
    changed = laptop.wait_event("devices.changed", timeout=5)
    latency = time.monotonic() - started
    assert {d["name"] for d in changed["devices"]} == {"Laptop", "Phone"}
    assert latency < 2.0, f"push took {latency:.2f} s"
    listed = laptop.call("devices.list", {"account": account})["devices"]
    assert [d["self"] for d in listed if d["name"] == "Laptop"] == [True]
    assert {d["device_id"] for d in listed} == {first["device_id"], second["device_id"]}


def test_password_lives_in_the_keyring_only(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    laptop = device(spawn, "laptop")
    laptop.call("account.configure", mail)
    [listed] = laptop.call("account.list")["accounts"]
    assert listed["device_id"] is None
    assert "password" not in listed["imap"]
    service = SERVICE_PREFIX + "laptop"
    assert keyring.get_password(service, password_name(mail["account"])) == mail["password"]
    home = Path(laptop.stderr_path).parent
    for path in home.rglob("*"):
        if path.is_file():
            assert mail["password"].encode() not in path.read_bytes(), path
    assert mail["password"] not in laptop.stderr_text()
    laptop.call("account.remove", {"account": mail["account"]})
    assert keyring.get_password(service, password_name(mail["account"])) is None
    assert laptop.call("account.list") == {"accounts": []}


def test_two_instances_on_one_computer_never_share_secrets(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], dovecot: DovecotServer
) -> None:
    one, two = device(spawn, "profile-one"), device(spawn, "profile-two")
    one.call("account.configure", mail)
    other_user, other_password = dovecot.new_account()
    two.call(
        "account.configure",
        {**mail, "imap": {**mail["imap"], "username": other_user}, "password": other_password},
    )
    name = password_name(mail["account"])
    assert keyring.get_password(SERVICE_PREFIX + "profile-one", name) == mail["password"]
    assert keyring.get_password(SERVICE_PREFIX + "profile-two", name) == other_password


def test_login_failures_are_precise(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    laptop = device(spawn, "laptop")
    refused = laptop.request("account.configure", {**mail, "password": "wrong"})["error"]
    assert refused["code"] == "auth_failed"
    assert "wrong" not in refused["message"]
    closed = {**mail, "imap": {**mail["imap"], "port": free_port()}}
    unreachable = laptop.request("account.configure", closed)["error"]
    assert unreachable["code"] == "imap_unavailable"
    assert laptop.call("account.list") == {"accounts": []}


def test_order_of_operations_is_enforced(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    laptop = device(spawn, "laptop")
    account = {"account": mail["account"]}
    assert laptop.request("devices.list", account)["error"]["code"] == "not_configured"
    laptop.call("account.configure", mail)
    assert laptop.request("sync", account)["error"]["code"] == "not_joined"
    laptop.call("sma.join", {**account, "device_name": "Laptop"})
    first = laptop.call("sync", account)
    assert first["devices"] == 1
    assert laptop.call("sync", account)["announcements_read"] == 0


def test_a_restarted_host_resumes_where_it_was(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], tmp_path: Path
) -> None:
    laptop = device(spawn, "laptop")
    laptop.call("account.configure", mail)
    joined = laptop.call("sma.join", {"account": mail["account"], "device_name": "Laptop"})
    laptop.close()
    # Same SMA_HOME, new process: the add-on reconnected.
    again = CheckedHost(Path(laptop.stderr_path).parent)
    try:
        again.call("hello", {"instance": "laptop"})
        devices = again.call("devices.list", {"account": mail["account"]})["devices"]
        assert [d["device_id"] for d in devices] == [joined["device_id"]]
        rejoined = again.call("sma.join", {"account": mail["account"], "device_name": "Laptop"})
        assert rejoined["device_id"] == joined["device_id"]
        assert again.call("sync", {"account": mail["account"]})["devices"] == 1
        assert again.problems() == []
    finally:
        again.close()
