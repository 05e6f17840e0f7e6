"""Announce, discover and join over every FolderStore: the seed text's bootstrap, and its failure modes."""

from __future__ import annotations

from native_host.core import layout
from native_host.core.directory import Directory
from native_host.core.join import Device, join, refresh
from tests.contract.conftest import Account
from tests.fakes import FakeClock, SeededRandom

ACCOUNT = "alice@example.org"


def device(n: int, name: str) -> Device:
    return Device(layout.new_device_id(SeededRandom(n)), name, ACCOUNT, 1_800_000_000 + n)


def test_first_device_creates_the_layout(account: Account) -> None:
    store = account.store()
    laptop = device(1, "Laptop")
    result = join(store, Directory(), laptop, clock=FakeClock(), random=SeededRandom(10))
    assert result.first_device is True
    assert result.created_announce_folder is True
    assert result.created_inbox is True
    assert result.announced is True
    assert [d.device_id for d in result.devices] == [laptop.device_id]
    assert store.list_folders(layout.ANNOUNCE_FOLDER) == sorted(
        [layout.ANNOUNCE_FOLDER, layout.inbox_folder(laptop.device_id)]
    )
    assert store.is_subscribed(layout.ANNOUNCE_FOLDER) is False
    assert store.is_subscribed(layout.inbox_folder(laptop.device_id)) is False


def test_two_devices_discover_each_other(account: Account) -> None:
    laptop, phone = device(1, "Laptop"), device(2, "Phone")
    clock = FakeClock()
    join(account.store(), Directory(), laptop, clock=clock, random=SeededRandom(10))
    clock.advance(60)
    second = join(account.store(), Directory(), phone, clock=clock, random=SeededRandom(11))
    assert second.first_device is False
    assert second.created_announce_folder is False
    assert {d.name for d in second.devices} == {"Laptop", "Phone"}
    # The first device learns of the second from the announcement folder alone.
    directory = Directory()
    refresh(account.store(), directory)
    assert set(directory.devices) == {laptop.device_id, phone.device_id}
    assert directory.devices[phone.device_id].last_seen == int(clock())


def test_repeated_join_appends_nothing(account: Account) -> None:
    store = account.store()
    laptop = device(1, "Laptop")
    directory = Directory()
    join(store, directory, laptop, clock=FakeClock(), random=SeededRandom(10))
    again = join(store, directory, laptop, clock=FakeClock(), random=SeededRandom(10))
    assert again.announced is False
    assert again.created_inbox is False
    assert store.status(layout.ANNOUNCE_FOLDER).messages == 1


def test_join_after_a_crash_before_announcing_finishes_the_job(account: Account) -> None:
    store = account.store()
    laptop = device(1, "Laptop")
    # The crash left the folders but no announcement.
    store.create_folder(layout.ANNOUNCE_FOLDER)
    store.create_folder(layout.inbox_folder(laptop.device_id))
    result = join(store, Directory(), laptop, clock=FakeClock(), random=SeededRandom(10))
    assert result.announced is True
    assert result.created_inbox is False
    assert [d.device_id for d in result.devices] == [laptop.device_id]


def test_join_unsubscribes_sma_folders_a_client_subscribed(account: Account) -> None:
    store = account.store()
    store.create_folder(layout.ANNOUNCE_FOLDER)
    store.set_subscribed(layout.ANNOUNCE_FOLDER, True)
    join(store, Directory(), device(1, "Laptop"), clock=FakeClock(), random=SeededRandom(10))
    assert store.is_subscribed(layout.ANNOUNCE_FOLDER) is False


def test_garbage_in_the_announcement_folder_is_rejected_and_left_alone(account: Account) -> None:
    store = account.store()
    store.create_folder(layout.ANNOUNCE_FOLDER)
    store.append(layout.ANNOUNCE_FOLDER, b"Subject: hello\r\n\r\nnot ours\r\n")
    directory = Directory()
    result = join(store, directory, device(1, "Laptop"), clock=FakeClock(), random=SeededRandom(10))
    assert len(result.devices) == 1
    assert len(directory.rejected) == 1
    assert "Autocrypt-SMA" in directory.rejected[0].reason
    assert store.status(layout.ANNOUNCE_FOLDER).messages == 2


def test_a_recreated_announcement_folder_means_a_full_rescan(account: Account) -> None:
    store = account.store()
    directory = Directory()
    join(store, directory, device(1, "Laptop"), clock=FakeClock(), random=SeededRandom(10))
    store.delete_folder(layout.ANNOUNCE_FOLDER)
    store.create_folder(layout.ANNOUNCE_FOLDER)
    join(
        account.store(), Directory(), device(2, "Phone"), clock=FakeClock(), random=SeededRandom(11)
    )
    refresh(store, directory)
    # The old UIDs meant nothing any more: only what the new folder holds counts.
    assert [d.name for d in directory.devices.values()] == ["Phone"]
