"""The one OpenPGP packet this project writes itself: a v4 user id self-signature whose key flags
let the Ed25519 primary key sign as well as certify.

Why it exists: Delta Chat (2.65) shows mail as encrypted only when its signature verifies with the
sender's PRIMARY key (tests/interop/README.md, condition 3), and Thunderbird's RNP signs with the
primary only when no signing subkey is there. So the account key must be what Thunderbird, GnuPG
and Delta Chat make themselves: primary `CS` plus a Cv25519 encryption subkey. pysequoia 0.1.35
cannot make that: `Tsk.generate` hard-codes a certification-only primary plus a signing subkey
(`CertBuilder::set_primary_key_flags(certification)`), its packet API only reads packets, and
the signatures it can make (`add_user_id`, `set_expiration`, `set_notations`) carry no key flags
of our choosing. The alternatives were worse: `johnnycanencrypt` (which has `can_primary_sign`)
has no macOS arm64 or Linux aarch64 wheels and links the system libpcsclite; GnuPG is a Debian
package, absent on most macOS and Windows machines; `sq` 0.27 makes only signing subkeys.

So the key material and every other packet still come from Sequoia (`Tsk.generate`), and this
module signs one certification over Sequoia's own primary key and user id packets with
`cryptography`'s Ed25519. Nothing here parses untrusted input: its only input is the packets
Sequoia generated a moment before, and its output is checked by Sequoia before anyone sees it
(`pgp._account_key`: the self-signature must verify under Sequoia's standard policy, the primary
must be found signing-capable, and a sign/verify plus an encrypt/decrypt probe must pass).
"""

from __future__ import annotations

import hashlib
import struct

# RFC 9580 section 9.2 (legacy EdDSA, the form v4 keys use everywhere Autocrypt peers read them)
_ED25519_LEGACY_OID = bytes.fromhex("2b06010401da470f01")
_ALGO_EDDSA_LEGACY = 22
_HASH_SHA512 = 10
_POSITIVE_CERTIFICATION = 0x13

# Key flags 0x01 certify, 0x02 sign (RFC 9580 5.2.3.29).
FLAGS_CERTIFY_SIGN = 0x03
# Features 0x01: SEIPD v1 only. Thunderbird 153's RNP (librnp 0.18.1 as Mozilla builds it)
# answers "Bad format" to SEIPD v2, and Sequoia and Delta Chat send v2 to any key whose Features
# carry 0x08: a key advertising it would get mail Thunderbird cannot open.
FEATURES_SEIPD_V1 = 0x01
# Preferences as Sequoia and Delta Chat state them (AES-256, AES-128; SHA-512, SHA-256), and
# no compression: what we decrypt is bounded anyway, but uncompressed input is never a bomb.
_PREFERRED_SYMMETRIC = bytes([9, 7])
_PREFERRED_HASH = bytes([10, 8])
_PREFERRED_COMPRESSION = bytes([0])


class SelfSignatureError(ValueError):
    """The primary key packet is not the unprotected v4 Ed25519 secret key we generated."""


def certify_sign_binding(
    secret_primary_body: bytes, user_id: bytes, created: int, *, features: int = FEATURES_SEIPD_V1
) -> bytes:
    """A whole signature packet (header included): the primary's positive certification of
    `user_id`, made at `created` (UTC seconds), with key flags certify+sign and `features`."""
    public_body, seed = _split_secret_ed25519(secret_primary_body)
    fingerprint = hashlib.sha1(_framed_key(public_body), usedforsecurity=False).digest()
    hashed = b"".join(
        (
            _subpacket(2, struct.pack(">I", created)),  # signature creation time
            _subpacket(27, bytes([FLAGS_CERTIFY_SIGN])),
            _subpacket(11, _PREFERRED_SYMMETRIC),
            _subpacket(21, _PREFERRED_HASH),
            _subpacket(22, _PREFERRED_COMPRESSION),
            _subpacket(30, bytes([features])),
            _subpacket(25, b"\x01"),  # primary user id
            _subpacket(33, b"\x04" + fingerprint),  # issuer fingerprint
        )
    )
    unhashed = _subpacket(16, fingerprint[-8:])  # issuer key id
    head = bytes([4, _POSITIVE_CERTIFICATION, _ALGO_EDDSA_LEGACY, _HASH_SHA512])
    head += struct.pack(">H", len(hashed)) + hashed
    digest = hashlib.sha512(
        _framed_key(public_body)
        + b"\xb4"
        + struct.pack(">I", len(user_id))
        + user_id
        + head
        + b"\x04\xff"
        + struct.pack(">I", len(head))
    ).digest()

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # Legacy EdDSA signs the hash digest itself as the message (RFC 9580 5.2.4).
    raw = Ed25519PrivateKey.from_private_bytes(seed).sign(digest)
    body = (
        head
        + struct.pack(">H", len(unhashed))
        + unhashed
        + digest[:2]
        + _mpi(raw[:32])
        + _mpi(raw[32:])
    )
    return _packet(2, body)


def _split_secret_ed25519(body: bytes) -> tuple[bytes, bytes]:
    """(public key body, 32-byte Ed25519 seed) of an unprotected v4 legacy-EdDSA secret key."""
    if len(body) < 8 or body[0] != 4 or body[5] != _ALGO_EDDSA_LEGACY:
        raise SelfSignatureError("not a v4 EdDSA primary key")
    oid_end = 7 + body[6]
    if body[7:oid_end] != _ED25519_LEGACY_OID:
        raise SelfSignatureError("not an Ed25519 key")
    point, public_end = _read_mpi(body, oid_end)
    if len(point) != 33 or point[0] != 0x40:
        raise SelfSignatureError("not a native Ed25519 point")
    if public_end >= len(body) or body[public_end] != 0:
        raise SelfSignatureError("the secret key is protected")
    secret, end = _read_mpi(body, public_end + 1)
    if end + 2 != len(body) or len(secret) > 32:
        raise SelfSignatureError("malformed secret key material")
    checksum = struct.unpack(">H", body[end:])[0]
    if checksum != sum(body[public_end + 1 : end]) & 0xFFFF:
        raise SelfSignatureError("secret key checksum mismatch")
    return body[:public_end], secret.rjust(32, b"\x00")


def _read_mpi(data: bytes, at: int) -> tuple[bytes, int]:
    if at + 2 > len(data):
        raise SelfSignatureError("truncated key")
    bits = struct.unpack(">H", data[at : at + 2])[0]
    end = at + 2 + (bits + 7) // 8
    if end > len(data):
        raise SelfSignatureError("truncated key")
    return data[at + 2 : end], end


def _mpi(value: bytes) -> bytes:
    stripped = value.lstrip(b"\x00")
    bits = (len(stripped) - 1) * 8 + stripped[0].bit_length() if stripped else 0
    return struct.pack(">H", bits) + stripped


def _framed_key(public_body: bytes) -> bytes:
    """A v4 key as hashed for fingerprints and signatures: 0x99, two-octet length, body."""
    return b"\x99" + struct.pack(">H", len(public_body)) + public_body


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data  # every subpacket here is shorter than 191


def _packet(tag: int, body: bytes) -> bytes:
    """An OpenPGP packet in the current format (RFC 9580 4.2.1)."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        n -= 192
        length = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        length = b"\xff" + struct.pack(">I", n)
    return bytes([0xC0 | tag]) + length + body
