"""The whole exchange with a real Delta Chat user, through two real hosts sharing one account.

Delta Chat writes to the account (plaintext, its key in the Autocrypt header); device A ingests
it; device B, which never saw that mail, learns the key by key sync; B answers as Thunderbird
would with the shared account key (encrypted to the key B learned, signed by the account key,
RFC 1847 encapsulation, Autocrypt header outside) and Delta Chat shows the answer with the
padlock from a key contact; Delta Chat's next mail, encrypted to the account key with hidden
recipients (wildcard key id) and its Autocrypt header only inside, decrypts on A, whose ingest
uses the inner header. Along the way: Delta Chat sends SEIPD v1 to the account key, because the
key's Features say v1 only (Thunderbird's RNP cannot open v2).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest

from native_host.core import autocrypt
from tests.host.harness import CheckedHost
from tests.host.test_keysync_imap import paired
from tests.interop.deltachat import DeltaChatCore, MailSystem
from tests.interop.test_deltachat import _encrypted_rfc1847, core, mail

__all__ = ["core", "mail"]  # the fixtures, shared with test_deltachat

pytestmark = pytest.mark.imap

WILDCARD_KEY_ID = bytes(8)


def _openpgp_message(raw: bytes) -> bytes:
    """The armored OpenPGP message of a PGP/MIME mail (the packet reader takes armor)."""
    found = re.search(
        rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", raw, flags=re.DOTALL
    )
    assert found is not None, raw[:2000]
    return found.group(0).replace(b"\r\n", b"\n")


def _session_packets(message: bytes) -> tuple[list[bytes], list[int]]:
    """(key ids of the v3 PKESK packets, versions of the SEIPD packets) of an OpenPGP message."""
    from pysequoia.packet import PacketPile, Tag

    packets = list(PacketPile.from_bytes(message))
    key_ids = [bytes(p.body[1:9]) for p in packets if p.tag == Tag.PKESK and p.body[0] == 3]
    versions = [p.body[0] for p in packets if p.tag == Tag.SEIP]
    return key_ids, versions


def test_full_exchange_with_deltachat(
    spawn: Callable[..., CheckedHost], mail: MailSystem, core: DeltaChatCore
) -> None:
    import pysequoia

    ours = mail.new_mailbox("me")
    settings: dict[str, Any] = {
        "account": ours.addr,
        "imap": {
            "host": ours.host,
            "port": ours.port,
            "security": "none",
            "username": ours.imap_user,
        },
        "password": ours.password,
    }
    account = {"account": ours.addr}
    device_a, device_b = paired(spawn, settings)
    dc = core.new_account(mail.new_mailbox("dc"), name="Delta")

    # 1. Delta Chat writes to the account; device A ingests the mail.
    dc.send_text(ours.addr, "hello from Delta Chat")
    first = mail.wait_for_inbox(ours, lambda m: b"hello from Delta Chat" in m)
    ingested = device_a.call(
        "peers.ingest", {**account, "message": base64.b64encode(first).decode()}
    )
    assert ingested == {"updated": True, "addr": dc.addr}
    (first_header,) = autocrypt.message_headers(first).autocrypt
    dc_fingerprint = pysequoia.Cert.from_bytes(
        autocrypt.parse_header(re.sub(r"\r?\n", "", first_header)).keydata
    ).fingerprint.upper()

    # 2. Device B never saw that mail: it learns Delta Chat's key by key sync.
    device_b.wait_event("peers.updated", 30, check=lambda d: dc.addr in d["addrs"])
    peer = device_b.call("peers.get", {**account, "addr": dc.addr})["peer"]
    assert peer["public_key_fingerprint"] == dc_fingerprint
    dc_cert = pysequoia.Cert.from_bytes(base64.b64decode(peer["public_key"]))

    # 3. B answers with the shared account key, as Thunderbird writes it; Delta Chat shows the
    #    padlock, from a key contact.
    secret = device_b.call("account.secret_key", account)["secret_key"]
    account_tsk = pysequoia.Tsk.from_bytes(secret.encode())
    header = device_b.call("autocrypt.header", account)["value"]
    assert autocrypt.parse_header(header).keydata == bytes(account_tsk.extract_certificate())
    answer = _encrypted_rfc1847(ours, dc.addr, "an answer from device B", account_tsk, dc_cert)
    mail.send(ours.addr, [dc.addr], answer)
    seen = dc.wait_for_message(lambda m: "an answer from device B" in m.text)
    assert seen.sender_addr == ours.addr
    assert seen.encrypted is True, seen.info
    assert seen.key_contact is True

    # 4. Delta Chat's next mail in that chat is encrypted to the account key.
    chat_id = dc.account.get_message_by_id(seen.id).get_snapshot().chat_id
    chat = dc.account.get_chat_by_id(chat_id)
    chat.accept()  # a first mail from a new key contact lands as a contact request
    dc.send_text_in(chat, "an encrypted reply from Delta Chat")
    second = mail.wait_for_inbox(ours, lambda m: b"-----BEGIN PGP MESSAGE-----" in m)
    assert autocrypt.message_headers(second).autocrypt == ()  # the header is inside only
    key_ids, seipd_versions = _session_packets(_openpgp_message(second))
    assert WILDCARD_KEY_ID in key_ids  # hidden recipients
    assert seipd_versions == [1]  # the account key's Features: SEIPD v1 only

    # 5. It decrypts on A, and A's ingest takes the Autocrypt header from inside: the outer
    #    Date is shifted back by Delta Chat, the inner one is the real one.
    before = device_a.call("peers.get", {**account, "addr": dc.addr})["peer"]
    ingested = device_a.call(
        "peers.ingest", {**account, "message": base64.b64encode(second).decode()}
    )
    assert ingested["encrypted"] == "decrypted", ingested
    assert ingested["addr"] == dc.addr
    assert ingested["updated"] is True
    after = device_a.call("peers.get", {**account, "addr": dc.addr})["peer"]
    inner = pysequoia.decrypt(_openpgp_message(second), account_tsk.decryptor()).bytes
    assert inner is not None
    inner_date = autocrypt.message_headers(inner).date
    outer_date = autocrypt.message_headers(second).date
    assert inner_date is not None
    assert outer_date is not None
    assert inner_date != outer_date  # Delta Chat shifts the outer Date back
    assert after["autocrypt_timestamp"] == inner_date
    assert after["autocrypt_timestamp"] > before["autocrypt_timestamp"]
    assert after["public_key"] == before["public_key"]
