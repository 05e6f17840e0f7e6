"""The account's prefer-encrypt setting between real runtimes on the in-memory store: set on one
device, it reaches the other by key sync and changes its header and recommendations; the
provider replaying the older signed update changes nothing."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

from native_host.adapters.pgp import generate_account_key, load_secret
from native_host.api import pairing as api_pairing
from native_host.api import peers as api_peers
from native_host.core import envelope, layout
from native_host.service.accounts import account_key_name
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_keysync_flow import T0, pair, runtime, settle

BOB = "bob@example.net"


def keydata(device: Device) -> bytes:
    armored = device.secrets.get(account_key_name(ACCOUNT))
    assert armored is not None
    return load_secret(armored).keydata()


def prefer(device: Device) -> str:
    return runtime(device).peers.prefer_encrypt()[0]


def bob_mutual_mail() -> str:
    key = generate_account_key(BOB, T0).keydata()
    value = f"addr={BOB}; prefer-encrypt=mutual; keydata={base64.b64encode(key).decode()}"
    folded = "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
    return base64.b64encode(f"From: <{BOB}>\r\nAutocrypt: {folded}\r\n\r\n".encode()).decode()


def test_setting_reaches_the_other_device_and_a_replay_of_the_old_one_changes_nothing(
    server: Server, laptop: Device, phone: Device
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    assert prefer(laptop) == prefer(phone) == "nopreference"
    phone_id = runtime(phone).record.device.device_id  # type: ignore[union-attr]
    inbox = layout.inbox_folder(phone_id)
    captured: list[bytes] = []
    append = server.mailbox.append

    def spy(folder: str, message: bytes) -> int | None:
        if folder == inbox and envelope.parse(message).type is envelope.MessageType.KEY_UPDATE:
            captured.append(message)
        return append(folder, message)

    server.mailbox.append = spy  # type: ignore[method-assign]

    result = runtime(laptop).peers.set_prefer_encrypt("mutual", keydata(laptop))
    assert result["prefer_encrypt"] == "mutual"
    settle([laptop, phone], lambda: prefer(phone) == "mutual")
    assert phone.wait_event("account.prefer_encrypt")["prefer_encrypt"] == "mutual"
    old_update = captured[-1]

    # The phone now says so in its header and its recommendations.
    on_phone = SimpleNamespace(service=lambda: phone.service)  # what api/ reads of a session
    header = api_peers.header(on_phone, {"account": ACCOUNT})  # type: ignore[arg-type]
    assert header["prefer_encrypt"] == "mutual"
    assert "; prefer-encrypt=mutual; keydata=" in header["value"]
    assert api_pairing.account_key(on_phone, {"account": ACCOUNT})["prefer_encrypt"] == "mutual"  # type: ignore[arg-type]
    runtime(phone).peers.ingest(bob_mutual_mail())
    assert runtime(phone).peers.recommend([BOB], False)["recommendation"] == "encrypt"
    assert runtime(phone).peers.get(ACCOUNT) is None  # the own row is no peer
    assert all(p["addr"] != ACCOUNT for p in runtime(phone).peers.page(100, None)["peers"])

    runtime(phone).peers.set_prefer_encrypt("nopreference", keydata(phone))
    settle([laptop, phone], lambda: prefer(laptop) == "nopreference")
    on_laptop = SimpleNamespace(service=lambda: laptop.service)
    header = api_peers.header(on_laptop, {"account": ACCOUNT})  # type: ignore[arg-type]
    assert "prefer-encrypt" not in header["value"]
    settle([laptop, phone], lambda: runtime(laptop).peers.get(BOB) is not None)
    assert runtime(laptop).peers.recommend([BOB], False)["recommendation"] == "available"

    # The provider puts the laptop's old, validly signed update back into the phone's inbox.
    server.mailbox.append = append  # type: ignore[method-assign]
    book = runtime(phone).peers
    applied: list[str] = []
    apply = book.sync.apply

    def counting(sender: str, payload: dict[str, Any], members: Any) -> Any:
        applied.append(sender)
        return apply(sender, payload, members)

    book.sync.apply = counting  # type: ignore[method-assign]
    server.mailbox.append(inbox, old_update)
    settle([laptop, phone], lambda: server.mailbox.status(inbox).messages == 0)  # read, dropped
    laptop_id = runtime(laptop).record.device.device_id  # type: ignore[union-attr]
    assert laptop_id in applied  # it was opened and merged: the merge kept the newer setting
    assert prefer(phone) == "nopreference"
    assert runtime(phone).peers.recommend([BOB], False)["recommendation"] == "available"
