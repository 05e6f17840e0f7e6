"""Key sync between real runtimes on the in-memory store: a late device gets one snapshot, and
concurrent ingests on several devices converge to what one device would hold."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from native_host.adapters.pgp import generate_account_key
from native_host.core import envelope, layout
from native_host.core.autocrypt import PeerState
from native_host.core.keysync import open_chunk
from native_host.service.runtime import AccountRuntime
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_pairing_flow import state

T0 = 1_790_000_000


@pytest.fixture(scope="module")
def keys() -> list[bytes]:
    return [generate_account_key(f"k{i}@example.net", T0).keydata() for i in range(3)]


@functools.cache
def key_for(addr: str, variant: int = 0) -> bytes:
    """A key whose user id is `addr` (a header's key must name its sender), one per variant."""
    return generate_account_key(addr, T0 + variant).keydata()


def mail(addr: str, keydata: bytes, date: int) -> str:
    value = f"addr={addr}; keydata={base64.b64encode(keydata).decode()}"
    folded = "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
    raw = (
        f"From: <{addr}>\r\nDate: {format_datetime(datetime.fromtimestamp(date, UTC))}\r\n"
        f"Autocrypt: {folded}\r\n\r\n"
    ).encode()
    return base64.b64encode(raw).decode()


def runtime(device: Device) -> AccountRuntime:
    return device.service.runtime(ACCOUNT)


def settle(
    devices: list[Device],
    done: Callable[[], bool],
    timeout: float = 20.0,
    describe: Callable[[], str] = lambda: "",
) -> None:
    """Let the background loops run, moving every device's fake clock so debounce and retry
    timers fire. `describe` says what the devices hold when they do not settle."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"key sync did not settle {describe()}".rstrip())
        for device in devices:
            device.service._clock.advance(0.5)  # type: ignore[attr-defined]
            runtime(device)._dirty.set()
        time.sleep(0.03)


def table(device: Device) -> dict[str, PeerState]:
    return runtime(device).peers.repo.snapshot()  # type: ignore[attr-defined, no-any-return]


def pair(old: Device, new: Device, settle_with: list[Device]) -> None:
    new_rt, old_rt = runtime(new), runtime(old)
    invitation = old_rt.with_store(lambda store: old_rt.trust.invite(store))
    joined = new_rt.with_store(lambda store: new_rt.trust.join(store, str(invitation.code)))
    settle(
        settle_with,
        lambda: state(old, invitation.pairing_id) == "completed" == state(new, joined),
    )


def test_a_late_device_gets_one_snapshot_and_everyone_converges(
    tmp_path: Path, server: Server, laptop: Device, phone: Device, keys: list[bytes]
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    for i in range(30):
        runtime(laptop).peers.ingest(
            mail(f"l{i}@example.net", key_for(f"l{i}@example.net"), T0 + i)
        )
        runtime(phone).peers.ingest(mail(f"p{i}@example.net", key_for(f"p{i}@example.net"), T0 + i))
    settle([laptop, phone], lambda: len(table(laptop)) == len(table(phone)) == 60)

    tablet = Device(tmp_path / "tablet", server, 3)
    configured(tablet, "Tablet")
    for i in range(5):  # learned before it was paired: shared once it is
        runtime(tablet).peers.ingest(
            mail(f"t{i}@example.net", key_for(f"t{i}@example.net"), T0 + i)
        )
    sent: list[bytes] = []
    append = server.mailbox.append
    me = runtime(tablet).record.device
    assert me is not None
    inbox = layout.inbox_folder(me.device_id)

    def spy(folder: str, message: bytes) -> int | None:
        if folder == inbox:
            sent.append(message)
        return append(folder, message)

    server.mailbox.append = spy  # type: ignore[method-assign]
    everyone = [laptop, phone, tablet]
    pair(laptop, tablet, everyone)
    settle(everyone, lambda: all(len(table(d)) == 65 for d in everyone))
    assert table(laptop) == table(phone) == table(tablet)

    # What reached the tablet: the laptop (its approver) sent the 60 rows it had, once; the
    # phone sent none of the history.
    tablet_rt = runtime(tablet)
    members = tablet_rt.trust.device_log().members()
    rows: dict[str, list[str]] = {}
    for raw in sent:
        message = envelope.parse(raw)
        if message.type is not envelope.MessageType.KEY_UPDATE:
            continue
        payload = open_chunk(
            message,
            me=me.device_id,
            my_keys=tablet_rt.trust.device_keys(),
            signer=members[message.sender].keys,
        )
        rows.setdefault(message.sender, []).extend(p["addr"] for p in payload["peers"])
    laptop_id = runtime(laptop).record.device.device_id  # type: ignore[union-attr]
    phone_id = runtime(phone).record.device.device_id  # type: ignore[union-attr]
    assert sorted(rows[laptop_id]) == sorted(a for a in table(laptop) if not a.startswith("t"))
    assert rows.get(phone_id, []) == []
    # And storage is bounded: every inbox drains.
    settle(
        everyone,
        lambda: all(
            server.mailbox.status(f).messages == 0
            for f in server.mailbox.list_folders(layout.INBOX_PREFIX)
        ),
    )


def test_concurrent_ingests_on_two_devices_converge_to_the_newest(
    laptop: Device, phone: Device, keys: list[bytes]
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    # The same correspondents, seen on both devices with different keys and dates, interleaved.
    expected: dict[str, tuple[int, bytes]] = {}
    for i in range(40):
        addr = f"c{i % 8}@example.net"
        sides = ((laptop, key_for(addr, 0), T0 + 2 * i), (phone, key_for(addr, 1), T0 + 81 - 2 * i))
        for device, key, date in sides:
            runtime(device).peers.ingest(mail(addr, key, date))
            if addr not in expected or date > expected[addr][0]:
                expected[addr] = (date, key)
    # Equal dates on both sides: the tie-breaker must pick the same winner everywhere.
    runtime(laptop).peers.ingest(mail("tie@example.net", key_for("tie@example.net", 0), T0))
    runtime(phone).peers.ingest(mail("tie@example.net", key_for("tie@example.net", 2), T0))

    def agreed() -> bool:
        a, b = table(laptop), table(phone)
        return len(a) == len(b) == 9 and a == b

    settle([laptop, phone], agreed)
    final = table(laptop)
    for addr, (date, key) in expected.items():
        assert final[addr].autocrypt_timestamp == date
        assert final[addr].public_key == key
    assert final["tie@example.net"].public_key in (
        key_for("tie@example.net", 0),
        key_for("tie@example.net", 2),
    )


def test_a_far_future_row_from_another_device_does_not_pin_a_key(
    laptop: Device, phone: Device, keys: list[bytes]
) -> None:
    """Issue 16 item 7 on real runtimes: a hostile (or clock-broken) member puts rows into its
    table that no mail could have made: a key dated just below 2^40, and a key that is no
    OpenPGP key. The laptop re-dates the first to when it arrived and drops the second, says
    so, and the correspondent's next real mail replaces the key."""
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    far = 2**40 - 1
    runtime(phone).peers.sync.ingest(
        [
            PeerState("carol@example.net", far, far, key_for("carol@example.net", 2), "mutual"),
            PeerState("dave@example.net", T0, T0, b"not a key", "mutual"),
        ]
    )
    settle([laptop, phone], lambda: len(table(laptop)) == 2)
    carol, dave = table(laptop)["carol@example.net"], table(laptop)["dave@example.net"]
    arrived = laptop.service._clock()  # type: ignore[attr-defined]
    assert carol.public_key == key_for("carol@example.net", 2)
    assert carol.autocrypt_timestamp is not None
    assert carol.autocrypt_timestamp <= arrived
    assert (dave.public_key, dave.autocrypt_timestamp, dave.last_seen) == (None, None, T0)
    # The alert follows the commit that made the rows visible, on the sync thread: wait for it.
    seen = [laptop.wait_event("security.alert", timeout=10)["message"]]
    while not any("re-dated or stripped" in a for a in seen):
        seen.append(laptop.wait_event("security.alert", timeout=10)["message"])

    laptop.service._clock.advance(60)  # type: ignore[attr-defined]
    now = int(laptop.service._clock())  # type: ignore[attr-defined]
    result = runtime(laptop).peers.ingest(
        mail("carol@example.net", key_for("carol@example.net", 0), now)
    )
    assert result["updated"] is True
    assert table(laptop)["carol@example.net"].public_key == key_for("carol@example.net", 0)
