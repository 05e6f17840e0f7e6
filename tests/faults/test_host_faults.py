"""The host between a flaky network and a restarting Dovecot: it says imap_unavailable while the
server is gone, recovers by itself when it is back, and loses or duplicates nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.core import layout
from tests.faults.test_store_faults import RestartableDovecot
from tests.host.harness import CheckedHost
from tests.servers.fault_proxy import FaultProxy

TIMEOUT_ENV = {"SMA_IMAP_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[RestartableDovecot]:
    server = RestartableDovecot()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(dovecot: RestartableDovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.host, dovecot.port).start() as p:
        yield p


@pytest.fixture
def mail(dovecot: RestartableDovecot, proxy: FaultProxy) -> dict[str, Any]:
    user, password = dovecot.new_account()
    return {
        "account": f"{user}@example.org",
        "imap": {"host": proxy.host, "port": proxy.port, "security": "none", "username": user},
        "password": password,
        "direct": {"host": dovecot.host, "port": dovecot.port, "user": user, "password": password},
    }


def settings(mail: dict[str, Any], *, direct: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in mail.items() if k != "direct"}
    if direct:
        out["imap"] = {
            **mail["imap"],
            "host": mail["direct"]["host"],
            "port": mail["direct"]["port"],
        }
    return out


def announcements_on_server(mail: dict[str, Any]) -> int:
    """Announcements only: the folder also holds the device log."""
    d = mail["direct"]
    with ImapStore(d["host"], d["port"], d["user"], d["password"], security="none") as store:
        batch = store.fetch(layout.ANNOUNCE_FOLDER, None, limit=1000, max_size=1 << 20)
    return sum(1 for m in batch.messages if b"Autocrypt-SMA-Type: announce" in (m.raw or b""))


def joined_laptop(spawn: Callable[..., CheckedHost], mail: dict[str, Any]) -> CheckedHost:
    laptop = spawn(env=TIMEOUT_ENV)
    laptop.call("hello", {"instance": "laptop"})
    laptop.call("account.configure", settings(mail))
    laptop.call("sma.join", {"account": mail["account"], "device_name": "Laptop"})
    laptop.wait_event("sync.state", 10, lambda d: d["online"])
    return laptop


def test_outage_is_reported_and_recovered_from_without_loss(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], proxy: FaultProxy
) -> None:
    laptop = joined_laptop(spawn, mail)
    proxy.refuse()
    proxy.cut()
    offline = laptop.wait_event("sync.state", 10, lambda d: not d["online"])
    assert offline["error"]["code"] == "imap_unavailable"
    assert (
        laptop.request("sync", {"account": mail["account"]})["error"]["code"] == "imap_unavailable"
    )
    # Meanwhile another device joins, straight to the server.
    phone = spawn()
    phone.call("hello", {"instance": "phone"})
    phone.call("account.configure", settings(mail, direct=True))
    phone.call("sma.join", {"account": mail["account"], "device_name": "Phone"})
    proxy.accept()
    changed = laptop.wait_event("devices.changed", 20, lambda d: len(d["devices"]) == 2)
    assert {d["name"] for d in changed["devices"]} == {"Laptop", "Phone"}
    assert laptop.wait_event("sync.state", 5, lambda d: d["online"])["online"] is True
    assert announcements_on_server(mail) == 2  # nothing appended twice


def test_a_stalled_link_fails_within_the_timeout_and_then_recovers(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], proxy: FaultProxy
) -> None:
    laptop = joined_laptop(spawn, mail)
    proxy.stall()
    started = time.monotonic()
    error = laptop.request("sync", {"account": mail["account"]}, timeout=30)["error"]
    assert error["code"] == "imap_unavailable"
    assert time.monotonic() - started < 2 * 2 + 3  # a read, one retry on a fresh link, slack
    proxy.cut()
    proxy.resume()
    assert laptop.call("sync", {"account": mail["account"]})["devices"] == 1
    assert announcements_on_server(mail) == 1


def test_a_dovecot_restart_costs_nothing(
    spawn: Callable[..., CheckedHost],
    mail: dict[str, Any],
    proxy: FaultProxy,
    dovecot: RestartableDovecot,
) -> None:
    laptop = joined_laptop(spawn, mail)
    dovecot.halt()
    proxy.cut()  # a stopped machine takes its connections with it
    try:
        laptop.wait_event("sync.state", 10, lambda d: not d["online"])
        assert (
            laptop.request("sync", {"account": mail["account"]})["error"]["code"]
            == "imap_unavailable"
        )
    finally:
        dovecot.relaunch()
    laptop.wait_event("sync.state", 20, lambda d: d["online"])
    result = laptop.call("sync", {"account": mail["account"]})
    assert result["devices"] == 1
    devices = laptop.call("devices.list", {"account": mail["account"]})["devices"]
    assert [d["name"] for d in devices] == ["Laptop"]
    assert announcements_on_server(mail) == 1
