"""`account.secret_key` over stdio, a real Dovecot and the real keyring: what the add-on imports
into Thunderbird's OpenPGP store. Only a paired device answers; after a key roll the earlier key
comes along, so Thunderbird still reads old mail; no secret ever reaches the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from native_host.adapters.pgp import load_secret
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import paired
from tests.host.test_lifecycle_imap import me

__all__ = ["dovecot", "mail"]


def test_the_secret_key_goes_to_paired_devices_and_survives_a_roll(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop, phone = paired(spawn, mail)
    current = laptop.call("account.key", account)["fingerprint"]

    for host in (laptop, phone):
        answer = host.call("account.secret_key", account)
        assert answer["fingerprint"] == current
        assert answer["previous"] == []
        key = load_secret(answer["secret_key"], address=mail["account"])
        assert key.fingerprint == current

    result = laptop.call("device.remove", {**account, "device_id": me(phone, account)})
    rolled = laptop.call("account.secret_key", account)
    assert rolled["fingerprint"] == result["account_key"] != current
    assert [p["fingerprint"] for p in rolled["previous"]] == [current]
    assert load_secret(rolled["previous"][0]["secret_key"]).fingerprint == current

    phone.wait_event("device.removed", 20)
    assert phone.request("account.secret_key", account)["error"]["code"] == "not_joined"
    for host in (laptop, phone):
        assert "PRIVATE KEY" not in host.stderr_text()


def test_an_unpaired_device_has_no_secret_to_give(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    from tests.host.test_pairing_imap import joined

    account = {"account": mail["account"]}
    joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    refused = phone.request("account.secret_key", account)
    assert refused["error"]["code"] == "not_joined"
    assert phone.request("account.secret_key", {})["error"]["code"] == "invalid_params"
