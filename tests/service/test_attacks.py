"""The mail provider attacks pairing and the device log through the folders it holds. Each attack
fails or is harmless, the user is told where it matters, and honest pairing still works after."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from native_host.core import devicelog, envelope, layout
from native_host.core import pairing as pm
from native_host.core.crypto import DeviceKeys
from native_host.core.directory import Directory
from native_host.core.envelope import MessageType
from native_host.core.join import refresh
from native_host.service.accounts import account_key_name
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_lifecycle_flow import device_id
from tests.service.test_pairing_flow import alerts, invite, join, pair, state, wait_for

MALLORY = "00000000deadbeef"


def intercept(server: Server, rule: Callable[[str, bytes], bytes | None]) -> Callable[[], None]:
    """Route every append through `rule` (None drops it); returns the undo."""
    original = server.mailbox.append

    def append(folder: str, message: bytes) -> int | None:
        changed = rule(folder, message)
        return None if changed is None else original(folder, changed)

    server.mailbox.append = append  # type: ignore[method-assign]
    return lambda: setattr(server.mailbox, "append", original)


def kind(message: bytes) -> str:
    return envelope.parse(message).type.value


def runtime(device: Device) -> Any:
    return device.service.runtime(ACCOUNT)


def honest_pairing_completes(laptop: Device, phone: Device) -> None:
    pair(laptop, phone)


def forge(
    kind_: MessageType, sender: str, data: dict[str, Any], keys: DeviceKeys, to: str
) -> bytes:
    return envelope.build(
        kind_, sender, data, account=ACCOUNT, now=1.9e9, random=os.urandom, keys=keys, to=to
    )


def test_a_provider_in_the_middle_swapping_keys_transfers_nothing(
    laptop: Device, phone: Device, server: Server
) -> None:
    """The provider re-signs the accept with its own device key: the keys are bound into the
    PAKE transcript, so the new device's check fails, it says so, and no key moves."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    mallory = DeviceKeys.generate(os.urandom)

    def swap(folder: str, message: bytes) -> bytes | None:
        if kind(message) != "pair-accept":
            return message
        parsed = envelope.parse(message)
        forged = {**parsed.data, "keys": mallory.public.to_json()}
        return forge(MessageType.PAIR_ACCEPT, parsed.sender, forged, mallory, str(parsed.to))

    undo = intercept(server, swap)
    invitation, code = invite(laptop)
    joined = join(phone, code)
    wait_for(lambda: state(phone, joined) == "failed" and state(laptop, invitation) == "failed")
    undo()
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None
    assert [a["kind"] for a in alerts(phone)] == ["pairing"]
    honest_pairing_completes(laptop, phone)


def test_an_unsolicited_request_named_like_a_real_device_never_gets_anywhere(
    laptop: Device, phone: Device, server: Server
) -> None:
    """Anyone with mailbox access asks to pair as "Alice's iPhone": no invitation is open, so
    nothing is opened, nothing can be approved, no key leaves; the user is told once."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    honest_pairing_completes(laptop, phone)
    sent: list[str] = []
    undo = intercept(server, lambda f, m: sent.append(kind(m)) or m)
    before = dict(runtime(laptop).trust.record.pairings)
    for device in (laptop, phone):
        target = runtime(device).trust.me
        for n in range(3):
            evil = DeviceKeys.generate(os.urandom)
            outcome = pm.join(
                me=MALLORY,
                my_keys=evil.public,
                name="Alice's iPhone",
                code=f"{pm.nameplate_of(target)}-000-000{n}",
                now=int(1.9e9),
                random=os.urandom,
            )
            data = outcome.effects[0].data  # type: ignore[union-attr]
            server.mailbox.append(
                layout.inbox_folder(target),
                forge(MessageType.PAIR_REQUEST, MALLORY, data, evil, target),
            )
    wait_for(lambda: all(runtime(d).trust.record.unsolicited_pairing == 3 for d in (laptop, phone)))
    undo()
    assert runtime(laptop).trust.record.pairings == before
    assert not [p for p in runtime(phone).trust.pairings() if p.peer == MALLORY]
    assert "pair-accept" not in sent
    assert "pair-key" not in sent
    for device in (laptop, phone):
        unsolicited = [a for a in alerts(device) if "no one chose" in a["message"]]
        assert len(unsolicited) == 1  # once, not three times


def test_injected_requests_do_not_block_a_real_pairing(
    laptop: Device, phone: Device, server: Server
) -> None:
    """0.1.0 let four injected requests fill MAX_ACTIVE_PAIRINGS for ten minutes. Requests
    injected before and while an invitation is open change nothing: a request that reaches
    an open invitation first uses it up (one guess), which the user sees as a failure."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    laptop_id = runtime(laptop).trust.me
    for n in range(4):
        evil = DeviceKeys.generate(os.urandom)
        outcome = pm.join(
            me=MALLORY,
            my_keys=evil.public,
            name=f"iPhone {n}",
            code=f"{pm.nameplate_of(laptop_id)}-111-111{n}",
            now=int(1.9e9),
            random=os.urandom,
        )
        data = outcome.effects[0].data  # type: ignore[union-attr]
        server.mailbox.append(
            layout.inbox_folder(laptop_id),
            forge(MessageType.PAIR_REQUEST, MALLORY, data, evil, laptop_id),
        )
    wait_for(lambda: runtime(laptop).trust.record.unsolicited_pairing == 4)
    assert runtime(laptop).trust.record.pairings == {}
    honest_pairing_completes(laptop, phone)


def test_replayed_messages_open_no_new_pairing(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    seen: list[tuple[str, bytes]] = []
    undo = intercept(server, lambda f, m: seen.append((f, m)) or m)
    honest_pairing_completes(laptop, phone)
    undo()
    before = {d: dict(runtime(d).trust.record.pairings) for d in (laptop, phone)}
    for folder, message in seen:
        if kind(message).startswith("pair-"):
            server.mailbox.append(folder, message)
    wait_for(
        lambda: all(
            server.mailbox.status(f).messages == 0 for f, _ in seen if f != layout.ANNOUNCE_FOLDER
        )
    )
    for device in (laptop, phone):
        assert runtime(device).trust.record.pairings == before[device]
        assert all(p["state"] == "completed" for p in before[device].values())
    assert runtime(laptop).trust.record.unsolicited_pairing == 0  # a replay is not a new request


def test_a_forged_log_entry_admits_nobody_and_raises_an_alert(
    laptop: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    laptop.wait_event("sync.state")
    trust = runtime(laptop).trust
    chain = trust.device_log()
    mallory = DeviceKeys.generate(os.urandom)
    entry = devicelog.genesis(MALLORY, mallory, "Mallory", "A" * 40, 1.9e9)  # a foreign log...
    forged = dict(chain.entries()[-1])
    forged.update(
        {
            "seq": 1,
            "prev": devicelog.entry_hash(chain.entries()[-1]),
            "op": "add",
            "device_id": MALLORY,
        }
    )
    forged.update(
        {"keys": mallory.public.to_json(), "name": "Mallory", "account_key": None, "by": trust.me}
    )
    for doc in (entry, forged):  # ...and an add that claims the laptop signed it
        raw = envelope.build(
            MessageType.LOG, MALLORY, doc, account=ACCOUNT, now=1.9e9, random=os.urandom
        )
        server.mailbox.append(layout.ANNOUNCE_FOLDER, raw)
    alert = laptop.wait_event("security.alert", timeout=5)
    assert alert["kind"] == "device_log"
    assert not trust.device_log().is_member(MALLORY)


def test_an_injected_announcement_is_shown_unpaired(laptop: Device, server: Server) -> None:
    configured(laptop, "Laptop")
    mallory = DeviceKeys.generate(os.urandom)
    data = {
        "name": "Totally my phone",
        "joined": 1,
        "last_seen": 2,
        "keys": mallory.public.to_json(),
    }
    raw = envelope.build(
        MessageType.ANNOUNCE,
        MALLORY,
        data,
        account=ACCOUNT,
        now=1.9e9,
        random=os.urandom,
        keys=mallory,
    )
    server.mailbox.append(layout.ANNOUNCE_FOLDER, raw)
    wait_for(lambda: any(d["device_id"] == MALLORY for d in runtime(laptop).devices()))
    [fake] = [d for d in runtime(laptop).devices() if d["device_id"] == MALLORY]
    assert fake["paired"] is False


def test_tampered_or_dropped_messages_stall_the_pairing_and_transfer_nothing(
    laptop: Device, phone: Device, server: Server
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")

    def tamper(folder: str, message: bytes) -> bytes | None:
        if kind(message) == "pair-key":
            head, body = message.split(b"\r\n\r\n", 1)
            return (
                head + b"\r\n\r\n" + body[:40] + (b"A" if body[40:41] != b"A" else b"B") + body[41:]
            )
        return message

    undo = intercept(server, tamper)
    invite_id, code = invite(laptop)
    join(phone, code)
    alert = phone.wait_event("security.alert", timeout=5)
    assert alert["kind"] == "inbox"
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None
    undo()
    dropped = intercept(server, lambda f, m: None if kind(m) == "pair-confirm" else m)
    second, code = invite(laptop)
    assert state(laptop, invite_id) == "rejected"  # the new invitation ended the stalled one
    join(phone, code)
    wait_for(lambda: state(laptop, second) == "confirming")
    time.sleep(0.3)
    assert state(laptop, second) == "confirming"  # no proof, no key
    assert phone.secrets.get(account_key_name(ACCOUNT)) is None
    dropped()
    honest_pairing_completes(laptop, phone)


def test_a_deleted_announcement_folder_is_recreated_and_keeps_every_member(
    laptop: Device, phone: Device, server: Server
) -> None:
    """Regression (tests/adversary): the server deleting `_Autocrypt_SMA` made every sync fail
    for good, and a recreated empty folder made devices forget the device log."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    honest_pairing_completes(laptop, phone)
    members = set(runtime(laptop).trust.device_log().members())
    assert len(members) == 2
    server.mailbox.delete_folder(layout.ANNOUNCE_FOLDER)
    for device in (laptop, phone):
        runtime(device).sync()
    for device in (laptop, phone):
        runtime(device).sync()
    # Whichever device found it missing first recreated it and says so.
    alerts = [
        data for d in (laptop, phone) for event, data in d.events.queue if event == "security.alert"
    ]
    assert any("announcement folder was deleted" in a["message"] for a in alerts)
    for device in (laptop, phone):
        assert set(runtime(device).trust.device_log().members()) == members
        assert {d["device_id"] for d in runtime(device).devices() if d["paired"]} == members
    entries: list[dict[str, object]] = []
    fresh = Directory(on_log=entries.append)
    refresh(server.mailbox, fresh)
    assert set(fresh.devices) == members  # both announced again
    hashes = {devicelog.entry_hash(e) for e in entries}
    assert len(hashes) == 2  # the log written back (genesis and the add)


def test_a_deleted_announcement_is_written_again_so_a_new_device_can_pair(
    laptop: Device, phone: Device, server: Server, tmp_path: Any
) -> None:
    """Regression (tests/adversary, seed 3): the server deleted the laptop's announcement. The
    laptop and the phone, reading from their watermarks, never noticed; a device that read the
    folder from the start (here a new one; in the adversary run, after a UIDVALIDITY change)
    did not know the laptop, and its pairing request to it failed, after the attack too."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    honest_pairing_completes(laptop, phone)
    laptop_id = runtime(laptop).trust.me
    uid = runtime(laptop).record.directory.devices[laptop_id].uid
    server.mailbox.delete_messages(layout.ANNOUNCE_FOLDER, [uid])
    runtime(laptop).sync()  # the folder changed: the laptop checks its own announcement
    fresh = Directory()
    refresh(server.mailbox, fresh)
    assert laptop_id in fresh.devices  # written again
    tablet = Device(tmp_path / "tablet", server, 3)
    configured(tablet, "Tablet")
    assert laptop_id in {d["device_id"] for d in runtime(tablet).devices()}
    pair(laptop, tablet)


def _log_uid(server: Server, entry: dict[str, Any]) -> int:
    """Where the server holds `entry` in the announcement folder."""
    box = server.mailbox.folders[layout.ANNOUNCE_FOLDER]
    for uid, raw in box.messages.items():
        message = envelope.parse(raw)
        if message.type is MessageType.LOG and message.data == entry:
            return uid
    raise AssertionError("entry not in the announcement folder")


def _renamed_while_the_phone_is_away(laptop: Device, phone: Device) -> dict[str, Any]:
    """Paired laptop and phone; the phone stops syncing, the laptop renames it (a log entry the
    phone has not read)."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    honest_pairing_completes(laptop, phone)
    runtime(phone).stop(wait=5)
    phone_id = runtime(phone).trust.me
    runtime(laptop).rename_device(phone_id, "Phone (work)")
    return runtime(laptop).trust.device_log().entries()[-1]


def _agree_after(laptop: Device, phone: Device) -> None:
    """A later entry that needs the deleted one, then the phone catches up: its verified log must
    reach the laptop's head (before the fix it stopped below the deleted entry for good, and the
    devices disagreed on the members' names, or, in the adversary run, on the account key)."""
    laptop_rt, phone_rt = runtime(laptop), runtime(phone)
    laptop_rt.sync()
    laptop_rt.rename_device(phone_rt.trust.me, "Phone (home)")
    for _ in range(2):
        phone_rt.sync()
    assert phone_rt.trust.device_log().head_hash == laptop_rt.trust.device_log().head_hash
    names = {d["name"] for d in phone_rt.devices() if d["paired"]}
    assert names == {"Laptop", "Phone (home)"}


def test_a_log_entry_the_server_deleted_is_written_back_by_a_device_that_holds_it(
    laptop: Device, phone: Device, server: Server
) -> None:
    """Regression (tests/adversary seed 1, more often on a loaded machine): the server deleted
    the entry admitting the tablet before the phone had read it. Nobody wrote it back, so the
    phone could verify neither the tablet's removal nor the roll after it: laptop and phone kept
    different account keys for good, without an alert."""
    entry = _renamed_while_the_phone_is_away(laptop, phone)
    server.mailbox.delete_messages(layout.ANNOUNCE_FOLDER, [_log_uid(server, entry)])
    _agree_after(laptop, phone)
    assert _log_uid(server, entry)  # back on the server
    alerts = [data["message"] for event, data in laptop.events.queue if event == "security.alert"]
    assert any("deleted 1 device-log entries" in a for a in alerts), alerts


def test_a_log_entry_lost_with_a_recreated_folder_is_written_back(
    laptop: Device, phone: Device, server: Server
) -> None:
    """The server deletes the announcement folder; the phone, which had not read the newest
    entry, recreates it and writes back the shorter log it has. The laptop, reading the new
    folder from its start, writes back what is missing."""
    entry = _renamed_while_the_phone_is_away(laptop, phone)
    runtime(laptop).stop(wait=5)  # the phone must be the one that recreates the folder
    server.mailbox.delete_folder(layout.ANNOUNCE_FOLDER)
    runtime(phone).sync()
    assert layout.ANNOUNCE_FOLDER in server.mailbox.folders
    _agree_after(laptop, phone)
    assert _log_uid(server, entry)


def test_junk_read_by_a_later_read_in_the_same_cycle_is_reported(
    laptop: Device, server: Server, caplog: Any
) -> None:
    """Regression (tests/adversary, seed 1): a sync cycle reads the announcement folder more than
    once (the inbox check and announcing again read it too). Only the first read's rejections
    were reported, so junk that arrived in between was refused without a report. Here the server
    deletes the inbox and slips junk in just before the device looks at its inbox."""
    configured(laptop, "Laptop")
    r = runtime(laptop)
    r.stop(wait=5)
    r.sync()
    inbox = layout.inbox_folder(r.trust.me)
    server.mailbox.delete_folder(inbox)
    original = server.mailbox.status
    slipped: list[int | None] = []

    def status(folder: str) -> Any:
        if folder == inbox and not slipped:
            slipped.append(server.mailbox.append(layout.ANNOUNCE_FOLDER, b"junk\r\n\r\njunk"))
        return original(folder)

    server.mailbox.status = status  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        r.sync()
    assert slipped
    assert slipped[0] is not None
    assert f"rejected uid {slipped[0]}:" in caplog.text
    assert inbox in server.mailbox.folders  # (recreated)


def test_a_member_whose_announcement_the_server_withholds_is_still_listed_and_removable(
    laptop: Device, phone: Device, server: Server
) -> None:
    """Regression (tests/adversary, hostile seed 15 of a 20-seed run): after the server
    recreated the announcement folder, the laptop's devices.list did not show the phone at all
    until the phone announced itself again, since the list came from announcements only. A
    server that withholds a device's announcement for good would hide a member from the user,
    who could then neither see nor remove it. The verified log decides who is listed."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    honest_pairing_completes(laptop, phone)
    phone_id = device_id(phone)

    def drop_phones_announcements(folder: str, raw: bytes) -> bytes | None:
        parsed = envelope.parse(raw)
        hidden = parsed.type is MessageType.ANNOUNCE and parsed.sender == phone_id
        return None if folder == layout.ANNOUNCE_FOLDER and hidden else raw

    undo = intercept(server, drop_phones_announcements)
    server.mailbox.delete_folder(layout.ANNOUNCE_FOLDER)
    for _ in range(2):
        for device in (laptop, phone):
            runtime(device).sync()
    assert phone_id not in runtime(laptop).record.directory.devices  # (the premise)
    listed = {d["device_id"]: d for d in runtime(laptop).devices()}
    assert listed[phone_id]["paired"]
    assert listed[phone_id]["name"] == "Phone"
    assert listed[phone_id]["announced"] is False
    assert not listed[phone_id]["stale"]  # withholding alone makes no expiry candidate
    assert listed[device_id(laptop)]["announced"] is True
    assert runtime(laptop).expire(0) == []
    undo()
    runtime(laptop).remove_device(phone_id)
    assert phone_id not in {d["device_id"] for d in runtime(laptop).devices()}
