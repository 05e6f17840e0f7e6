"""Keys and messages made by the real tools (tests/interop/corpus/, see its README) are accepted or
refused by the peer-key policy exactly as the manifest says.

For each item the keydata is what a mail would carry: the binary of an armored key, the
`Autocrypt:` header of a message, or (encrypted Delta Chat mail) the header inside the encrypted
part, decrypted with the throwaway recipient key shipped beside it. It is then judged twice at
the item's `checked_at`:

- by `usable_peer_key` / `peer_key_fingerprint` (the key on its own); the address rules
  (`uid-mismatch`, `revoked-uid`) cannot be decided there, since the functions get no address;
- as an `Autocrypt:` header from that address, by `core.autocrypt.update_from_message` with
  `usable_peer_key` as its key check: the product's path for a header in an incoming mail.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.pgp import minimal_peer_keydata, peer_key_fingerprint, usable_peer_key
from native_host.core import autocrypt

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
ITEMS: list[dict[str, Any]] = MANIFEST["items"]
TOOLS = {"gnupg", "sq", "pysequoia", "deltachat", "thunderbird"}
REASONS = {
    "usable",
    "weak-rsa",
    "expired",
    "expired-subkey",
    "no-encryption-subkey",
    "revoked",
    "revoked-uid",
    "uid-mismatch",
    "sha1-binding",
}
# Refusals that depend on the Autocrypt addr, not on the key alone.
ADDRESS_REASONS = {"uid-mismatch", "revoked-uid"}


def _at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["checked_at"].replace("Z", "+00:00")).timestamp()


def _dearmor(text: str) -> bytes:
    lines = text.strip().splitlines()
    assert lines[0].startswith("-----BEGIN PGP "), lines[0]
    body: list[str] = []
    in_body = False
    for line in lines[1:-1]:
        if not in_body:
            in_body = not line.strip()
            continue
        if line.startswith("="):
            break
        body.append(line.strip())
    return base64.b64decode("".join(body))


def _decrypt(raw: bytes, secret_file: str) -> bytes:
    """The cleartext MIME part of a PGP/MIME message (Delta Chat uses SEIPDv2, which GnuPG 2.2
    cannot read; pysequoia can)."""
    try:
        import pysequoia
    except ImportError as exc:
        raise AssertionError("pysequoia is missing: pip install -e '.[test]'") from exc

    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert message.get_content_type() == "multipart/encrypted"
    parts = [p for p in message.walk() if p.get_content_type() == "application/octet-stream"]
    assert len(parts) == 1
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    secret = pysequoia.Tsk.from_bytes((CORPUS / secret_file).read_bytes())
    decrypted: bytes = pysequoia.decrypt(payload, decryptor=secret.decryptor()).bytes
    return decrypted


def _header_block(entry: dict[str, Any]) -> bytes:
    """The header block that carries the item's Autocrypt header, as a mail would bring it."""
    data = (CORPUS / entry["file"]).read_bytes()
    if entry["kind"] == "message":
        if entry.get("decrypt_with"):
            outer = autocrypt.message_headers(data)
            assert outer.autocrypt == (), "the Autocrypt header must be inside the encrypted part"
            return _decrypt(data, entry["decrypt_with"])
        return data
    keydata = _dearmor(data.decode())
    value = autocrypt.outgoing_header(entry["addr"], keydata, prefer_mutual=True)
    folded = "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
    return (
        f"From: <{entry['addr']}>\r\nTo: <me@example.org>\r\nSubject: corpus\r\n"
        f"Autocrypt: {folded}\r\n\r\n"
    ).encode()


def _user_ids(keydata: bytes) -> list[str]:
    """The addresses of a key's user ids, read by Sequoia (an independent look at what we kept)."""
    import email.utils

    import pysequoia

    return [
        email.utils.parseaddr(str(uid))[1].lower()
        for uid in pysequoia.Cert.from_bytes(keydata).user_ids
    ]


def _keydata(block: bytes) -> bytes:
    info = autocrypt.message_headers(block)
    assert len(info.autocrypt) == 1, info.autocrypt
    return autocrypt.parse_header(re.sub(r"\r?\n", "", info.autocrypt[0])).keydata


def test_manifest_lists_every_file_and_covers_every_tool() -> None:
    listed = {e["file"] for e in ITEMS} | {e["decrypt_with"] for e in ITEMS if "decrypt_with" in e}
    on_disk = {p.name for p in CORPUS.iterdir()} - {"manifest.json", "README.md"}
    assert listed == on_disk
    assert {e["tool"] for e in ITEMS} == TOOLS
    assert {e["key_version"] for e in ITEMS} == {4, 6}
    assert len({e["id"] for e in ITEMS}) == len(ITEMS)
    for entry in ITEMS:
        assert entry["expected"] in ("accepted", "refused"), entry["id"]
        assert entry["reason"] in REASONS, entry["id"]
        assert (entry["reason"] == "usable") == (entry["expected"] == "accepted"), entry["id"]
        assert entry["tool_version"], entry["id"]
        fingerprint = entry["fingerprint"]
        if entry["expected"] == "accepted":
            assert re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint), entry["id"]
        else:
            assert fingerprint is None, entry["id"]


@pytest.mark.parametrize("entry", ITEMS, ids=[e["id"] for e in ITEMS])
def test_key_on_its_own(entry: dict[str, Any]) -> None:
    keydata = _keydata(_header_block(entry))
    now = _at(entry)
    usable = usable_peer_key(keydata, now=now)
    fingerprint = peer_key_fingerprint(keydata, now=now)
    if entry["expected"] == "accepted" or entry["reason"] in ADDRESS_REASONS:
        # an address refusal is still a usable key for the address its good user id names
        assert usable, f"{entry['id']}: refused, but the key itself is fine ({entry['reason']})"
        if entry["expected"] == "accepted":
            assert fingerprint == entry["fingerprint"]
    else:
        assert not usable, f"{entry['id']}: accepted, but the policy refuses: {entry['reason']}"
        assert fingerprint is None


@pytest.mark.parametrize("entry", ITEMS, ids=[e["id"] for e in ITEMS])
def test_autocrypt_header_from_the_addr(entry: dict[str, Any]) -> None:
    block = _header_block(entry)
    now = _at(entry)
    info = autocrypt.message_headers(block)
    assert info.from_addr == entry["addr"]
    state = autocrypt.update_from_message(
        None,
        info,
        int(now),
        key_ok=lambda keydata, addr: minimal_peer_keydata(keydata, now=now, address=addr),
    )
    assert state is not None
    if entry["expected"] == "accepted":
        assert state.public_key is not None, f"{entry['id']}: the header was not taken"
        assert peer_key_fingerprint(state.public_key, now=now) == entry["fingerprint"]
        # What is kept is minimal: the header's address is its only user id.
        assert usable_peer_key(state.public_key, now=now, address=entry["addr"])
        assert _user_ids(state.public_key) == [entry["addr"].lower()]
    else:
        assert state.public_key is None, (
            f"{entry['id']}: the header was taken, but the policy refuses: {entry['reason']}"
        )
