"""Announce, discover and join: the SMA bootstrap from the seed text, over any FolderStore.

Every step is idempotent, so a join that crashed anywhere is finished by simply running it again:
folders that exist are not created twice, and a device that finds its own announcement does not
append another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from native_host import __version__
from native_host.core import envelope, layout
from native_host.core.crypto import DeviceKeys
from native_host.core.directory import Announcement, Directory
from native_host.core.envelope import MessageType
from native_host.ports import Clock, FolderStore, RandomBytes, Watermark

FETCH_BATCH = 200  # messages per FETCH round trip
MAX_BATCHES = 50  # bound on one refresh; the rest is read on the next one


@dataclass(frozen=True)
class Device:
    """This device, as the join needs to know it (the service layer persists it before joining)."""

    device_id: str
    name: str
    account: str
    joined: int
    keys: DeviceKeys | None = None  # signs the announcement and publishes the public half


@dataclass(frozen=True)
class JoinResult:
    first_device: bool  # no other device had announced itself when we joined
    created_announce_folder: bool
    created_inbox: bool
    announced: bool  # False when our announcement was already there (a repeated join)
    devices: tuple[Announcement, ...]


def refresh(store: FolderStore, directory: Directory) -> int:
    """Read new announcements into `directory`; how many messages were read."""
    read = 0
    for _ in range(MAX_BATCHES):
        batch = store.fetch(
            layout.ANNOUNCE_FOLDER,
            directory.watermark,
            limit=FETCH_BATCH,
            max_size=envelope.MAX_MESSAGE_BYTES,
        )
        if batch.reset:
            directory.reset()
        for message in batch.messages:
            directory.receive(message)
        read += len(batch.messages)
        # Saved only after the whole batch is applied: a crash re-reads it, never skips it.
        directory.watermark = batch.after(directory.watermark)
        if not batch.more:
            break
    return read


def still_announced(store: FolderStore, directory: Directory, device_id: str) -> bool:
    """Whether the announcement `directory` holds for `device_id` is still in the folder.

    Reads from a watermark never see a deletion: if the server deletes a device's announcement,
    the devices that read it keep it, but a device that reads the folder from the start (a new
    one, or any after a UIDVALIDITY change) never learns of it, and cannot pair with it. So a
    device checks its own, one FETCH of sizes only, whenever the folder has changed."""
    current = directory.devices.get(device_id)
    mark = directory.watermark
    if current is None or mark is None:
        return False
    batch = store.fetch(
        layout.ANNOUNCE_FOLDER, Watermark(mark.uidvalidity, current.uid - 1), limit=1, max_size=0
    )
    if batch.reset:
        return True  # renumbered meanwhile: the next refresh reads it all again anyway
    return bool(batch.messages) and batch.messages[0].uid == current.uid


def announcement(device: Device, *, now: float, random: RandomBytes) -> bytes:
    data: dict[str, Any] = {
        "name": device.name,
        "joined": device.joined,
        "last_seen": int(now),
        "software": f"autocrypt-sma {__version__}",
    }
    if device.keys is not None:
        data["keys"] = device.keys.public.to_json()
    return envelope.build(
        MessageType.ANNOUNCE,
        device.device_id,
        data,
        account=device.account,
        now=now,
        random=random,
        keys=device.keys,
    )


def ensure_folder(store: FolderStore, name: str, existing: list[str]) -> bool:
    """Create `name` unsubscribed if missing, and unsubscribe it if a client subscribed it."""
    created = False
    if name not in existing:
        created = store.create_folder(name)
    if store.is_subscribed(name):
        store.set_subscribed(name, False)
    return created


def join(
    store: FolderStore, directory: Directory, device: Device, *, clock: Clock, random: RandomBytes
) -> JoinResult:
    existing = store.list_folders(layout.ANNOUNCE_FOLDER)
    created_announce = ensure_folder(store, layout.ANNOUNCE_FOLDER, existing)
    refresh(store, directory)
    others = [d for d in directory.devices if d != device.device_id]
    created_inbox = ensure_folder(store, layout.inbox_folder(device.device_id), existing)
    announced = False
    if device.device_id not in directory.devices:
        store.append(layout.ANNOUNCE_FOLDER, announcement(device, now=clock(), random=random))
        announced = True
        refresh(store, directory)
    return JoinResult(
        first_device=not others,
        created_announce_folder=created_announce,
        created_inbox=created_inbox,
        announced=announced,
        devices=tuple(sorted(directory.devices.values(), key=lambda a: (a.joined, a.device_id))),
    )
