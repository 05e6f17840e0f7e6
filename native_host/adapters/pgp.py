"""The account's OpenPGP key: generate it, check keys received from elsewhere, derive keydata.

The only module that imports pgpy. pgpy is imported lazily (it costs ~100 ms and prints
DeprecationWarnings); every use of it runs under `_pgpy()`, which holds a lock (pgpy is not known
to be thread-safe, and `warnings.catch_warnings` changes process-wide state) and routes warnings
to this module's logger, never to stdout (stdout is the native-messaging channel).

pgpy parses far more than it checks: it verifies no self-signature, revocation or usage flag on
its own, and it would inflate a compressed packet without limit. So input is first handled here,
without pgpy: size bound, strict ASCII armor with CRC check, a walk over the packet stream that
allows only the packets a transferable key may contain (no compressed data, no user attributes,
no partial lengths, version 4 only). pgpy then parses each of those packets on its own, never
the stream (its parsers trust inner length fields and can be led past a packet's end into bytes
that were never checked, see `_parse`). The user id self-signature and the subkey binding
signature are verified explicitly with `key.verify`, and the values that matter (signature type,
key flags, key expiry) are read from the hashed subpacket area ourselves, so nothing an attacker
can add unsigned is believed.

Every key leaving this module is in minimal form: primary key, one user id, its self-signature,
one Cv25519 encryption subkey and its binding signature (Autocrypt Level 1 keydata); nothing
else that the input carried (third-party certifications, other subkeys, older self-signatures)
is passed on.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import math
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 64 * 1024

PUBLIC_BLOCK = "PUBLIC KEY BLOCK"
SECRET_BLOCK = "PRIVATE KEY BLOCK"  # noqa: S105 - an armor label, not a password

# OpenPGP packet tags (RFC 4880 section 4.3)
TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_TRUST = 12
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14

# signature types
SIG_CERTIFICATIONS = frozenset({0x10, 0x11, 0x12, 0x13})
SIG_SUBKEY_BINDING = 0x18
SIG_KEY_REVOCATION = 0x20
SIG_SUBKEY_REVOCATION = 0x28
SIG_CERT_REVOCATION = 0x30

# public-key algorithms
ALG_ECDH = 18
ALG_EDDSA = 22

# hash algorithms accepted on self-signatures and bindings: SHA-256, SHA-384, SHA-512, SHA-224
STRONG_HASHES = frozenset({8, 9, 10, 11})

# key flags (first octet of the Key Flags subpacket)
FLAG_CERTIFY = 0x01
FLAG_SIGN = 0x02
FLAG_ENCRYPT_COMMS = 0x04
FLAG_ENCRYPT_STORAGE = 0x08

# signature subpacket types read from the hashed area
SUB_CREATION_TIME = 2
SUB_SIG_EXPIRATION = 3
SUB_KEY_EXPIRATION = 9
SUB_KEY_FLAGS = 27
# subpackets whose meaning we understand well enough to accept them when marked critical
_KNOWN_CRITICAL = frozenset({2, 3, 9, 11, 16, 21, 22, 23, 25, 27, 30, 33, 34})

_FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}")
_ADDRESS_FORBIDDEN = frozenset('<>;,"()[]\\')
_ARMOR_HEADER_RE = re.compile(r"[!-9;-~]+: .*")
_PROBE = b"autocrypt-sma key probe"
_SENTINEL = b"\x00" * 16

_PGPY_LOCK = threading.Lock()


class BadAccountKey(ValueError):
    """A key offered as the account key failed a check; the message says which one."""


# ---------------------------------------------------------------------------------------------
# The keys handed out


@dataclass(frozen=True)
class PublicAccountKey:
    """The public half of an account key, in minimal form (see `load_public`)."""

    fingerprint: str  # 40 upper-case hex digits, the full v4 fingerprint of the primary key
    public_armored: str  # ASCII-armored minimal transferable public key

    def keydata(self) -> bytes:
        """The binary minimal transferable public key: Autocrypt's keydata."""
        data = _dearmor(self.public_armored, PUBLIC_BLOCK)
        tags = [p.tag for p in _packets(data)]
        if tags != [TAG_PUBLIC_KEY, TAG_USER_ID, TAG_SIGNATURE, TAG_PUBLIC_SUBKEY, TAG_SIGNATURE]:
            raise BadAccountKey("public_armored is not a minimal Autocrypt key")
        return data

    @property
    def user_id(self) -> str:
        """The key's only user id, e.g. `<alice@example.org>`."""
        data = _dearmor(self.public_armored, PUBLIC_BLOCK)
        uid = next(p for p in _packets(data) if p.tag == TAG_USER_ID)
        return uid.body.decode("utf-8", "replace")

    def autocrypt_header_value(self, address: str, prefer_encrypt: bool) -> str:
        """The value of the `Autocrypt:` header (Autocrypt Level 1), unfolded.

        `address` must be the key's user id address (compared case-insensitively); it is checked
        so that nothing can be injected into the header through it.
        """
        addr = _check_address(address)
        if addr.casefold() != _uid_address(self.user_id).casefold():
            raise ValueError("the address is not the key's user id")
        keydata = base64.b64encode(self.keydata()).decode("ascii")
        mutual = "prefer-encrypt=mutual; " if prefer_encrypt else ""
        return f"addr={addr}; {mutual}keydata={keydata}"


@dataclass(frozen=True)
class AccountKey(PublicAccountKey):
    """The account's key pair. The secret is unprotected: it lives in the OS keyring."""

    secret_armored: str = field(repr=False)  # ASCII-armored minimal transferable secret key

    def public(self) -> PublicAccountKey:
        return PublicAccountKey(self.fingerprint, self.public_armored)


# ---------------------------------------------------------------------------------------------
# Entry points


def generate_account_key(address: str, now: datetime | float) -> AccountKey:
    """A new Autocrypt Level 1 key for `address`, created at `now`.

    Ed25519 primary (sign, certify) with the single user id `<address>`, self-signed with SHA-256
    and preferences SHA-256/384/512, AES-256/128, no compression; one Cv25519 subkey for
    encryption (communications and storage). No expiry, no passphrase.
    """
    addr = _check_address(address)
    created = _as_datetime(now)
    with _pgpy() as pgpy:
        c = pgpy.constants
        key = pgpy.PGPKey.new(c.PubKeyAlgorithm.EdDSA, c.EllipticCurveOID.Ed25519, created=created)
        key.add_uid(
            pgpy.PGPUID.new(f"<{addr}>"),
            usage={c.KeyFlags.Certify, c.KeyFlags.Sign},
            hashes=[c.HashAlgorithm.SHA256, c.HashAlgorithm.SHA384, c.HashAlgorithm.SHA512],
            ciphers=[c.SymmetricKeyAlgorithm.AES256, c.SymmetricKeyAlgorithm.AES128],
            compression=[c.CompressionAlgorithm.Uncompressed],
            hash=c.HashAlgorithm.SHA256,
            created=created,
        )
        subkey = pgpy.PGPKey.new(
            c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519, created=created
        )
        key.add_subkey(
            subkey,
            usage={c.KeyFlags.EncryptCommunications, c.KeyFlags.EncryptStorage},
            hash=c.HashAlgorithm.SHA256,
            created=created,
        )
        result = _normalize(pgpy, key, secret=True, now=time.time())
    assert isinstance(result, AccountKey)
    return result


def load_secret(
    armored: str, max_bytes: int = MAX_KEY_BYTES, *, address: str | None = None
) -> AccountKey:
    """Check an armored secret key (from the keyring or another device) and return it minimal.

    Raises BadAccountKey unless it is an unprotected v4 secret key with an Ed25519 primary,
    exactly one user id with a valid self-signature (and, if `address` is given, that address),
    and a valid, unrevoked, unexpired Cv25519 subkey bound for encryption, whose secret parts
    actually work (a sign/verify and an encrypt/decrypt probe).
    """
    expected = None if address is None else _check_address(address)
    packets = _prepare(armored, SECRET_BLOCK, max_bytes)
    with _pgpy() as pgpy:
        key = _parse(pgpy, packets)
        result = _normalize(pgpy, key, secret=True, now=time.time(), address=expected)
    assert isinstance(result, AccountKey)
    return result


def load_public(
    armored: str, max_bytes: int = MAX_KEY_BYTES, *, address: str | None = None
) -> PublicAccountKey:
    """`load_secret`'s structural and signature checks for an armored public key."""
    expected = None if address is None else _check_address(address)
    packets = _prepare(armored, PUBLIC_BLOCK, max_bytes)
    with _pgpy() as pgpy:
        key = _parse(pgpy, packets)
        return _normalize(pgpy, key, secret=False, now=time.time(), address=expected)


def fingerprint_of(armored_public: str) -> str:
    """The full fingerprint (40 upper-case hex digits) of a public key that passes `load_public`."""
    return load_public(armored_public).fingerprint


# --- TEMPORARY (h-inner): pgpy stand-in for pysequoia's decrypt_message; replaced at merge ----
def decrypt_message(
    message: bytes, secrets: Sequence[AccountKey], *, max_output: int = 4 * 1024 * 1024
) -> bytes | None:
    """The plaintext (an inner MIME entity) of an OpenPGP message (armored or binary) encrypted
    to one of `secrets`; None if none of them decrypts it or the plaintext exceeds `max_output`.
    pgpy inflates compressed data without a bound, so `max_output` is checked only afterwards:
    acceptable for a stand-in, not for the real one."""
    with _pgpy() as pgpy:
        try:
            encrypted = pgpy.PGPMessage.from_blob(message)
        except Exception:
            return None
        for secret in secrets:
            try:
                key = _parse(pgpy, _packets(_dearmor(secret.secret_armored, SECRET_BLOCK)))
                plain = key.decrypt(encrypted).message
            except Exception:  # noqa: S112 - not this key (or not decryptable): try the next
                continue
            data = plain.encode("utf-8") if isinstance(plain, str) else bytes(plain)
            return data if len(data) <= max_output else None
    return None


# --- end of TEMPORARY ------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# pgpy, behind a lock and with its warnings kept off stdout


@contextlib.contextmanager
def _pgpy() -> Iterator[Any]:
    with _PGPY_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import pgpy
            import pgpy.constants
            import pgpy.packet

            yield pgpy
        finally:
            for w in caught:
                log.debug("pgpy: %s: %s", w.category.__name__, w.message)


def _parse(pgpy: Any, packets: list[_Packet]) -> Any:
    """Build pgpy's key object one vetted packet at a time.

    Never hand pgpy the stream: its parsers trust inner length fields, so a signature whose
    subpacket claims too many bytes makes it read on past the packet's end and resynchronise
    inside the next packet's body, where it would find (and inflate, without limit) a compressed
    packet that `_prepare` never saw. Each packet is therefore parsed from a buffer holding
    exactly its own bytes plus a sentinel; it must consume exactly its own bytes (reading into
    the sentinel means an inner length lied), and the key is assembled the way
    `PGPKey.parse` does it.
    """
    groups: list[tuple[int, Any, list[Any]]] = []
    for p in packets:
        if p.tag == TAG_TRUST:
            continue
        buf = bytearray(p.raw + _SENTINEL)
        try:
            obj = pgpy.packet.Packet(buf)
        except Exception as exc:
            raise BadAccountKey(f"unparsable packet (tag {p.tag}, {type(exc).__name__})") from None
        if (
            buf != _SENTINEL  # pgpy read past the packet's end (or stopped short of it)
            or int(obj.header.tag) != p.tag
            or isinstance(obj, pgpy.packet.Opaque)
        ):
            raise BadAccountKey(f"unsupported or malformed packet (tag {p.tag})")
        if p.tag == TAG_SIGNATURE:
            groups[-1][2].append(obj)  # _prepare made sure a key packet comes first
        else:
            groups.append((p.tag, obj, []))
    key = None
    try:
        for tag, obj, sigs in groups:
            holder = pgpy.PGPUID() | obj if tag == TAG_USER_ID else pgpy.PGPKey() | obj
            for sig in sigs:
                holder |= pgpy.PGPSignature() | sig
            if key is None:
                key = holder
            else:
                key |= holder
    except Exception as exc:
        raise BadAccountKey(f"not a well-formed key ({type(exc).__name__})") from None
    return key


def _normalize(
    pgpy: Any, key: Any, *, secret: bool, now: float, address: str | None = None
) -> PublicAccountKey:
    """All semantic checks on a parsed key; returns it in minimal form."""
    try:
        return _normalize_checked(pgpy, key, secret=secret, now=now, address=address)
    except BadAccountKey:
        raise
    except Exception as exc:  # pgpy raising on odd input: still a bad key, never a crash
        raise BadAccountKey(f"unusable key ({type(exc).__name__})") from None


def _normalize_checked(
    pgpy: Any, key: Any, *, secret: bool, now: float, address: str | None
) -> PublicAccountKey:
    if not key.is_primary:
        raise BadAccountKey("not a primary key")
    if key.is_public == secret:
        raise BadAccountKey(
            "a public key where a secret key is needed"
            if secret
            else "a secret key where a public key is expected"
        )
    if secret and (key.is_protected or any(s.is_protected for s in key.subkeys.values())):
        raise BadAccountKey("the key is passphrase-protected")
    c = pgpy.constants
    if key.key_algorithm != c.PubKeyAlgorithm.EdDSA or key.key_size != c.EllipticCurveOID.Ed25519:
        raise BadAccountKey(f"the primary key is not Ed25519 ({_alg_name(key)})")
    if list(key.__sig__):
        # direct-key signatures and key revocations: Autocrypt keys carry neither
        has_revocation = any(_sig_info(s).sig_type == SIG_KEY_REVOCATION for s in key.__sig__)
        raise BadAccountKey(
            "the key carries a revocation" if has_revocation else "unexpected direct-key signature"
        )
    if key.userattributes:
        raise BadAccountKey("the key has a user attribute")
    if len(key.userids) != 1:
        raise BadAccountKey(f"the key has {len(key.userids)} user ids, not exactly one")

    keyid = key.fingerprint.keyid
    key_created = key.created.timestamp()

    # user id and its self-signature
    uid = key.userids[0]
    user_id = uid.userid
    if not isinstance(user_id, str) or not user_id:
        raise BadAccountKey("empty user id")
    if address is not None and _uid_address(user_id).casefold() != address.casefold():
        raise BadAccountKey("the user id is not the expected address")
    selfsig = None
    selfsig_info = None
    says_expired = False
    for sig in uid.__sig__:
        if sig.signer != keyid:
            continue  # third-party certification: dropped
        info = _sig_info(sig)
        if info.sig_type == SIG_CERT_REVOCATION:
            if _verifies(key, uid, sig, info, now):
                raise BadAccountKey("the user id is revoked")
            continue
        if info.sig_type not in SIG_CERTIFICATIONS:
            continue
        says_expired = says_expired or _expired(key_created, info.key_expires, now)
        if not _verifies(key, uid, sig, info, now):
            continue
        if selfsig_info is None or info.created > selfsig_info.created:
            selfsig, selfsig_info = sig, info
    if selfsig is None or selfsig_info is None:
        # pgpy's verify() fails every signature of a key it deems expired
        raise BadAccountKey(
            "the key has expired" if says_expired else "the user id has no valid self-signature"
        )
    flags = selfsig_info.key_flags
    if flags is None or not flags & FLAG_CERTIFY:
        raise BadAccountKey("the primary key is not flagged for certification")
    if flags & (FLAG_ENCRYPT_COMMS | FLAG_ENCRYPT_STORAGE):
        raise BadAccountKey("the primary key is flagged for encryption")
    if _expired(key_created, selfsig_info.key_expires, now):
        raise BadAccountKey("the key has expired")

    # encryption subkey and its binding signature
    subkeys = list(key.subkeys.values())
    chosen: tuple[int, Any, Any] | None = None
    chosen_created = -math.inf
    seen_cv25519 = False
    for index, sub in enumerate(subkeys):
        if sub.key_algorithm != c.PubKeyAlgorithm.ECDH:
            continue
        if sub.key_size != c.EllipticCurveOID.Curve25519:
            continue
        seen_cv25519 = True
        binding = _subkey_binding(key, sub, keyid, now)
        if binding is None:
            continue
        sub_created = sub.created.timestamp()
        if sub_created > chosen_created:
            chosen, chosen_created = (index, sub, binding), sub_created
    if chosen is None:
        if seen_cv25519:
            raise BadAccountKey("no Cv25519 subkey with a valid binding signature for encryption")
        raise BadAccountKey("the key has no Cv25519 (ECDH Curve25519) encryption subkey")
    sub_index, subkey, binding = chosen

    # minimal form, cut out of pgpy's own serialization
    public_bytes = _minimal(bytes(key.pubkey), selfsig, sub_index, binding, TAG_PUBLIC_SUBKEY)
    fingerprint = str(key.fingerprint).replace(" ", "").upper()
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        raise BadAccountKey("unexpected fingerprint format")
    # what goes out must be the key that was checked: recompute both fingerprints from the bytes
    out = _packets(public_bytes)
    sub_fingerprint = str(subkey.fingerprint).replace(" ", "").upper()
    if (
        _v4_fingerprint(out[0].body) != fingerprint
        or _v4_fingerprint(out[3].body) != sub_fingerprint
    ):
        raise BadAccountKey("the key does not serialise back to itself")
    public_armored = _armor(public_bytes, PUBLIC_BLOCK)
    if not secret:
        return PublicAccountKey(fingerprint, public_armored)
    secret_bytes = _minimal(bytes(key), selfsig, sub_index, binding, TAG_SECRET_SUBKEY)
    secret_armored = _armor(secret_bytes, SECRET_BLOCK)
    _probe(pgpy, secret_bytes, fingerprint)
    return AccountKey(fingerprint, public_armored, secret_armored)


def _subkey_binding(key: Any, sub: Any, keyid: str, now: float) -> Any:
    """The newest valid encryption binding of `sub`, or None if revoked, expired or unbound."""
    best = None
    best_info = None
    for sig in sub.__sig__:
        if sig.signer != keyid:
            continue
        info = _sig_info(sig)
        if info.sig_type == SIG_SUBKEY_REVOCATION:
            if _verifies(key, sub, sig, info, now):
                return None
            continue
        if info.sig_type != SIG_SUBKEY_BINDING or not _verifies(key, sub, sig, info, now):
            continue
        if best_info is None or info.created > best_info.created:
            best, best_info = sig, info
    if best is None or best_info is None:
        return None
    if best_info.key_flags is None or not best_info.key_flags & FLAG_ENCRYPT_COMMS:
        return None
    if _expired(sub.created.timestamp(), best_info.key_expires, now):
        return None
    return best


def _verifies(key: Any, subject: Any, sig: Any, info: _SigInfo, now: float) -> bool:
    if info.hash_alg not in STRONG_HASHES or info.pk_alg != ALG_EDDSA:
        return False
    if _expired(info.created, info.sig_expires, now):
        return False
    try:
        return bool(key.verify(subject, sig))
    except Exception:
        return False


def _expired(created: float, lifetime: int | None, now: float) -> bool:
    return lifetime is not None and lifetime > 0 and created + lifetime <= now


def _minimal(data: bytes, selfsig: Any, sub_index: int, binding: Any, sub_tag: int) -> bytes:
    """primary, user id, self-signature, the chosen subkey, its binding: picked from `data`."""
    packets = _packets(data)
    selfsig_raw = bytes(selfsig)
    binding_raw = bytes(binding)
    primary = packets[0]
    uid = [p for p in packets if p.tag == TAG_USER_ID]
    subs = [p for p in packets if p.tag == sub_tag]
    if (
        primary.tag not in (TAG_PUBLIC_KEY, TAG_SECRET_KEY)
        or len(uid) != 1
        or sub_index >= len(subs)
        or not any(p.raw == selfsig_raw for p in packets)
        or not any(p.raw == binding_raw for p in packets)
    ):
        raise BadAccountKey("cannot cut the key down to its minimal form")
    chosen = (primary, uid[0], _packets(selfsig_raw)[0], subs[sub_index], _packets(binding_raw)[0])
    # new-format headers throughout, so equal keys give equal bytes whoever wrote them first
    return b"".join(_new_packet(p.tag, p.body) for p in chosen)


def _v4_fingerprint(public_key_body: bytes) -> str:
    """RFC 4880 section 12.2: SHA-1 over 0x99, the two-octet length and the public key body."""
    framed = b"\x99" + len(public_key_body).to_bytes(2, "big") + public_key_body
    return hashlib.sha1(framed, usedforsecurity=False).hexdigest().upper()


def _new_packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        header = bytes((0xC0 | tag, n))
    elif n < 8384:
        header = bytes((0xC0 | tag, ((n - 192) >> 8) + 192, (n - 192) & 0xFF))
    else:
        header = bytes((0xC0 | tag, 255)) + n.to_bytes(4, "big")
    return header + body


def _probe(pgpy: Any, secret_bytes: bytes, fingerprint: str) -> None:
    """Re-read the minimal secret key and show that its secret parts match its public parts."""
    failure = ""
    try:
        key = _parse(pgpy, _packets(secret_bytes))
        c = pgpy.constants
        if str(key.fingerprint).replace(" ", "").upper() != fingerprint:
            failure = "it does not re-read as the same key"
        elif not key.pubkey.verify(_PROBE, key.sign(_PROBE, hash=c.HashAlgorithm.SHA256)):
            failure = "its primary key does not make valid signatures"
        else:
            encrypted = key.pubkey.encrypt(pgpy.PGPMessage.new(_PROBE))
            message = key.decrypt(encrypted).message
            if isinstance(message, str):
                message = message.encode("utf-8")
            if bytes(message) != _PROBE:
                failure = "its subkey does not decrypt"
    except Exception as exc:
        failure = f"probing it failed ({type(exc).__name__})"
    if failure:
        raise BadAccountKey(f"the secret key material does not work: {failure}")


def _alg_name(key: Any) -> str:
    try:
        return f"{key.key_algorithm.name} {getattr(key.key_size, 'name', key.key_size)}"
    except Exception:
        return "unknown algorithm"


# ---------------------------------------------------------------------------------------------
# Input checks done without pgpy: size, armor, packet stream


def _prepare(armored: object, block: str, max_bytes: int) -> list[_Packet]:
    if not isinstance(armored, str):
        raise BadAccountKey("the key must be an ASCII-armored string")
    if len(armored) > max_bytes:
        raise BadAccountKey(f"the armored key is larger than {max_bytes} bytes")
    if not armored.isascii():
        raise BadAccountKey("the armored key is not ASCII")
    data = _dearmor(armored, block)
    packets = _packets(data)
    key_tag, sub_tag = (
        (TAG_SECRET_KEY, TAG_SECRET_SUBKEY)
        if block == SECRET_BLOCK
        else (TAG_PUBLIC_KEY, TAG_PUBLIC_SUBKEY)
    )
    allowed = {key_tag, sub_tag, TAG_USER_ID, TAG_SIGNATURE, TAG_TRUST}
    for p in packets:
        if p.tag not in allowed:
            raise BadAccountKey(f"unexpected OpenPGP packet (tag {p.tag}) in a key")
        if p.tag in (key_tag, sub_tag, TAG_SIGNATURE) and (not p.body or p.body[0] != 4):
            raise BadAccountKey("only version 4 keys and signatures are supported")
    if not packets or packets[0].tag != key_tag:
        raise BadAccountKey("the data does not start with a primary key")
    if sum(p.tag == key_tag for p in packets) != 1:
        raise BadAccountKey("more than one primary key")
    if sum(p.tag == TAG_USER_ID for p in packets) != 1:
        raise BadAccountKey("the key must have exactly one user id")
    if not any(p.tag == sub_tag for p in packets):
        raise BadAccountKey("the key has no subkey")
    return packets


class _Packet(NamedTuple):
    tag: int
    body: bytes
    raw: bytes  # header and body


def _packets(data: bytes) -> list[_Packet]:
    """Split a binary OpenPGP packet stream; refuses partial and indeterminate lengths."""
    out: list[_Packet] = []
    pos = 0
    n = len(data)
    while pos < n:
        start = pos
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise BadAccountKey("not an OpenPGP packet stream")
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos >= n:
                raise BadAccountKey("truncated packet header")
            o1 = data[pos]
            if o1 < 192:
                length, pos = o1, pos + 1
            elif o1 < 224:
                if pos + 2 > n:
                    raise BadAccountKey("truncated packet header")
                length, pos = ((o1 - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif o1 == 255:
                if pos + 5 > n:
                    raise BadAccountKey("truncated packet header")
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise BadAccountKey("partial packet lengths are not allowed in a key")
        else:  # old format
            tag = (first >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(first & 0x03)
            if size is None:
                raise BadAccountKey("indeterminate packet lengths are not allowed in a key")
            if pos + size > n:
                raise BadAccountKey("truncated packet header")
            length, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        if pos + length > n:
            raise BadAccountKey("truncated packet")
        out.append(_Packet(tag, data[pos : pos + length], data[start : pos + length]))
        pos += length
    return out


class _SigInfo(NamedTuple):
    sig_type: int
    pk_alg: int
    hash_alg: int
    created: float
    key_flags: int | None
    key_expires: int | None  # seconds after the key's creation
    sig_expires: int | None  # seconds after the signature's creation


def _sig_info(sig: Any) -> _SigInfo:
    """Read a v4 signature's type and hashed subpackets from its bytes (unhashed ones ignored)."""
    packets = _packets(bytes(sig))
    if len(packets) != 1 or packets[0].tag != TAG_SIGNATURE:
        raise BadAccountKey("malformed signature")
    body = packets[0].body
    if len(body) < 6 or body[0] != 4:
        raise BadAccountKey("only version 4 signatures are supported")
    hashed_len = int.from_bytes(body[4:6], "big")
    if 6 + hashed_len > len(body):
        raise BadAccountKey("malformed signature")
    created: float | None = None
    key_flags: int | None = None
    key_expires: int | None = None
    sig_expires: int | None = None
    area = body[6 : 6 + hashed_len]
    pos = 0
    while pos < len(area):
        o1 = area[pos]
        if o1 < 192:
            length, pos = o1, pos + 1
        elif o1 < 255:
            if pos + 2 > len(area):
                raise BadAccountKey("malformed signature subpacket")
            length, pos = ((o1 - 192) << 8) + area[pos + 1] + 192, pos + 2
        else:
            if pos + 5 > len(area):
                raise BadAccountKey("malformed signature subpacket")
            length, pos = int.from_bytes(area[pos + 1 : pos + 5], "big"), pos + 5
        if length < 1 or pos + length > len(area):
            raise BadAccountKey("malformed signature subpacket")
        sp_type, sp_data = area[pos] & 0x7F, area[pos + 1 : pos + length]
        if area[pos] & 0x80 and sp_type not in _KNOWN_CRITICAL:
            raise BadAccountKey(f"unknown critical signature subpacket {sp_type}")
        pos += length
        if sp_type == SUB_CREATION_TIME and len(sp_data) == 4:
            created = int.from_bytes(sp_data, "big")
        elif sp_type == SUB_KEY_FLAGS and sp_data:
            key_flags = sp_data[0]
        elif sp_type == SUB_KEY_EXPIRATION and len(sp_data) == 4:
            key_expires = int.from_bytes(sp_data, "big")
        elif sp_type == SUB_SIG_EXPIRATION and len(sp_data) == 4:
            sig_expires = int.from_bytes(sp_data, "big")
    if created is None:
        raise BadAccountKey("signature without a hashed creation time")
    return _SigInfo(body[1], body[2], body[3], created, key_flags, key_expires, sig_expires)


def _crc24_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


def _crc24(data: bytes) -> int:
    """The armor checksum of RFC 4880 section 6.1."""
    crc = 0xB704CE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24_TABLE[((crc >> 16) ^ byte) & 0xFF]
    return crc


def _armor(data: bytes, block: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode("ascii")
    body = "\n".join(lines)
    return f"-----BEGIN PGP {block}-----\n\n{body}\n={crc}\n-----END PGP {block}-----\n"


def _dearmor(text: str, block: str) -> bytes:
    """Strict ASCII armor: one block of the expected type, optional headers, CRC checked."""
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    begin, end = f"-----BEGIN PGP {block}-----", f"-----END PGP {block}-----"
    if not lines or not lines[0].startswith("-----BEGIN PGP "):
        raise BadAccountKey("not an ASCII-armored OpenPGP block")
    if lines[0] != begin:
        raise BadAccountKey(f"expected a PGP {block}, got {lines[0].strip('-')[10:][:40]!r}")
    if len(lines) < 2 or lines[-1] != end:
        raise BadAccountKey("the armor is not closed, or text follows it")
    inner = lines[1:-1]
    if any(line.startswith("-----") for line in inner):
        raise BadAccountKey("more than one armored block")
    if "" in inner:
        blank = inner.index("")
        if not all(_ARMOR_HEADER_RE.fullmatch(h) for h in inner[:blank]):
            raise BadAccountKey("malformed armor")
        body = inner[blank + 1 :]
    else:
        body = inner
    crc: bytes | None = None
    if body and body[-1].startswith("="):
        try:
            crc = base64.b64decode(body[-1][1:], validate=True)
        except (binascii.Error, ValueError):
            raise BadAccountKey("malformed armor checksum") from None
        body = body[:-1]
        if len(crc) != 3:
            raise BadAccountKey("malformed armor checksum")
    try:
        data = base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise BadAccountKey("malformed base64 in the armor") from None
    if not data:
        raise BadAccountKey("empty armored block")
    if crc is not None and int.from_bytes(crc, "big") != _crc24(data):
        raise BadAccountKey("armor checksum mismatch")
    return data


# ---------------------------------------------------------------------------------------------
# Small helpers


def _check_address(address: object) -> str:
    """A bare addr-spec that is safe in a user id and in a header attribute, or ValueError."""
    if not isinstance(address, str) or not 3 <= len(address) <= 254:
        raise ValueError("not an e-mail address")
    if any(ch in _ADDRESS_FORBIDDEN or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in address):
        raise ValueError("not a bare e-mail address (no names, spaces or brackets)")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise ValueError("not an e-mail address")
    return address


def _uid_address(user_id: str) -> str:
    """The address in a user id: `<a@b>`, `Name <a@b>` or a bare `a@b`."""
    if user_id.endswith(">") and "<" in user_id:
        return user_id[user_id.rindex("<") + 1 : -1]
    return user_id


def _as_datetime(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        now = now.timestamp()
    if isinstance(now, bool) or not isinstance(now, int | float) or not 0 <= now < 2**32:
        raise ValueError("now must be a time from 1970 to 2106")
    return datetime.fromtimestamp(int(now), UTC)


# ---------------------------------------------------------------------------------------------
# Correspondents' keys (Autocrypt keydata received in mail)
#
# Peer keys are judged differently from the account key: they come from other OpenPGP programs,
# so RSA and NIST curves are accepted and material we do not need (third-party certifications,
# user attributes, v3 signatures, subkeys we could not encrypt to) is skipped rather than
# refused. The only question is "can we encrypt to this key now?", answered with a bool, since a
# bad key in a header just means the header is ignored (Autocrypt Level 1, "keydata").

# Every keydata from a valid Autocrypt header is smaller: headers above 10 KiB are invalid and
# base64 inflates by 4/3, so 10 KiB of binary never refuses a legitimate header while keeping
# pgpy's work six times below MAX_KEY_BYTES (which bounds armored keys from our own keyring).
MAX_PEER_KEY_BYTES = 10 * 1024
MAX_PEER_PACKETS = 32
MAX_PEER_SUBKEYS = 8
PEER_CACHE_SIZE = 4096

TAG_USER_ATTRIBUTE = 17
SIG_DIRECT_KEY = 0x1F

ALG_RSA = 1
ALG_RSA_ENCRYPT = 2
ALG_RSA_SIGN = 3
ALG_ELGAMAL = 16
ALG_ECDSA = 19

# RSA and ElGamal moduli: 2048 bits is today's floor; GnuPG makes nothing above 8192 bits. The
# RSA public exponent is the sender's choice, and OpenSSL accepts one as long as the modulus (up
# to 3072 bits), which would make each verification as slow as a decryption: real keys use
# 65537 (a few old ones 3, 17 or 41), so anything beyond 64 bits is refused.
MIN_PEER_MODULUS_BITS = 2048
MAX_PEER_MODULUS_BITS = 8192
MAX_PEER_RSA_EXPONENT_BITS = 64

# curve OIDs as they appear in key packets (RFC 4880bis / RFC 6637), without tag and length
_OID_ED25519 = bytes.fromhex("2b06010401da470f01")
_OID_CV25519 = bytes.fromhex("2b060104019755010501")
_OID_NIST = frozenset(
    {
        bytes.fromhex("2a8648ce3d030107"),  # P-256
        bytes.fromhex("2b81040022"),  # P-384
        bytes.fromhex("2b81040023"),  # P-521
    }
)
_ENCRYPTION_FLAGS = FLAG_ENCRYPT_COMMS | FLAG_ENCRYPT_STORAGE

_PEER_CACHE: OrderedDict[bytes, _PeerVerdict] = OrderedDict()
_PEER_CACHE_LOCK = threading.Lock()


def usable_peer_key(keydata: bytes, *, now: float | None = None) -> bool:
    """Whether a correspondent's Autocrypt keydata is a key we may encrypt to at `now`.

    The same key arrives with every mail from that correspondent, so verdicts are memoized (see
    `_peer_verdict`). Never raises on bad input: a key in a mail header is attacker-controlled,
    and the only consequence of a bad one is that the header is ignored.
    """
    try:
        return _peer_verdict(keydata, now).usable
    except Exception:
        log.debug("peer key check failed unexpectedly", exc_info=True)
        return False


def peer_key_fingerprint(keydata: bytes, *, now: float | None = None) -> str | None:
    """The primary key's fingerprint (40 upper-case hex digits) if `usable_peer_key`, else None.

    Unusable keys get no fingerprint so that nothing is shown to the user that looks like a
    key they could rely on.
    """
    try:
        verdict = _peer_verdict(keydata, now)
    except Exception:
        log.debug("peer key check failed unexpectedly", exc_info=True)
        return None
    return verdict.fingerprint if verdict.usable else None


class _PeerVerdict(NamedTuple):
    usable: bool
    fingerprint: str | None
    # the verdict holds for every `now` in [valid_from, valid_until): in between, no expiry
    # time in the key is crossed, so a cached verdict is reused only inside this interval
    valid_from: float
    valid_until: float


_NEVER_USABLE = _PeerVerdict(False, None, -math.inf, math.inf)


def _peer_verdict(keydata: bytes, now: float | None) -> _PeerVerdict:
    """The verdict for `keydata` at `now`, from the cache when no expiry lies in between.

    Keyed by SHA-256 of the bytes (not the bytes themselves, to keep the cache's memory bounded
    by entry count). The lock is not held while checking: pgpy has its own lock, and a second
    thread checking the same key at worst repeats the work.
    """
    if not isinstance(keydata, bytes | bytearray):
        return _NEVER_USABLE
    if not keydata or len(keydata) > MAX_PEER_KEY_BYTES:
        return _NEVER_USABLE  # refused before hashing: no cache entry to evict others with
    at = time.time() if now is None else float(now)
    if math.isnan(at):
        return _NEVER_USABLE
    digest = hashlib.sha256(keydata).digest()
    with _PEER_CACHE_LOCK:
        cached = _PEER_CACHE.get(digest)
        if cached is not None and cached.valid_from <= at < cached.valid_until:
            _PEER_CACHE.move_to_end(digest)
            return cached
    verdict = _peer_check(bytes(keydata), at)
    with _PEER_CACHE_LOCK:
        _PEER_CACHE[digest] = verdict
        _PEER_CACHE.move_to_end(digest)
        while len(_PEER_CACHE) > PEER_CACHE_SIZE:
            _PEER_CACHE.popitem(last=False)
    return verdict


def _peer_check(data: bytes, now: float) -> _PeerVerdict:
    """Structure first, without pgpy (cheap, bounded); then signatures, with pgpy."""
    try:
        peer = _peer_structure(data)
    except BadAccountKey:
        return _NEVER_USABLE
    if peer is None:
        return _NEVER_USABLE
    before = [t for t in peer.marks if t <= now]
    after = [t for t in peer.marks if t > now]
    valid_from = max(before, default=-math.inf)
    valid_until = min(after, default=math.inf)
    try:
        with _pgpy() as pgpy:
            usable = _peer_usable(pgpy, peer, now)
    except Exception as exc:  # pgpy raising on odd input: unusable, never a crash
        log.debug("peer key rejected (%s)", type(exc).__name__)
        return _NEVER_USABLE
    fingerprint = _v4_fingerprint(peer.primary.packet.body)
    return _PeerVerdict(usable, fingerprint, valid_from, valid_until)


@dataclass
class _PeerSig:
    packet: _Packet
    info: _SigInfo


@dataclass
class _PeerPart:
    """A key or user id packet with the signatures that follow it."""

    packet: _Packet
    created: int = 0
    alg: int = 0
    bits: int = 0  # RSA/ElGamal modulus size
    exponent_bits: int = 0  # RSA public exponent size
    oid: bytes = b""  # ECC curve
    sigs: list[_PeerSig] = field(default_factory=list)


@dataclass
class _PeerKey:
    primary: _PeerPart
    uids: list[_PeerPart]
    subkeys: list[_PeerPart]  # only those with an algorithm we can encrypt to
    marks: list[float]  # every time at which some signature or key expires


def _peer_structure(data: bytes) -> _PeerKey | None:
    """Walk the packets without pgpy: None if the key cannot be usable whatever it signs.

    Refuses what is not one v4 transferable public key (secret keys, other packet types, too
    many packets or subkeys); drops what a usable key may carry but we never need (trust
    packets, user attributes, non-v4 signatures, signatures we cannot read, subkeys we could
    not encrypt to). Hashed subpackets are read here so pgpy is only asked to verify.
    """
    packets = _packets(data)
    if not packets or len(packets) > MAX_PEER_PACKETS or packets[0].tag != TAG_PUBLIC_KEY:
        return None
    primary = _peer_part(packets[0])
    if primary is None or not _peer_can_certify(primary):
        return None
    uids: list[_PeerPart] = []
    subkeys: list[_PeerPart] = []
    subkey_count = 0
    current: _PeerPart | None = primary
    for p in packets[1:]:
        if p.tag == TAG_SIGNATURE:
            if current is None or not p.body or p.body[0] != 4:
                continue
            try:
                info = _sig_info(p.raw)
            except BadAccountKey:
                continue  # e.g. an unknown critical subpacket: the signature is invalid
            current.sigs.append(_PeerSig(p, info))
        elif p.tag == TAG_USER_ID:
            current = _PeerPart(p)
            uids.append(current)
        elif p.tag == TAG_PUBLIC_SUBKEY:
            subkey_count += 1
            if subkey_count > MAX_PEER_SUBKEYS:
                return None
            current = _peer_part(p)
            if current is not None and _peer_can_encrypt(current):
                subkeys.append(current)
            else:
                current = None
        elif p.tag == TAG_USER_ATTRIBUTE:
            current = None
        elif p.tag != TAG_TRUST:
            return None  # secret key material, a second key, or no key packet at all
    if not uids or not (subkeys or _peer_can_encrypt(primary)):
        return None
    marks: list[float] = []
    for part in [primary, *uids, *subkeys]:
        key_created = (primary if part.packet.tag == TAG_USER_ID else part).created
        for sig in part.sigs:
            if sig.info.sig_expires:
                marks.append(sig.info.created + sig.info.sig_expires)
            if sig.info.key_expires:
                marks.append(key_created + sig.info.key_expires)
    return _PeerKey(primary, uids, subkeys, marks)


def _peer_part(p: _Packet) -> _PeerPart | None:
    """A v4 key packet's creation time, algorithm and size (or curve); None if malformed."""
    body = p.body
    if len(body) < 8 or body[0] != 4:
        return None
    created = int.from_bytes(body[1:5], "big")
    alg = body[5]
    rest = body[6:]
    if alg in (ALG_RSA, ALG_RSA_ENCRYPT, ALG_RSA_SIGN, ALG_ELGAMAL):
        modulus, rest = _peer_mpi(rest)  # RSA n or ElGamal p
        exponent, _ = _peer_mpi(rest) if alg != ALG_ELGAMAL else (None, b"")
        if modulus is None or (alg != ALG_ELGAMAL and exponent is None):
            return None
        exponent_bits = 0 if exponent is None else exponent.bit_length()
        return _PeerPart(p, created, alg, bits=modulus.bit_length(), exponent_bits=exponent_bits)
    if alg in (ALG_ECDH, ALG_ECDSA, ALG_EDDSA):
        n = rest[0]
        if n in (0, 0xFF) or 1 + n > len(rest):
            return None
        return _PeerPart(p, created, alg, oid=bytes(rest[1 : 1 + n]))
    return _PeerPart(p, created, alg)  # DSA and the rest: neither certifies nor encrypts here


def _peer_mpi(data: bytes) -> tuple[int | None, bytes]:
    """The multiprecision integer at the start of `data` and what follows it (RFC 4880 3.2)."""
    if len(data) < 2:
        return None, b""
    end = 2 + (int.from_bytes(data[:2], "big") + 7) // 8
    if end > len(data):
        return None, b""
    return int.from_bytes(data[2:end], "big"), data[end:]


def _peer_can_certify(part: _PeerPart) -> bool:
    """Primary key algorithms whose self-signatures we verify (DSA is not among them)."""
    if part.alg in (ALG_RSA, ALG_RSA_SIGN):
        return (
            MIN_PEER_MODULUS_BITS <= part.bits <= MAX_PEER_MODULUS_BITS
            and part.exponent_bits <= MAX_PEER_RSA_EXPONENT_BITS
        )
    if part.alg == ALG_ECDSA:
        return part.oid in _OID_NIST
    return part.alg == ALG_EDDSA and part.oid == _OID_ED25519


def _peer_can_encrypt(part: _PeerPart) -> bool:
    if part.alg in (ALG_RSA, ALG_RSA_ENCRYPT, ALG_ELGAMAL):
        return MIN_PEER_MODULUS_BITS <= part.bits <= MAX_PEER_MODULUS_BITS
    return part.alg == ALG_ECDH and (part.oid == _OID_CV25519 or part.oid in _OID_NIST)


def _peer_usable(pgpy: Any, peer: _PeerKey, now: float) -> bool:
    """The signature checks, each signature verified only if its verdict can matter.

    pgpy gets the key, user id and subkey packets but none of the signatures attached: it
    then verifies exactly the signature it is given, and its own expiry and revocation
    bookkeeping (which reads the wall clock, not `now`) stays out of the way.
    """
    primary = _peer_pgpy_packet(pgpy, peer.primary.packet)
    if primary is None:
        return False
    key = pgpy.PGPKey() | primary
    keyid = key.fingerprint.keyid

    def verifies(subject: Any, sig: _PeerSig, *, strong_hash: bool = True) -> bool:
        info = sig.info
        if info.pk_alg != peer.primary.alg or _expired(info.created, info.sig_expires, now):
            return False
        if strong_hash and info.hash_alg not in STRONG_HASHES:
            return False
        obj = _peer_pgpy_packet(pgpy, sig.packet)
        if obj is None:
            return False
        try:
            wrapped = pgpy.PGPSignature() | obj
            return wrapped.signer == keyid and bool(key.verify(subject, wrapped))
        except Exception:
            return False

    # revocations are honoured whatever hash they use: a forged one can only make us refuse
    if any(
        s.info.sig_type == SIG_KEY_REVOCATION and verifies(key, s, strong_hash=False)
        for s in peer.primary.sigs
    ):
        return False

    # self-signatures, newest first: the newest valid one says how the primary may be used and
    # when it expires; at least one must bind an unrevoked user id
    candidates: list[tuple[float, Any, _PeerSig]] = [
        (s.info.created, None, s) for s in peer.primary.sigs if s.info.sig_type == SIG_DIRECT_KEY
    ]
    for uid_part in peer.uids:
        obj = _peer_pgpy_packet(pgpy, uid_part.packet)
        if obj is None:
            continue
        uid = pgpy.PGPUID() | obj
        key |= uid
        if any(
            s.info.sig_type == SIG_CERT_REVOCATION and verifies(uid, s, strong_hash=False)
            for s in uid_part.sigs
        ):
            continue
        candidates += [
            (s.info.created, uid, s) for s in uid_part.sigs if s.info.sig_type in SIG_CERTIFICATIONS
        ]
    candidates.sort(key=lambda c: c[0], reverse=True)
    newest: _SigInfo | None = None
    binds_uid = False
    for _, uid, sig in candidates:
        if newest is not None and (binds_uid or uid is None):
            continue
        if not verifies(key if uid is None else uid, sig):
            continue
        if newest is None:
            newest = sig.info
        binds_uid = binds_uid or uid is not None
        if binds_uid:
            break
    if newest is None or not binds_uid:
        return False
    if _expired(peer.primary.created, newest.key_expires, now):
        return False
    flags = newest.key_flags
    if flags is not None and flags & _ENCRYPTION_FLAGS and _peer_can_encrypt(peer.primary):
        return True

    for part in peer.subkeys:
        obj = _peer_pgpy_packet(pgpy, part.packet)
        if obj is None:
            continue
        sub = pgpy.PGPKey() | obj
        key |= sub
        if any(
            s.info.sig_type == SIG_SUBKEY_REVOCATION and verifies(sub, s, strong_hash=False)
            for s in part.sigs
        ):
            continue
        bindings = sorted(
            (s for s in part.sigs if s.info.sig_type == SIG_SUBKEY_BINDING),
            key=lambda s: s.info.created,
            reverse=True,
        )
        binding = next((s.info for s in bindings if verifies(sub, s)), None)
        if binding is None or _expired(part.created, binding.key_expires, now):
            continue
        # no key flags at all (older keys): the algorithm decides, and it can encrypt
        if binding.key_flags is None or binding.key_flags & _ENCRYPTION_FLAGS:
            return True
    return False


def _peer_pgpy_packet(pgpy: Any, p: _Packet) -> Any | None:
    """pgpy's object for one packet, parsed from exactly its own bytes (see `_parse`)."""
    buf = bytearray(p.raw + _SENTINEL)
    try:
        obj = pgpy.packet.Packet(buf)
        if buf != _SENTINEL or int(obj.header.tag) != p.tag or isinstance(obj, pgpy.packet.Opaque):
            return None
    except Exception:
        return None
    return obj
