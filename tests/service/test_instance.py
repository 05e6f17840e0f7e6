"""The service layer on the in-memory store: accounts, join, devices, sync cost, push, restarts."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.keyring_secrets import MemorySecrets
from native_host.adapters.memory_store import MemoryStore
from native_host.errors import ErrorCode, HostError
from native_host.ports import StoreAuthError, StoreError
from native_host.service.accounts import ImapSettings, password_name
from native_host.service.instance import InstanceService
from native_host.service.runtime import PushStore
from tests.fakes import FakeClock, SeededRandom

ACCOUNT = "alice@example.org"
SETTINGS = ImapSettings("imap.example.org", 993, "tls", "alice")


class Server:
    """One account's mailbox; a wrong password is refused like a server would."""

    def __init__(self) -> None:
        self.mailbox = MemoryStore()
        self.password = "right"
        self.down = False

    def open(self, settings: ImapSettings, password: str) -> PushStore:
        if self.down:
            raise StoreError("connection refused")
        if password != self.password:
            raise StoreAuthError("[AUTHENTICATIONFAILED] Authentication failed.")
        return self.mailbox


LIVE_DEVICES: list[Device] = []  # stopped after every test (tests/service/conftest.py)


class Device:
    def __init__(self, root: Path, server: Server, seed: int) -> None:
        LIVE_DEVICES.append(self)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.secrets = MemorySecrets()
        self.root = root
        self.server = server
        self.seed = seed
        self.service = self.restart()

    def restart(self) -> InstanceService:
        self.service = InstanceService(
            self.root,
            self.secrets,
            lambda name, data: self.events.put((name, data)),
            open_store=self.server.open,
            clock=FakeClock(),
            random=SeededRandom(self.seed),
        )
        return self.service

    def wait_event(self, name: str, timeout: float = 2.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if event == name:
                return data


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def laptop(tmp_path: Path, server: Server) -> Device:
    return Device(tmp_path / "laptop", server, 1)


@pytest.fixture
def phone(tmp_path: Path, server: Server) -> Device:
    return Device(tmp_path / "phone", server, 2)


def configured(device: Device, name: str) -> dict[str, Any]:
    device.service.configure(ACCOUNT, SETTINGS, "right")
    runtime = device.service.runtime(ACCOUNT)
    runtime.join(name)
    return {"runtime": runtime}


def test_configure_checks_the_login_and_keeps_the_password_only_in_the_secret_store(
    laptop: Device,
) -> None:
    with pytest.raises(HostError) as refused:
        laptop.service.configure(ACCOUNT, SETTINGS, "wrong")
    assert refused.value.code is ErrorCode.AUTH_FAILED
    assert laptop.service.accounts() == []
    laptop.service.configure(ACCOUNT, SETTINGS, "right")
    assert laptop.secrets.get(password_name(ACCOUNT)) == "right"
    [listed] = laptop.service.accounts()
    assert listed["device_id"] is None
    assert "right" not in str(listed)
    assert not any("right" in p.read_text() for p in laptop.root.rglob("*.json"))


def test_an_unreachable_server_is_imap_unavailable(laptop: Device, server: Server) -> None:
    server.down = True
    with pytest.raises(HostError) as failed:
        laptop.service.configure(ACCOUNT, SETTINGS, "right")
    assert failed.value.code is ErrorCode.IMAP_UNAVAILABLE
    assert "connection refused" in failed.value.message


def test_methods_before_configure_or_join_say_which(laptop: Device) -> None:
    with pytest.raises(HostError) as missing:
        laptop.service.runtime(ACCOUNT)
    assert missing.value.code is ErrorCode.NOT_CONFIGURED
    laptop.service.configure(ACCOUNT, SETTINGS, "right")
    with pytest.raises(HostError) as unjoined:
        laptop.service.joined_runtime(ACCOUNT)
    assert unjoined.value.code is ErrorCode.NOT_JOINED


def test_two_devices_join_and_the_first_hears_of_the_second_by_push(
    laptop: Device, phone: Device
) -> None:
    configured(laptop, "Laptop")
    started = time.monotonic()
    configured(phone, "Phone")
    data = laptop.wait_event("devices.changed", timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert {d["name"] for d in data["devices"]} == {"Laptop", "Phone"}
    mine = [d for d in data["devices"] if d["self"]]
    assert [d["name"] for d in mine] == ["Laptop"]
    assert mine[0]["paired"] is True
    assert all(d["paired"] is False for d in data["devices"] if not d["self"])
    laptop.service.stop(wait=10)
    phone.service.stop(wait=10)


def test_an_idle_sync_costs_two_round_trips_whatever_the_device_count(
    tmp_path: Path, server: Server
) -> None:
    costs = {}
    devices = [Device(tmp_path / f"d{n}", server, n) for n in range(12)]
    for count in (2, 5, 12):
        for device in devices[:count]:
            if not device.service.accounts():
                configured(device, f"device {device.seed}")
                device.service.stop(wait=10)  # no background threads: this test counts alone
        runtime = devices[0].service.runtime(ACCOUNT)
        runtime.sync()  # catch up
        before = server.mailbox.operations
        report = runtime.sync()
        costs[count] = server.mailbox.operations - before
        assert report.devices == count
        assert report.announcements_read == 0
    assert costs == {2: 2, 5: 2, 12: 2}


def test_state_survives_a_restart_and_is_not_read_again(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    laptop.service.stop(wait=10)
    phone.service.stop(wait=10)
    laptop.service.runtime(ACCOUNT).sync()
    service = laptop.restart()
    runtime = service.runtime(ACCOUNT)
    assert {d["name"] for d in runtime.devices()} == {"Laptop", "Phone"}
    before = server.mailbox.operations
    report = runtime.sync()
    assert report.announcements_read == 0
    assert server.mailbox.operations - before == 2


def test_remove_forgets_settings_and_password(laptop: Device) -> None:
    configured(laptop, "Laptop")
    laptop.service.remove(ACCOUNT)
    assert laptop.service.accounts() == []
    assert laptop.secrets.get(password_name(ACCOUNT)) is None
    with pytest.raises(HostError) as again:
        laptop.service.remove(ACCOUNT)
    assert again.value.code is ErrorCode.NOT_CONFIGURED


def test_background_sync_reports_an_outage_and_recovers(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    laptop.wait_event("sync.state")  # online
    server.down = True
    runtime = laptop.service.runtime(ACCOUNT)
    runtime._drop()  # the connection broke
    runtime._dirty.set()
    offline = laptop.wait_event("sync.state", timeout=5)
    assert offline["online"] is False
    assert offline["error"]["code"] == "imap_unavailable"
    server.down = False
    configured(phone, "Phone")
    online = laptop.wait_event("sync.state", timeout=5)
    assert online["online"] is True
    laptop.service.stop(wait=10)
    phone.service.stop(wait=10)


def test_a_change_just_before_the_push_wait_starts_is_not_missed(
    laptop: Device, server: Server
) -> None:
    """The race the `since` baseline closes: an announcement lands after the laptop's last sync
    but before its IDLE began. Without the baseline it would wait for the 60 s poll."""
    configured(laptop, "Laptop")
    laptop.wait_event("sync.state")
    runtime = laptop.service.runtime(ACCOUNT)
    status = runtime.record.announce_status
    assert status is not None
    server.mailbox.append("_Autocrypt_SMA", b"Subject: x\r\n\r\nnot an announcement\r\n")
    assert server.mailbox.wait_for_change("_Autocrypt_SMA", 0.0, since=status) is True
    laptop.service.stop(wait=10)


def test_reconfiguring_a_joined_account_keeps_it_syncing(laptop: Device, phone: Device) -> None:
    configured(laptop, "Laptop")
    laptop.wait_event("sync.state")
    laptop.service.configure(ACCOUNT, SETTINGS, "right")  # say, a new password
    configured(phone, "Phone")
    data = laptop.wait_event("devices.changed", timeout=2.0)
    assert {d["name"] for d in data["devices"]} == {"Laptop", "Phone"}
    laptop.service.stop(wait=10)
    phone.service.stop(wait=10)
