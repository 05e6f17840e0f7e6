"""Key sync through two real hosts, a real Dovecot and the real keyring: a key learned from mail on
one device reaches the other, an older message cannot win, and the SMA folders drain."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.adapters.pgp import generate_account_key
from native_host.core import layout
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_pairing_imap import joined

__all__ = ["dovecot", "mail"]

T0 = 1_760_000_000


def correspondent_mail(addr: str, keydata: bytes, date: int, subject: str = "hello") -> str:
    """A received message with an Autocrypt header, base64 as peers.ingest takes it."""
    value = f"addr={addr}; keydata={base64.b64encode(keydata).decode()}"
    folded = "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
    raw = (
        f"From: Alice <{addr}>\r\nTo: me\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.fromtimestamp(date, UTC))}\r\n"
        f"Autocrypt: {folded}\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    ).encode()
    return base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def alice_keys() -> tuple[bytes, bytes]:
    return (
        generate_account_key("alice@example.org", T0).keydata(),
        generate_account_key("alice@example.org", T0).keydata(),
    )


def paired(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> tuple[CheckedHost, CheckedHost]:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    code = laptop.call("pairing.invite", account)["pairing"]["code"]
    phone.call("pairing.join", {**account, "code": code})
    phone.wait_event("pairing.completed", 15)
    laptop.wait_event("pairing.completed", 15)
    return laptop, phone


@pytest.fixture
def imap(mail: dict[str, Any]) -> Iterator[ImapStore]:
    settings = mail["imap"]
    store = ImapStore(
        settings["host"],
        settings["port"],
        settings["username"],
        mail["password"],
        security="none",
        timeout=15.0,
    )
    yield store
    store.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def sma_counts(imap: ImapStore) -> dict[str, int]:
    return {f: imap.status(f).messages for f in imap.list_folders(layout.ANNOUNCE_FOLDER)}


def test_a_key_learned_on_one_device_reaches_the_other(
    spawn: Callable[..., CheckedHost],
    mail: dict[str, Any],
    alice_keys: tuple[bytes, bytes],
    imap: ImapStore,
) -> None:
    account = {"account": mail["account"]}
    laptop, phone = paired(spawn, mail)
    new_key, old_key = alice_keys
    announce_before = imap.status(layout.ANNOUNCE_FOLDER).messages

    started = time.monotonic()
    ingested = laptop.call(
        "peers.ingest",
        {**account, "message": correspondent_mail("Alice@Example.org", new_key, T0 + 1000)},
    )
    assert ingested == {"updated": True, "addr": "alice@example.org"}
    event = phone.wait_event("peers.updated", 15, check=lambda d: "alice@example.org" in d["addrs"])
    elapsed = time.monotonic() - started
    print(f"key sync: ingest on the laptop -> key on the phone in {elapsed:.2f} s")
    assert event["source"] == "sync"
    on_phone = phone.call("peers.get", {**account, "addr": "alice@example.org"})["peer"]
    on_laptop = laptop.call("peers.get", {**account, "addr": "alice@example.org"})["peer"]
    assert on_phone == on_laptop
    assert base64.b64decode(on_phone["public_key"]) == new_key
    assert on_phone["autocrypt_timestamp"] == T0 + 1000
    assert on_phone["public_key_fingerprint"] is not None

    # An older message, with another key, ingested on the phone does not win anywhere.
    older = phone.call(
        "peers.ingest",
        {**account, "message": correspondent_mail("alice@example.org", old_key, T0 + 10)},
    )
    assert older == {"updated": False, "addr": "alice@example.org"}
    # A newer message without a header only moves last_seen, and that syncs too.
    plain = base64.b64encode(
        b"From: alice@example.org\r\nDate: "
        + format_datetime(datetime.fromtimestamp(T0 + 5000, UTC)).encode()
        + b"\r\nSubject: no key\r\n\r\n"
    ).decode()
    assert phone.call("peers.ingest", {**account, "message": plain})["updated"] is True
    laptop.wait_event(
        "peers.updated",
        15,
        check=lambda d: d["source"] == "sync" and "alice@example.org" in d["addrs"],
    )
    for host in (laptop, phone):
        peer = host.call("peers.get", {**account, "addr": "alice@example.org"})["peer"]
        assert base64.b64decode(peer["public_key"]) == new_key
        assert peer["last_seen"] == T0 + 5000
        assert peer["autocrypt_timestamp"] == T0 + 1000
    rec = laptop.call(
        "peers.recommend", {**account, "recipients": ["alice@example.org", "bob@example.org"]}
    )
    assert [r["recommendation"] for r in rec["recipients"]] == ["available", "disable"]
    assert rec["recommendation"] == "disable"

    # Storage: both inboxes drain, and the announcement folder did not grow with key updates.
    inboxes = [f for f in imap.list_folders(layout.ANNOUNCE_FOLDER) if f != layout.ANNOUNCE_FOLDER]
    assert len(inboxes) == 2
    wait_until(lambda: all(imap.status(f).messages == 0 for f in inboxes), 15, "empty SMA inboxes")
    assert imap.status(layout.ANNOUNCE_FOLDER).messages == announce_before
    for host in (laptop, phone):
        assert host.problems() == []
        assert "Traceback" not in host.stderr_text()


def test_ingest_rejects_bad_input_clearly(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    bad = laptop.request("peers.ingest", {**account, "message": "not base64!"})["error"]
    assert bad["code"] == "invalid_params"
    huge = base64.b64encode(b"X-Filler: " + b"a" * 70_000 + b"\r\n\r\n").decode()
    error = laptop.request("peers.ingest", {**account, "message": huge})["error"]
    assert error["code"] == "invalid_params"
    assert "64 KiB" in error["message"]
    two_from = base64.b64encode(b"From: a@x.org, b@x.org\r\n\r\n").decode()
    result = laptop.call("peers.ingest", {**account, "message": two_from})
    assert result["updated"] is False
    assert "From" in result["ignored"]
    own = base64.b64encode(f"From: {mail['account']}\r\n\r\n".encode()).decode()
    assert laptop.call("peers.ingest", {**account, "message": own})["ignored"]
    assert laptop.call("peers.get", {**account, "addr": "nobody@x.org"}) == {"peer": None}
    assert laptop.call("peers.list", account) == {"peers": [], "cursor": None, "total": 0}
    header = laptop.call("autocrypt.header", account)
    assert header["header"].startswith(f"Autocrypt: addr={mail['account']}; keydata=")
    unknown = laptop.request("peers.list", {"account": "nobody@example.org"})["error"]
    assert unknown["code"] == "not_configured"
    assert laptop.problems() == []
