"""The account key: Autocrypt Level 1 shape, minimal keydata, and the checks pgpy does not do."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.adapters import pgp
from native_host.adapters.pgp import BadAccountKey

ADDR = "alice@example.org"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _pgpy() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgpy
        import pgpy.constants

    return pgpy


def _parse(armored: str | bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key, _ = _pgpy().PGPKey.from_blob(armored)
    return key


@pytest.fixture(scope="module")
def key() -> pgp.AccountKey:
    return pgp.generate_account_key(ADDR, NOW)


def _new_header(tag: int, length: int) -> bytes:
    if length < 192:
        return bytes([0xC0 | tag, length])
    if length < 8384:
        length -= 192
        return bytes([0xC0 | tag, (length >> 8) + 192, length & 0xFF])
    return bytes([0xC0 | tag, 255]) + length.to_bytes(4, "big")


def _packet(tag: int, body: bytes) -> bytes:
    return _new_header(tag, len(body)) + body


def _build(*, uids: int = 1, subkey: bool = True, **kwargs: Any) -> Any:
    """An Ed25519 key made with pgpy directly, to be mangled by the tests below."""
    pgpy = _pgpy()
    c = pgpy.constants
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = pgpy.PGPKey.new(c.PubKeyAlgorithm.EdDSA, c.EllipticCurveOID.Ed25519, created=NOW)
        for i in range(uids):
            k.add_uid(
                pgpy.PGPUID.new(f"<user{i}@example.org>" if i else f"<{ADDR}>"),
                usage={c.KeyFlags.Certify, c.KeyFlags.Sign},
                hash=c.HashAlgorithm.SHA256,
                created=NOW,
                **kwargs,
            )
        if subkey:
            sub = pgpy.PGPKey.new(
                c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519, created=NOW
            )
            k.add_subkey(
                sub,
                usage={c.KeyFlags.EncryptCommunications},
                hash=c.HashAlgorithm.SHA256,
                created=NOW,
            )
    return k


# ---------------------------------------------------------------------------------------------
# Generation


def test_generated_key_is_autocrypt_level_1(key: pgp.AccountKey) -> None:
    c = _pgpy().constants
    k = _parse(key.secret_armored)
    assert not k.is_public
    assert not k.is_protected
    assert k.key_algorithm == c.PubKeyAlgorithm.EdDSA
    assert k.key_size == c.EllipticCurveOID.Ed25519
    assert k.created == NOW
    assert [u.userid for u in k.userids] == [f"<{ADDR}>"]
    assert key.user_id == f"<{ADDR}>"

    selfsig = k.userids[0].selfsig
    assert selfsig.key_flags == {c.KeyFlags.Certify, c.KeyFlags.Sign}
    assert selfsig.hash_algorithm == c.HashAlgorithm.SHA256
    assert selfsig.hashprefs[0] == c.HashAlgorithm.SHA256
    assert selfsig.compprefs == [c.CompressionAlgorithm.Uncompressed]
    assert selfsig.key_expiration is None
    assert k.expires_at is None

    assert len(k.subkeys) == 1
    sub = next(iter(k.subkeys.values()))
    assert sub.key_algorithm == c.PubKeyAlgorithm.ECDH
    assert sub.key_size == c.EllipticCurveOID.Curve25519
    assert not sub.is_protected
    (binding,) = list(sub.__sig__)
    assert binding.type == c.SignatureType.Subkey_Binding
    assert binding.key_flags == {c.KeyFlags.EncryptCommunications, c.KeyFlags.EncryptStorage}
    assert binding.key_expiration is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert bool(k.verify(k.userids[0], selfsig))
        assert bool(k.verify(sub, binding))

    assert re.fullmatch(r"[0-9A-F]{40}", key.fingerprint)
    assert key.fingerprint == str(k.fingerprint).replace(" ", "")
    assert "PRIVATE" not in repr(key)
    assert key.secret_armored not in repr(key)


def test_now_may_be_epoch_seconds_but_not_naive() -> None:
    k = _parse(pgp.generate_account_key(ADDR, NOW.timestamp()).public_armored)
    assert k.created == NOW
    local = pgp.generate_account_key(ADDR, NOW.astimezone(timezone(timedelta(hours=2))))
    assert _parse(local.public_armored).created == NOW
    with pytest.raises(ValueError, match="timezone"):
        pgp.generate_account_key(ADDR, datetime(2024, 5, 1, 12, 0, 0))


@pytest.mark.parametrize(
    "address", ["", "alice", "Alice <alice@example.org>", "a@b; keydata=x", "a b@c", "a@b\r\nX: y"]
)
def test_generation_refuses_what_is_not_a_bare_address(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        pgp.generate_account_key(address, NOW)


def test_two_generations_differ() -> None:
    a = pgp.generate_account_key(ADDR, NOW)
    b = pgp.generate_account_key(ADDR, NOW)
    assert a.fingerprint != b.fingerprint


# ---------------------------------------------------------------------------------------------
# Round trips and keydata


def test_secret_round_trip(key: pgp.AccountKey) -> None:
    loaded = pgp.load_secret(key.secret_armored)
    assert loaded.fingerprint == key.fingerprint
    assert loaded == key  # already minimal, so normalising again changes nothing
    assert pgp.load_secret(key.secret_armored, address=ADDR.upper()) == key
    assert pgp.load_public(key.public_armored) == key.public()
    assert pgp.fingerprint_of(key.public_armored) == key.fingerprint


def test_message_encrypted_to_the_public_key_decrypts_with_the_loaded_secret(
    key: pgp.AccountKey,
) -> None:
    pgpy = _pgpy()
    public = _parse(key.public_armored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encrypted = str(public.encrypt(pgpy.PGPMessage.new("hello, other device")))
    loaded = _parse(pgp.load_secret(key.secret_armored).secret_armored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decrypted = loaded.decrypt(pgpy.PGPMessage.from_blob(encrypted))
    assert decrypted.message == "hello, other device"
    # and it went to the Cv25519 subkey, not the primary
    assert set(pgpy.PGPMessage.from_blob(encrypted).encrypters) == set(loaded.subkeys)


def test_keydata_is_the_minimal_transferable_public_key(key: pgp.AccountKey) -> None:
    data = key.keydata()
    assert [p.tag for p in pgp._packets(data)] == [6, 13, 2, 14, 2]
    assert b"\x00" not in data[:1]
    k = _parse(data)
    assert k.is_public
    assert k.fingerprint.replace(" ", "") == key.fingerprint
    assert [u.userid for u in k.userids] == [f"<{ADDR}>"]
    assert len(list(k.userids[0].__sig__)) == 1
    assert len(k.subkeys) == 1
    assert len(list(next(iter(k.subkeys.values())).__sig__)) == 1
    assert pgp.fingerprint_of(key.public_armored) == key.fingerprint
    primary_body = pgp._packets(data)[0].body
    framed = b"\x99" + len(primary_body).to_bytes(2, "big") + primary_body
    assert hashlib.sha1(framed).hexdigest().upper() == key.fingerprint
    assert len(data) < 1000  # far below Autocrypt's 10 KiB header limit


def test_load_cuts_extra_material_away() -> None:
    """A second subkey and a third-party certification are accepted but not passed on."""
    pgpy = _pgpy()
    c = pgpy.constants
    k = _build()
    other = _build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = pgpy.PGPKey.new(c.PubKeyAlgorithm.EdDSA, c.EllipticCurveOID.Ed25519, created=NOW)
        k.add_subkey(extra, usage={c.KeyFlags.Authentication}, hash=c.HashAlgorithm.SHA256)
        k.userids[0] |= other.certify(k.userids[0])
        armored = str(k)
    block = "PRIVATE KEY BLOCK"
    assert [p.tag for p in pgp._packets(pgp._dearmor(armored, block))] == [5, 13, 2, 2, 7, 2, 7, 2]
    loaded = pgp.load_secret(armored)
    secret_tags = [p.tag for p in pgp._packets(pgp._dearmor(loaded.secret_armored, block))]
    assert secret_tags == [5, 13, 2, 7, 2]
    assert [p.tag for p in pgp._packets(loaded.keydata())] == [6, 13, 2, 14, 2]
    assert loaded.fingerprint == str(k.fingerprint).replace(" ", "")
    (kept,) = _parse(loaded.public_armored).subkeys.values()
    assert kept.key_algorithm == c.PubKeyAlgorithm.ECDH
    assert pgp.load_secret(loaded.secret_armored) == loaded


# ---------------------------------------------------------------------------------------------
# The Autocrypt header


def test_autocrypt_header_value(key: pgp.AccountKey) -> None:
    value = key.autocrypt_header_value(ADDR, prefer_encrypt=True)
    m = re.fullmatch(r"addr=([^;]+); prefer-encrypt=mutual; keydata=([A-Za-z0-9+/=]+)", value)
    assert m is not None, value
    assert m.group(1) == ADDR
    assert base64.b64decode(m.group(2), validate=True) == key.keydata()

    plain = key.autocrypt_header_value(ADDR, prefer_encrypt=False)
    assert plain == f"addr={ADDR}; keydata={m.group(2)}"
    assert "\n" not in plain
    assert "\r" not in plain
    # the address is compared case-insensitively with the user id and written as given
    assert key.autocrypt_header_value("Alice@Example.ORG", False).startswith(
        "addr=Alice@Example.ORG;"
    )


@pytest.mark.parametrize("address", ["bob@example.org", "alice@example.org; keydata=AAAA", ""])
def test_autocrypt_header_refuses_other_addresses(key: pgp.AccountKey, address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        key.autocrypt_header_value(address, prefer_encrypt=True)


# ---------------------------------------------------------------------------------------------
# What load_secret / load_public refuse


def test_rejects_oversized_input(key: pgp.AccountKey) -> None:
    with pytest.raises(BadAccountKey, match="larger than"):
        pgp.load_secret(key.secret_armored, max_bytes=len(key.secret_armored) - 1)
    padded = key.secret_armored + "\n" * (64 * 1024)
    with pytest.raises(BadAccountKey, match="larger than"):
        pgp.load_secret(padded)
    assert pgp.load_secret(key.secret_armored, max_bytes=len(key.secret_armored)) == key


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "\x00\x01\x02",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nnot base64!\n-----END PGP PRIVATE KEY BLOCK-----\n",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----\n",
        "-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxVgEZjIu\n",
        "schlüssel",
    ],
)
def test_rejects_garbage(garbage: str) -> None:
    with pytest.raises(BadAccountKey):
        pgp.load_secret(garbage)
    with pytest.raises(BadAccountKey):
        pgp.load_public(garbage)


def test_rejects_non_strings() -> None:
    with pytest.raises(BadAccountKey):
        pgp.load_secret(b"bytes")  # type: ignore[arg-type]


def test_rejects_bad_armor_checksum(key: pgp.AccountKey) -> None:
    lines = key.secret_armored.splitlines()
    crc_line = next(i for i, line in enumerate(lines) if line.startswith("="))
    lines[crc_line] = "=AAAA" if lines[crc_line] != "=AAAA" else "=AAAB"
    with pytest.raises(BadAccountKey, match="checksum"):
        pgp.load_secret("\n".join(lines))


def test_accepts_armor_headers_crlf_and_no_checksum(key: pgp.AccountKey) -> None:
    lines = [line for line in key.secret_armored.splitlines() if not line.startswith("=")]
    lines.insert(1, "Comment: exported elsewhere")
    assert pgp.load_secret("\r\n".join(lines) + "\r\n") == key


def test_rejects_two_keys_in_one_block(key: pgp.AccountKey) -> None:
    other = pgp.generate_account_key(ADDR, NOW)
    data = pgp._dearmor(key.secret_armored, "PRIVATE KEY BLOCK") + pgp._dearmor(
        other.secret_armored, "PRIVATE KEY BLOCK"
    )
    with pytest.raises(BadAccountKey):
        pgp.load_secret(pgp._armor(data, "PRIVATE KEY BLOCK"))
    with pytest.raises(BadAccountKey, match="armored block"):
        pgp.load_secret(key.secret_armored + other.secret_armored)


def test_public_and_secret_are_not_interchangeable(key: pgp.AccountKey) -> None:
    with pytest.raises(BadAccountKey, match="got 'PUBLIC KEY BLOCK'"):
        pgp.load_secret(key.public_armored)
    with pytest.raises(BadAccountKey, match="got 'PRIVATE KEY BLOCK'"):
        pgp.load_public(key.secret_armored)
    # a public key re-labelled as secret: the packets still say public
    relabelled = key.public_armored.replace("PUBLIC KEY BLOCK", "PRIVATE KEY BLOCK")
    with pytest.raises(BadAccountKey, match="packet"):
        pgp.load_secret(relabelled)
    relabelled = key.secret_armored.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK")
    with pytest.raises(BadAccountKey, match="packet"):
        pgp.load_public(relabelled)


def test_rejects_rsa_key() -> None:
    pgpy = _pgpy()
    c = pgpy.constants
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = pgpy.PGPKey.new(c.PubKeyAlgorithm.RSAEncryptOrSign, 1024, created=NOW)
        k.add_uid(
            pgpy.PGPUID.new(f"<{ADDR}>"),
            usage={c.KeyFlags.Certify, c.KeyFlags.Sign},
            hash=c.HashAlgorithm.SHA256,
        )
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519)
        k.add_subkey(sub, usage={c.KeyFlags.EncryptCommunications})
        armored, public = str(k), str(k.pubkey)
    with pytest.raises(BadAccountKey, match="not Ed25519"):
        pgp.load_secret(armored)
    with pytest.raises(BadAccountKey, match="not Ed25519"):
        pgp.load_public(public)


def test_rejects_two_user_ids() -> None:
    k = _build(uids=2)
    with pytest.raises(BadAccountKey, match="user id"):
        pgp.load_secret(str(k))
    with pytest.raises(BadAccountKey, match="user id"):
        pgp.load_public(str(k.pubkey))


def test_rejects_unexpected_address() -> None:
    with pytest.raises(BadAccountKey, match="expected address"):
        pgp.load_secret(str(_build()), address="mallory@example.org")


def test_rejects_missing_encryption_subkey() -> None:
    k = _build(subkey=False)
    with pytest.raises(BadAccountKey, match="subkey"):
        pgp.load_secret(str(k))


def test_rejects_a_subkey_that_is_not_cv25519() -> None:
    pgpy = _pgpy()
    c = pgpy.constants
    k = _build(subkey=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.NIST_P256)
        k.add_subkey(sub, usage={c.KeyFlags.EncryptCommunications}, hash=c.HashAlgorithm.SHA256)
    with pytest.raises(BadAccountKey, match="Cv25519"):
        pgp.load_secret(str(k))


def test_rejects_a_subkey_not_flagged_for_encryption() -> None:
    pgpy = _pgpy()
    c = pgpy.constants
    k = _build(subkey=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519)
        k.add_subkey(sub, usage={c.KeyFlags.Authentication}, hash=c.HashAlgorithm.SHA256)
    with pytest.raises(BadAccountKey, match="binding"):
        pgp.load_secret(str(k))


def _tamper_last_signature(armored: str, block: str) -> str:
    """Flip the last byte of the last signature packet (the subkey binding) and re-armor."""
    data = pgp._dearmor(armored, block)
    packets = pgp._packets(data)
    assert packets[-1].tag == 2
    body = bytearray(packets[-1].body)
    body[-1] ^= 0x01
    out = b"".join(p.raw for p in packets[:-1]) + _packet(2, bytes(body))
    return pgp._armor(out, block)


def test_rejects_tampered_subkey_binding(key: pgp.AccountKey) -> None:
    tampered = _tamper_last_signature(key.secret_armored, "PRIVATE KEY BLOCK")
    # pgpy alone takes it without complaint: the check is ours
    k = _parse(tampered)
    assert len(k.subkeys) == 1
    with pytest.raises(BadAccountKey, match="valid binding"):
        pgp.load_secret(tampered)
    tampered_public = _tamper_last_signature(key.public_armored, "PUBLIC KEY BLOCK")
    with pytest.raises(BadAccountKey, match="valid binding"):
        pgp.load_public(tampered_public)


def test_rejects_tampered_user_id(key: pgp.AccountKey) -> None:
    data = pgp._dearmor(key.public_armored, "PUBLIC KEY BLOCK")
    packets = pgp._packets(data)
    forged = [p.raw if p.tag != 13 else _packet(13, b"<mallory@example.org>") for p in packets]
    with pytest.raises(BadAccountKey, match="self-signature"):
        pgp.load_public(pgp._armor(b"".join(forged), "PUBLIC KEY BLOCK"))


def test_rejects_passphrase_protected_key() -> None:
    pgpy = _pgpy()
    c = pgpy.constants
    k = _build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k.protect("correct horse", c.SymmetricKeyAlgorithm.AES256, c.HashAlgorithm.SHA256)
    assert k.is_protected
    with pytest.raises(BadAccountKey, match="passphrase"):
        pgp.load_secret(str(k))


def test_rejects_expired_key() -> None:
    k = _build(key_expiration=timedelta(days=1))
    with pytest.raises(BadAccountKey, match="expired"):
        pgp.load_secret(str(k))


def test_rejects_revoked_subkey() -> None:
    k = _build()
    sub = next(iter(k.subkeys.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub |= k.revoke(sub)
    with pytest.raises(BadAccountKey, match="valid binding"):
        pgp.load_secret(str(k))


def test_rejects_revoked_key() -> None:
    k = _build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k |= k.revoke(k)
    with pytest.raises(BadAccountKey, match="revocation"):
        pgp.load_secret(str(k))


def test_rejects_compressed_packet_before_pgpy_sees_it(key: pgp.AccountKey) -> None:
    data = pgp._dearmor(key.secret_armored, "PRIVATE KEY BLOCK")
    # a compressed data packet (tag 8, algorithm ZLIB) after the key: never inflated
    bomb = _packet(8, b"\x02" + b"\x78\x9c" + b"\x00" * 100)
    with pytest.raises(BadAccountKey, match="tag 8"):
        pgp.load_secret(pgp._armor(data + bomb, "PRIVATE KEY BLOCK"))


def _desync_bomb(key: pgp.AccountKey, inflated_size: int) -> str:
    """A public key whose packets all look fine one by one, but whose first signature ends in a
    hashed subpacket claiming more bytes than its packet holds: a stream parser that trusts it
    reads on into the next packet and resynchronises on a compressed packet hidden in its body."""
    primary, uid, _, sub, binding = pgp._packets(key.keydata())
    compressed = _packet(8, b"\x02" + zlib.compress(b"\x00" * inflated_size, 9))
    created = bytes([5, 2]) + (1714564800).to_bytes(4, "big")
    after_hashed_area = b"\x00" * 8  # what the packet really holds after its hashed area
    x_prefix = b"\x04\x00\x00\x00\x00"  # the next "signature" packet: version 4, then filler
    # where the over-reading parser thinks the lying signature ends: no unhashed subpackets,
    # two hash octets, and two one-byte MPIs
    sig_tail = b"\x00\x00" + b"\xab\xcd" + b"\x00\x08\x01" + b"\x00\x08\x01"
    x = _packet(2, x_prefix + sig_tail + compressed)
    x_header = len(x) - len(x_prefix + sig_tail + compressed)
    claimed = 1 + len(after_hashed_area) + x_header + len(x_prefix)  # type octet + data
    hashed = created + b"\xff" + claimed.to_bytes(4, "big") + bytes([100])
    lying = _packet(
        2, bytes([4, 0x13, 22, 8]) + len(hashed).to_bytes(2, "big") + hashed + after_hashed_area
    )
    data = primary.raw + uid.raw + lying + x + sub.raw + binding.raw
    return pgp._armor(data, "PUBLIC KEY BLOCK")


def test_a_compressed_packet_hidden_from_the_packet_walk_is_never_inflated(
    key: pgp.AccountKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    algorithm = _pgpy().constants.CompressionAlgorithm
    inflated: list[int] = []
    decompress = algorithm.decompress

    def spy(self: Any, data: bytes) -> bytes:
        out: bytes = decompress(self, data)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(algorithm, "decompress", spy)
    size = 64 * 1024
    armored = _desync_bomb(key, size)
    assert 8 not in [p.tag for p in pgp._packets(pgp._dearmor(armored, "PUBLIC KEY BLOCK"))]
    # pgpy's own stream parser falls for it (a bigger payload would exhaust memory) ...
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        _pgpy().PGPKey.from_blob(armored)
    assert size in inflated
    inflated.clear()
    # ... the adapter, which hands pgpy one packet at a time, does not
    with pytest.raises(BadAccountKey, match="malformed packet"):
        pgp.load_public(armored)
    assert inflated == []


def test_rejects_secret_that_does_not_match_the_public_part(key: pgp.AccountKey) -> None:
    """Subkey secret scalar swapped for another key's: every signature still verifies."""
    other = pgp.generate_account_key(ADDR, NOW)

    def parts(k: pgp.AccountKey) -> tuple[list[Any], Any, int]:
        secret = pgp._packets(pgp._dearmor(k.secret_armored, "PRIVATE KEY BLOCK"))
        public_sub = pgp._packets(k.keydata())[3]
        return secret, secret[3], len(public_sub.body)

    packets, sub, publen = parts(key)
    _, other_sub, other_publen = parts(other)
    body = sub.body[:publen] + other_sub.body[other_publen:]
    mixed = [p.raw for p in packets]
    mixed[3] = _packet(7, body)
    with pytest.raises(BadAccountKey, match="does not work"):
        pgp.load_secret(pgp._armor(b"".join(mixed), "PRIVATE KEY BLOCK"))


@given(data=st.data())
def test_any_corruption_is_accepted_unchanged_or_rejected_cleanly(
    key: pgp.AccountKey, data: st.DataObject
) -> None:
    armored = key.secret_armored
    raw = bytearray(pgp._dearmor(armored, "PRIVATE KEY BLOCK"))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        loaded = pgp.load_secret(pgp._armor(bytes(raw), "PRIVATE KEY BLOCK"))
    except BadAccountKey:
        return
    assert loaded.fingerprint == key.fingerprint
    assert pgp.load_secret(loaded.secret_armored) == loaded


@given(st.binary(max_size=2000))
def test_random_packets_are_rejected_cleanly(blob: bytes) -> None:
    for block, load in (
        ("PRIVATE KEY BLOCK", pgp.load_secret),
        ("PUBLIC KEY BLOCK", pgp.load_public),
    ):
        with pytest.raises(BadAccountKey):
            load(pgp._armor(blob, block) if blob else "")


# ---------------------------------------------------------------------------------------------
# Nothing on stdout (the native-messaging channel)


def test_nothing_printed_while_generating_and_loading(capfd: pytest.CaptureFixture[str]) -> None:
    k = pgp.generate_account_key(ADDR, NOW)
    pgp.load_secret(k.secret_armored)
    pgp.load_public(k.public_armored)
    with pytest.raises(BadAccountKey):
        pgp.load_secret(str(_build(uids=2)))
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_nothing_printed_on_first_import_even_with_all_warnings_shown() -> None:
    code = (
        "from native_host.adapters import pgp\n"
        "k = pgp.generate_account_key('alice@example.org', 1714564800)\n"
        "pgp.load_secret(k.secret_armored)\n"
        "pgp.load_public(k.public_armored)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""


def test_pgpy_is_imported_lazily() -> None:
    code = "import sys\nfrom native_host.adapters import pgp\nprint('pgpy' in sys.modules)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Interoperability with GnuPG (installed by scripts/test)


@pytest.fixture
def gnupg() -> Iterator[tuple[str, dict[str, str]]]:
    gpg = shutil.which("gpg")
    if gpg is None:  # a real part of the suite: fail clearly, never skip
        raise AssertionError("gpg is missing: apt-get install gnupg (scripts/test installs it)")
    home = tempfile.mkdtemp(prefix="gh", dir="/tmp")  # short: the agent's socket lives here
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": home}
    try:
        yield gpg, env
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            subprocess.run(
                [gpgconf, "--homedir", home, "--kill", "gpg-agent"],
                env=env,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(home, ignore_errors=True)


def test_gnupg_reads_our_keydata(
    key: pgp.AccountKey, gnupg: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    gpg, env = gnupg
    path = tmp_path / "keydata.pgp"
    path.write_bytes(key.keydata())
    proc = subprocess.run(
        [gpg, "--batch", "--with-colons", "--show-keys", str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split(":") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == ["pub", "fpr", "uid", "sub", "fpr"]
    assert rows[0][1] != "i"  # gpg finds the self-signature valid
    assert rows[3][1] != "i"  # and the binding
    assert rows[0][16] == "ed25519"
    assert rows[1][9] == key.fingerprint
    assert rows[2][9] == f"<{ADDR}>"
    assert rows[3][16] == "cv25519"
    assert rows[3][11] == "e"


def test_we_load_a_gnupg_made_key(gnupg: tuple[str, dict[str, str]]) -> None:
    gpg, env = gnupg
    base = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]

    def run(*args: str) -> str:
        return subprocess.run(
            [*base, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    run("--quick-gen-key", "<bob@example.org>", "ed25519", "cert,sign", "never")
    fpr = next(
        line.split(":")[9]
        for line in run("--with-colons", "--list-keys").splitlines()
        if line.startswith("fpr:")
    )
    run("--quick-add-key", fpr, "cv25519", "encr", "never")
    loaded = pgp.load_secret(run("--armor", "--export-secret-keys", fpr), address="bob@example.org")
    assert loaded.fingerprint == fpr
    assert pgp.load_public(run("--armor", "--export", fpr)) == loaded.public()
