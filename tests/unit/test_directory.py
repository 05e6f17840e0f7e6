"""The device directory: latest announcement per device wins, deterministically; garbage is reported."""

from __future__ import annotations

from native_host.core import directory as directory_module
from native_host.core import envelope
from native_host.core.directory import Directory
from native_host.core.envelope import MessageType
from native_host.core.layout import device_of_inbox, inbox_folder, new_device_id
from native_host.ports import StoredMessage
from tests.fakes import SeededRandom


def announcement(uid: int, device: str, name: str, last_seen: int) -> StoredMessage:
    data = {"name": name, "joined": 1, "last_seen": last_seen}
    raw = envelope.build(
        MessageType.ANNOUNCE,
        device,
        data,
        account="a@example.org",
        now=last_seen,
        random=SeededRandom(uid),
    )
    return StoredMessage(uid, len(raw), raw)


D1, D2 = "00000000000000d1", "00000000000000d2"


def test_latest_announcement_wins_in_any_order() -> None:
    messages = [
        announcement(1, D1, "old", 10),
        announcement(2, D1, "new", 20),
        announcement(3, D2, "other", 5),
    ]
    for order in (messages, messages[::-1]):
        directory = Directory()
        for message in order:
            directory.receive(message)
        assert directory.devices[D1].name == "new"
        assert directory.devices[D2].name == "other"
        assert directory.superseded == {1}


def test_equal_last_seen_is_broken_by_uid() -> None:
    directory = Directory()
    directory.receive(announcement(5, D1, "later-uid", 10))
    directory.receive(announcement(4, D1, "earlier-uid", 10))
    assert directory.devices[D1].name == "later-uid"


def test_oversized_and_garbage_messages_are_rejected() -> None:
    directory = Directory()
    assert directory.receive(StoredMessage(1, 10**9, None)) is None
    assert directory.receive(StoredMessage(2, 3, b"hi!")) is None
    assert [r.uid for r in directory.rejected] == [1, 2]
    assert "size limit" in directory.rejected[0].reason
    assert directory.devices == {}


def test_device_count_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(directory_module, "MAX_DEVICES", 2)
    directory = Directory()
    for n in range(3):
        directory.receive(announcement(n + 1, f"{n:016x}", f"d{n}", 10))
    assert len(directory.devices) == 2
    assert "more than 2" in directory.rejected[0].reason


def test_device_ids_and_inbox_names() -> None:
    device = new_device_id(SeededRandom(3))
    assert len(device) == 16
    assert device_of_inbox(inbox_folder(device)) == device
    assert device_of_inbox("_Autocrypt_SMA") is None
    assert device_of_inbox("_Autocrypt_SMA_../x") is None
    assert device_of_inbox("_Autocrypt_SMA_" + device.upper()) is None
