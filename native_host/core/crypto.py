"""The device-to-device cryptography: small, fixed primitives from `cryptography`, no OpenPGP.

Why not OpenPGP between devices: the messages are ours on both ends, so a fixed construction
(Ed25519 signatures, X25519 + HKDF-SHA256 + ChaCha20-Poly1305) is smaller to verify, has no
compression (an OpenPGP message may inflate without bound), no algorithm negotiation and no unchecked
revocation or self-signature logic. OpenPGP is used only where the outside world needs it: the
account's Autocrypt key.

Deterministic given the injected randomness: every key and nonce comes from `random`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from native_host.errors import RemoteProtocolError
from native_host.ports import RandomBytes

KEY_BYTES = 32
NONCE_BYTES = 12
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, size: int | None = None) -> bytes:
    """Strict base64 from untrusted input, optionally of an exact decoded size."""
    if not isinstance(text, str):
        raise RemoteProtocolError("expected base64 text")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise RemoteProtocolError("invalid base64") from None
    if size is not None and len(data) != size:
        raise RemoteProtocolError(f"expected {size} bytes, got {len(data)}")
    return data


def canonical(value: Any) -> bytes:
    """The bytes that get signed and hashed: sorted keys, no spaces, UTF-8 (our documents hold
    no floats, so this is deterministic)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hkdf(secret: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True)
class DeviceKeys:
    """A device's own key pair: Ed25519 to sign, X25519 to receive. Private parts live in the keyring."""

    sign_private: bytes
    enc_private: bytes

    @classmethod
    def generate(cls, random: RandomBytes) -> DeviceKeys:
        return cls(random(KEY_BYTES), random(KEY_BYTES))

    @property
    def public(self) -> DevicePublic:
        sign = (
            Ed25519PrivateKey.from_private_bytes(self.sign_private)
            .public_key()
            .public_bytes(_RAW, _RAW_PUB)
        )
        enc = (
            X25519PrivateKey.from_private_bytes(self.enc_private)
            .public_key()
            .public_bytes(_RAW, _RAW_PUB)
        )
        return DevicePublic(sign, enc)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.sign_private).sign(message)

    def to_secret(self) -> str:
        return b64(self.sign_private + self.enc_private)

    @classmethod
    def from_secret(cls, text: str) -> DeviceKeys:
        raw = base64.b64decode(text)
        return cls(raw[:KEY_BYTES], raw[KEY_BYTES:])


@dataclass(frozen=True)
class DevicePublic:
    sign: bytes
    enc: bytes

    def to_json(self) -> dict[str, str]:
        return {"sign": b64(self.sign), "enc": b64(self.enc)}

    @classmethod
    def from_json(cls, data: Any) -> DevicePublic:
        if not isinstance(data, dict):
            raise RemoteProtocolError("device keys must be an object")
        return cls(unb64(data.get("sign"), KEY_BYTES), unb64(data.get("enc"), KEY_BYTES))

    @property
    def fingerprint(self) -> str:
        return digest(self.sign + self.enc)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.sign).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_document(document: dict[str, Any], keys: DeviceKeys) -> dict[str, Any]:
    """`document` plus a `sig` member over the canonical bytes of everything else."""
    body = {k: v for k, v in document.items() if k != "sig"}
    return {**body, "sig": b64(keys.sign(canonical(body)))}


def verify_document(document: dict[str, Any], signer: DevicePublic) -> bool:
    try:
        signature = unb64(document.get("sig"), 64)
    except RemoteProtocolError:
        return False
    body = {k: v for k, v in document.items() if k != "sig"}
    return signer.verify(canonical(body), signature)


def seal(plaintext: bytes, key: bytes, associated: bytes, random: RandomBytes) -> str:
    nonce = random(NONCE_BYTES)
    return b64(nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated))


def open_sealed(sealed: Any, key: bytes, associated: bytes) -> bytes:
    data = unb64(sealed)
    if len(data) < NONCE_BYTES + 16:
        raise RemoteProtocolError("ciphertext too short")
    try:
        return ChaCha20Poly1305(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], associated)
    except InvalidTag:
        raise RemoteProtocolError("ciphertext does not authenticate") from None


def encrypt_to(
    recipient: DevicePublic, plaintext: bytes, associated: bytes, random: RandomBytes
) -> dict[str, str]:
    """Ephemeral-static X25519 to the recipient's device key (HPKE-like); only it can open this."""
    ephemeral = X25519PrivateKey.from_private_bytes(random(KEY_BYTES))
    ephemeral_pub = ephemeral.public_key().public_bytes(_RAW, _RAW_PUB)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.enc))
    key = hkdf(shared, salt=ephemeral_pub + recipient.enc, info=b"autocrypt-sma v1 device message")
    return {"epk": b64(ephemeral_pub), "ct": seal(plaintext, key, associated, random)}


def decrypt_from(keys: DeviceKeys, box: Any, associated: bytes) -> bytes:
    if not isinstance(box, dict):
        raise RemoteProtocolError("encrypted part must be an object")
    ephemeral_pub = unb64(box.get("epk"), KEY_BYTES)
    me = X25519PrivateKey.from_private_bytes(keys.enc_private)
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
    except ValueError:
        raise RemoteProtocolError("bad ephemeral key") from None
    key = hkdf(
        shared, salt=ephemeral_pub + keys.public.enc, info=b"autocrypt-sma v1 device message"
    )
    return open_sealed(box.get("ct"), key, associated)


def x25519_pair(random: RandomBytes) -> tuple[bytes, bytes]:
    """(private, public) raw bytes of an ephemeral key."""
    private = X25519PrivateKey.from_private_bytes(random(KEY_BYTES))
    return private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC), private.public_key().public_bytes(
        _RAW, _RAW_PUB
    )


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError:
        raise RemoteProtocolError("bad ephemeral key") from None
