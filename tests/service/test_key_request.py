"""A rolled account key the server kept from a member is asked for and sent again (key-request,
docs/protocol.md "Device lifecycle"); requests that do not hold up are refused, reported, and
answered with nothing; answers are rate-limited per requester."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from native_host.core import envelope, keyrequest, layout
from native_host.core.crypto import DeviceKeys
from native_host.core.envelope import MessageType
from native_host.service.accounts import next_key_name
from native_host.service.runtime import AccountRuntime
from tests.fakes import SeededRandom
from tests.service.test_attacks import intercept
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_keysync_flow import pair, settle
from tests.service.test_lifecycle_flow import device_id, fingerprint, runtime, three

MALLORY = "00000000deadbeef"


@pytest.fixture
def tablet(tmp_path: Path, server: Server) -> Device:
    return Device(tmp_path / "tablet", server, 3)


def clock(device: Device) -> Any:
    return device.service._clock  # type: ignore[attr-defined]


def alerts(device: Device) -> list[str]:
    seen = []
    while not device.events.empty():
        name, data = device.events.get()
        if name == "security.alert":
            seen.append(str(data["message"]))
    return seen


def kind(raw: bytes) -> MessageType | None:
    try:
        return envelope.parse(raw).type
    except Exception:
        return None


def test_an_account_key_dropped_during_a_roll_is_asked_for_and_arrives(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    everyone = three(laptop, phone, tablet)
    phone_inbox = layout.inbox_folder(device_id(phone))
    dropped: list[bytes] = []

    def drop_the_phones_key(folder: str, raw: bytes) -> bytes | None:
        if folder == phone_inbox and kind(raw) is MessageType.ACCOUNT_KEY and not dropped:
            dropped.append(raw)
            return None
        return raw

    undo = intercept(server, drop_the_phones_key)
    new = runtime(laptop).remove_device(device_id(tablet))
    assert dropped, "the roll sent the phone nothing to drop"
    started = clock(phone)()
    rest = [laptop, phone]
    # The log names the new key at once; the phone notices it lacks it and, FIRST_DELAY later
    # by its clock, asks the laptop (the roller), which sends it again.
    settle(rest, lambda: runtime(phone).trust.device_log().account_key == new)
    assert fingerprint(phone) != new
    settle(rest, lambda: fingerprint(phone) == new)
    took = clock(phone)() - started
    assert keyrequest.FIRST_DELAY <= took <= keyrequest.FIRST_DELAY + 10, took
    undo()
    assert runtime(phone).record.key_request is None
    assert runtime(laptop).record.key_answers.keys() == {device_id(phone)}
    assert runtime(phone).lifecycle.old_key_count() == 1
    assert everyone


def test_requests_back_off_survive_a_restart_and_replace_each_other(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    """Every answer is dropped: the phone asks again 30 s after noticing, then 60 s, 120 s ...
    apart; a restart neither repeats a request early nor forgets to ask; the roller's inbox holds
    only the latest request; once the server stops dropping, the key arrives."""
    three(laptop, phone, tablet)
    for device in (laptop, phone, tablet):
        device.service.stop(wait=10)
    laptop_rt = laptop.restart().runtime(ACCOUNT)
    phone_rt = phone.restart().runtime(ACCOUNT)
    laptop_id, phone_id = device_id(laptop), device_id(phone)
    sent: list[tuple[str, float]] = []  # (recipient, the phone's clock) of each key request

    def drop(folder: str, raw: bytes) -> bytes | None:
        message_kind = kind(raw)
        if folder == layout.inbox_folder(phone_id) and message_kind is MessageType.ACCOUNT_KEY:
            return None  # the roll's key for the phone, and every answer
        if message_kind is MessageType.KEY_REQUEST:
            sent.append((str(layout.device_of_inbox(folder)), clock(phone)()))
        return raw

    undo = intercept(server, drop)
    new = laptop_rt.remove_device(device_id(tablet))
    phone_rt.sync()
    assert phone_rt.trust.device_log().account_key == new != fingerprint(phone)
    assert phone_rt.record.key_request is not None
    assert sent == []  # not yet: the roll's own message may be on its way
    clock(phone).advance(keyrequest.FIRST_DELAY)
    phone_rt.sync()
    assert [to for to, _ in sent] == [laptop_id]  # the roller (and the only other member)
    clock(phone).advance(keyrequest.interval(1) - 1)
    phone_rt.sync()
    assert len(sent) == 1
    clock(phone).advance(1)
    phone_rt.sync()
    assert len(sent) == 2
    assert sent[1][1] - sent[0][1] == keyrequest.interval(1)
    now = clock(phone)()
    back = phone.restart().runtime(ACCOUNT)
    clock(phone).now = now  # (a fresh fake clock starts over)
    back.sync()
    assert len(sent) == 2  # not asked again just because it restarted
    assert back.record.key_request is not None
    assert back.record.key_request["attempts"] == 2
    clock(phone).advance(keyrequest.interval(2))
    back.sync()
    assert len(sent) == 3
    laptop_inbox = server.mailbox.fetch(
        layout.inbox_folder(laptop_id), None, limit=100, max_size=1 << 20
    ).messages
    assert [kind(m.raw or b"") for m in laptop_inbox] == [MessageType.KEY_REQUEST]
    undo()
    laptop_rt.sync()  # answers the one request it finds
    back.sync()
    assert fingerprint(phone) == new
    assert back.record.key_request is None
    assert back.lifecycle.next_due() is None


def test_requests_go_to_another_member_when_the_roller_does_not_answer(
    laptop: Device, phone: Device, tablet: Device, tmp_path: Path, server: Server
) -> None:
    """Four devices; the roller's answers never reach the phone, so its second request goes to
    a member that is not the roller, which answers."""
    desk = Device(tmp_path / "desk", server, 4)
    three(laptop, phone, tablet)
    configured(desk, "Desk")
    pair(laptop, desk, [laptop, phone, tablet, desk])
    everyone = [laptop, phone, tablet, desk]
    settle(
        everyone, lambda: all(len(runtime(d).trust.device_log().members()) == 4 for d in everyone)
    )
    for device in everyone:
        device.service.stop(wait=10)
    rts = {d: d.restart().runtime(ACCOUNT) for d in everyone}
    laptop_id, phone_id = device_id(laptop), device_id(phone)
    asked: list[str] = []

    def drop(folder: str, raw: bytes) -> bytes | None:
        message_kind = kind(raw)
        if message_kind is MessageType.KEY_REQUEST:
            asked.append(str(layout.device_of_inbox(folder)))
        if (
            folder == layout.inbox_folder(phone_id)
            and message_kind is MessageType.ACCOUNT_KEY
            and envelope.parse(raw).sender == laptop_id
        ):
            return None  # nothing from the roller reaches the phone
        return raw

    undo = intercept(server, drop)
    new = rts[laptop].remove_device(device_id(tablet))
    rest = [laptop, phone, desk]
    for _ in range(8):
        clock(phone).advance(keyrequest.FIRST_DELAY * 2)
        for device in rest:
            rts[device].sync()
        if fingerprint(phone) == new:
            break
    undo()
    assert fingerprint(phone) == new
    assert asked[:2] == [laptop_id, device_id(desk)]


def _request(sender: str, keys: DeviceKeys, to: str, fingerprint: str, *, seed: int = 9) -> bytes:
    return envelope.build(
        MessageType.KEY_REQUEST,
        sender,
        keyrequest.request_data(fingerprint),
        account=ACCOUNT,
        now=1_800_000_000,
        random=SeededRandom(seed),
        keys=keys,
        to=to,
    )


def _recording_keys(sent: list[str]) -> Any:
    """An intercept rule that lets everything through and notes where account keys go."""

    def watch(folder: str, raw: bytes) -> bytes | None:
        if kind(raw) is MessageType.ACCOUNT_KEY:
            sent.append(folder)
        return raw

    return watch


def _paired(laptop: Device, phone: Device) -> tuple[AccountRuntime, AccountRuntime]:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    laptop.service.stop(wait=10)
    phone.service.stop(wait=10)
    laptop_rt = laptop.restart().runtime(ACCOUNT)
    phone_rt = phone.restart().runtime(ACCOUNT)
    laptop_rt.sync()
    phone_rt.sync()
    alerts(laptop)
    return laptop_rt, phone_rt


def test_key_requests_that_do_not_hold_up_are_refused_reported_and_get_nothing(
    laptop: Device, phone: Device, tablet: Device, server: Server
) -> None:
    laptop_rt, phone_rt = _paired(laptop, phone)
    laptop_id, phone_id = device_id(laptop), device_id(phone)
    current = laptop_rt.trust.device_log().account_key
    assert current is not None
    mallory = DeviceKeys.generate(SeededRandom(66))
    phone_keys = phone_rt.trust.device_keys()
    configured(tablet, "Tablet")  # announced, never paired: not in the log
    tablet_id = device_id(tablet)
    tablet_keys = runtime(tablet).trust.device_keys()
    tablet.service.stop(wait=10)
    forged = {
        "a stranger": _request(MALLORY, mallory, laptop_id, current),
        "a member's name, another key": _request(phone_id, mallory, laptop_id, current),
        "an announced device that is not a member": _request(
            tablet_id, tablet_keys, laptop_id, current
        ),
        "addressed to another device": _request(phone_id, phone_keys, tablet_id, current),
        "an old or made-up fingerprint": _request(phone_id, phone_keys, laptop_id, "A" * 40),
    }
    keys_sent: list[str] = []
    undo = intercept(server, _recording_keys(keys_sent))
    inbox = layout.inbox_folder(laptop_id)
    for raw in forged.values():
        server.mailbox.append(inbox, raw)
    # And one whose signature covered another document: the phone's, with the data swapped.
    signed = envelope.parse(_request(phone_id, phone_keys, laptop_id, current)).document
    tampered = {**signed, "data": {"fingerprint": "B" * 40}}
    server.mailbox.append(inbox, _raw_document(tampered))
    laptop_rt.sync()
    undo()
    reported = alerts(laptop)
    assert len(reported) == len(forged) + 1, reported
    assert sum("not a member" in a for a in reported) == 2
    assert sum("does not verify" in a for a in reported) == 2
    assert sum("another device" in a for a in reported) == 1
    assert sum("not the current account key" in a for a in reported) == 1
    assert keys_sent == []
    assert laptop_rt.record.key_answers == {}
    assert laptop.secrets.get(next_key_name(ACCOUNT)) is None
    assert server.mailbox.fetch(inbox, None, limit=100, max_size=1 << 20).messages == ()


def _raw_document(document: dict[str, Any]) -> bytes:
    """An SMA message around a document as given (its signature left as it is)."""
    import base64

    from native_host.jsonstrict import encode

    good = _request(
        document["from"], DeviceKeys.generate(SeededRandom(1)), document["to"], "A" * 40
    )
    head = good.partition(b"\r\n\r\n")[0]
    body = base64.encodebytes(encode(document)).replace(b"\n", b"\r\n")
    return head + b"\r\n\r\n" + body


def test_key_requests_are_answered_at_most_once_per_interval_per_requester(
    laptop: Device, phone: Device, server: Server
) -> None:
    laptop_rt, phone_rt = _paired(laptop, phone)
    laptop_id, phone_id = device_id(laptop), device_id(phone)
    current = laptop_rt.trust.device_log().account_key
    assert current is not None
    request = _request(phone_id, phone_rt.trust.device_keys(), laptop_id, current)
    keys_sent: list[str] = []
    undo = intercept(server, _recording_keys(keys_sent))
    inbox = layout.inbox_folder(laptop_id)
    for _ in range(3):  # one honest request and two replays of it
        server.mailbox.append(inbox, request)
    laptop_rt.sync()
    assert keys_sent == [layout.inbox_folder(phone_id)]
    reported = alerts(laptop)
    assert len(reported) == 2, reported
    assert all("rate-limited" in a for a in reported), reported
    clock(laptop).advance(keyrequest.ANSWER_INTERVAL - 1)
    server.mailbox.append(inbox, request)
    laptop_rt.sync()
    assert len(keys_sent) == 1
    assert any("rate-limited" in a for a in alerts(laptop))
    clock(laptop).advance(2)
    server.mailbox.append(inbox, request)
    laptop_rt.sync()
    assert len(keys_sent) == 2
    undo()
    # The phone already holds that key: the answers change nothing there, and say nothing.
    before = fingerprint(phone)
    phone_rt.sync()
    assert fingerprint(phone) == before
    assert alerts(phone) == []
    assert not [e for e in _events(phone) if e == "account.key_rolled"]


def _events(device: Device) -> list[str]:
    names = []
    while not device.events.empty():
        names.append(device.events.get()[0])
    return names
