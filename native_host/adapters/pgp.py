"""The account's OpenPGP key and correspondents' keys, through Sequoia (`pysequoia`).

The only module that imports pysequoia. Sequoia parses, verifies every self-signature and
binding, and applies its standard policy (no SHA-1 self-signatures, no RSA below 2048 bits,
revocations, expiry); this module adds OUR policy on top and never parses OpenPGP itself (the
one packet pysequoia cannot make, a new account key's self-signature that lets the primary sign,
comes from `pgp_self_signature`, and Sequoia checks it here like any key):

- a key is judged by asking Sequoia about candidate certificates built from the input's own
  packets (`Cert.from_packets`): "is this user id valid?" (`Cert.user_ids` lists only valid,
  unrevoked ones) and "can I encrypt to it?" (`encrypt` picks only a valid, unrevoked, unexpired,
  encryption-capable key under the standard policy);
- what leaves this module is minimal (Autocrypt Level 1 keydata): primary key, the one user id
  that matched, its self-signature, one encryption subkey and its binding (and, when the
  primary cannot sign, one signing subkey and its binding, or the stored key could not verify
  its owner's mail). A user id naming another address is never passed on, so a key cannot be
  stored or shown as valid for it.

pysequoia has no call to ask for validity at a time other than the wall clock (Sequoia's
`with_policy(policy, time)` is not exposed), and none to verify one given signature. So a
verdict "at `now`" is Sequoia's verdict now, restricted by the expiry times read from the kept
signatures through the packet API: a key that has already expired by the wall clock is refused
whatever `now` says (stricter than before, never looser).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pysequoia import Cert
    from pysequoia.packet import Packet

log = logging.getLogger(__name__)

# Sequoia's errors (anyhow) capture a stack backtrace when RUST_BACKTRACE is set, which costs
# about a second per refused key; RUST_LIB_BACKTRACE=0 turns that off for library errors only.
# Set before pysequoia is first used (it reads the variable once).
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

MAX_KEY_BYTES = 64 * 1024

PUBLIC_BLOCK = "PUBLIC KEY BLOCK"
SECRET_BLOCK = "PRIVATE KEY BLOCK"  # noqa: S105 - an armor label, not a password

_ADDRESS_FORBIDDEN = frozenset('<>;,"()[]\\')
_PROBE = b"autocrypt-sma key probe"


class BadAccountKey(ValueError):
    """A key offered as the account key failed a check; the message says which one."""


# ---------------------------------------------------------------------------------------------
# The keys handed out


@dataclass(frozen=True)
class PublicAccountKey:
    """The public half of an account key, in minimal form (see `load_public`)."""

    fingerprint: str  # upper-case hex: 40 digits for a v4 key, 64 for a v6 key
    public_armored: str  # ASCII-armored minimal transferable public key

    def keydata(self) -> bytes:
        """The binary minimal transferable public key: Autocrypt's keydata."""
        return b"".join(bytes(p) for p in _packets(self.public_armored.encode("ascii")))

    @property
    def user_id(self) -> str:
        """The key's only user id, e.g. `<alice@example.org>`."""
        from pysequoia.packet import Tag

        packets = _packets(self.public_armored.encode("ascii"))
        return next(p.user_id or "" for p in packets if p.tag == Tag.UserID)

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
# Account keys


def generate_account_key(address: str, now: datetime | float) -> AccountKey:
    """A new Autocrypt key for `address`: v4, Ed25519 primary that certifies and signs, Cv25519
    encryption subkey, Features SEIPD v1 only: Autocrypt's five packets.

    v4 (RFC 4880 profile) because Thunderbird's RNP and Autocrypt Level 1 peers read v4 keys.
    The primary signs because Delta Chat verifies signatures against primary keys only, and
    Thunderbird's RNP signs with the primary when the key has no signing subkey (the shape RNP,
    GnuPG and Delta Chat make). Sequoia generates the key material and the encryption subkey
    with its binding; the user id's self-signature, which pysequoia can only make
    certification-only, comes from `pgp_self_signature` (its docstring says why), and Sequoia
    then checks the result like any other account key. Features says SEIPD v1 only: Thunderbird
    153's RNP cannot decrypt SEIPD v2, which Sequoia and Delta Chat would otherwise send.
    `now` is checked but cannot be used: pysequoia's `Tsk.generate` takes no creation time, so
    the key is created at the wall clock. No expiry, no passphrase.
    """
    _check_address(address)
    _as_timestamp(now)
    import pysequoia
    from pysequoia.packet import SignatureType, Tag

    from native_host.adapters.pgp_self_signature import certify_sign_binding

    tsk = pysequoia.Tsk.generate(
        f"<{address}>",
        profile=pysequoia.Profile.RFC4880,
        cipher_suite=pysequoia.CipherSuite.Cv25519,
    )
    groups = _groups(_packets(bytes(tsk)))
    (primary, _), (uid, _) = groups[0], groups[1]
    encryption = next(
        (key, sigs)
        for key, sigs in groups[2:]
        if any(
            s.signature_type == SignatureType.SubkeyBinding
            and s.key_flags is not None
            and s.key_flags.transport_encryption
            for s in sigs
        )
    )
    assert primary.tag == Tag.SecretKey
    assert uid.tag == Tag.UserID
    created = max(int(time.time()), int(_ts(primary.key_created)))
    certification = certify_sign_binding(primary.body, bytes(uid.body), created)
    kept = [bytes(primary), bytes(uid), certification, bytes(encryption[0])]
    data = b"".join(kept + [bytes(s) for s in encryption[1]])
    result = _account_key(data, secret=True, address=address, one_uid=True)
    assert isinstance(result, AccountKey)
    return result


def load_secret(
    armored: str, max_bytes: int = MAX_KEY_BYTES, *, address: str | None = None
) -> AccountKey:
    """Check an armored secret key (from the keyring or another device) and return it minimal.

    Raises BadAccountKey unless it is an unprotected v4 or v6 secret key with an EdDSA primary,
    exactly one user id with a valid self-signature (and, if `address` is given, that address),
    a valid, unrevoked, unexpired encryption subkey, a way to sign (the primary or a signing
    subkey), and secret parts that actually work (a sign/verify and an encrypt/decrypt probe).
    """
    expected = None if address is None else _check_address(address)
    data = _dearmor_check(armored, SECRET_BLOCK, max_bytes)
    result = _account_key(data, secret=True, address=expected, one_uid=True)
    assert isinstance(result, AccountKey)
    return result


def load_public(
    armored: str, max_bytes: int = MAX_KEY_BYTES, *, address: str | None = None
) -> PublicAccountKey:
    """`load_secret`'s checks, except the probe, for an armored public key."""
    expected = None if address is None else _check_address(address)
    data = _dearmor_check(armored, PUBLIC_BLOCK, max_bytes)
    return _account_key(data, secret=False, address=expected, one_uid=True)


def fingerprint_of(armored_public: str) -> str:
    """The full fingerprint (upper-case hex) of a public key that passes `load_public`."""
    return load_public(armored_public).fingerprint


def _dearmor_check(armored: object, block: str, max_bytes: int) -> bytes:
    """Size, type and block label; the armor itself is Sequoia's to read."""
    if not isinstance(armored, str):
        raise BadAccountKey("the key must be an ASCII-armored string")
    if len(armored) > max_bytes:
        raise BadAccountKey(f"the armored key is larger than {max_bytes} bytes")
    if not armored.isascii():
        raise BadAccountKey("the armored key is not ASCII")
    text = armored.strip()
    if not text.startswith("-----BEGIN PGP "):
        raise BadAccountKey("not an ASCII-armored OpenPGP block")
    first = text.split("\n", 1)[0].rstrip("\r \t")
    if first != f"-----BEGIN PGP {block}-----":
        raise BadAccountKey(f"expected a PGP {block}, got {first.strip('-')[10:][:40]!r}")
    if text.count("-----BEGIN PGP ") != 1:
        raise BadAccountKey("more than one armored block")
    if not text.endswith(f"-----END PGP {block}-----"):
        raise BadAccountKey("the armor is not closed, or text follows it")
    return text.encode("ascii")


def _account_key(
    data: bytes, *, secret: bool, address: str | None, one_uid: bool
) -> PublicAccountKey:
    """Our policy for account keys, over Sequoia's; returns the key in minimal form."""
    from pysequoia.packet import PublicKeyAlgorithm, Tag

    try:
        packets = _cert_packets(data)
    except ValueError as exc:
        raise BadAccountKey(str(exc)) from None
    primary = packets[0]
    primary_tag, sub_tag = (
        (Tag.SecretKey, Tag.SecretSubkey) if secret else (Tag.PublicKey, Tag.PublicSubkey)
    )
    if primary.tag != primary_tag:
        raise BadAccountKey(
            "the packets are a public key, not a secret key"
            if secret
            else "the packets are a secret key, not a public key"
        )
    if any(p.tag in (Tag.SecretSubkey, Tag.PublicSubkey) and p.tag != sub_tag for p in packets):
        raise BadAccountKey("a key mixing secret and public subkey packets")
    if primary.key_algorithm not in (PublicKeyAlgorithm.EdDSA, PublicKeyAlgorithm.Ed25519):
        raise BadAccountKey(f"the primary key is not Ed25519 ({primary.key_algorithm!r})")
    uids = [p for p in packets if p.tag == Tag.UserID]
    if one_uid and len(uids) != 1:
        raise BadAccountKey(f"the key has {len(uids)} user ids, not exactly one")
    if address is not None and not any(
        _uid_address(u.user_id or "").casefold() == address.casefold() for u in uids
    ):
        raise BadAccountKey("the user id is not the expected address")
    try:
        chosen = _select(packets, address=None, need_signing=True)
    except _Refused as exc:
        raise BadAccountKey(str(exc)) from None
    return _finish(chosen, secret=secret)


def _finish(chosen: _Selection, *, secret: bool) -> PublicAccountKey:
    import pysequoia

    fingerprint = chosen.cert.fingerprint.upper()
    public_bytes = bytes(chosen.cert)  # Cert serialises public parts only
    public_armored = pysequoia.armor(public_bytes, pysequoia.ArmorKind.PublicKey)
    if not secret:
        return PublicAccountKey(fingerprint, public_armored)
    secret_bytes = b"".join(bytes(p) for p in chosen.packets)
    _probe(secret_bytes, chosen.cert)
    secret_armored = pysequoia.armor(secret_bytes, pysequoia.ArmorKind.SecretKey)
    return AccountKey(fingerprint, public_armored, secret_armored)


def _probe(secret_bytes: bytes, cert: Cert) -> None:
    """Show that the secret parts match the public ones (signatures alone do not prove it)."""
    import pysequoia

    failure = ""
    try:
        tsk = pysequoia.Tsk.from_bytes(secret_bytes)
        signed = pysequoia.sign(
            tsk.signer(), _PROBE, mode=pysequoia.SignatureMode.DETACHED, armor=False
        )
        verified = pysequoia.verify(
            _PROBE, store=lambda _ids: [cert], signature=pysequoia.Sig.from_bytes(signed)
        )
        if not verified.valid_sigs:
            failure = "its signing key does not make valid signatures"
        else:
            encrypted = pysequoia.encrypt(_PROBE, [cert], armor=False)
            if pysequoia.decrypt(encrypted, tsk.decryptor()).bytes != _PROBE:
                failure = "its encryption subkey does not decrypt"
    except Exception as exc:
        text = str(exc).split("\n", 1)[0]
        if "encrypted" in text.lower() or "password" in text.lower():
            raise BadAccountKey("the key is passphrase-protected") from None
        failure = f"probing it failed ({text[:80]})"
    if failure:
        raise BadAccountKey(f"the secret key material does not work: {failure}")


# ---------------------------------------------------------------------------------------------
# Selecting the minimal valid certificate (shared by account and peer keys)


class _Refused(Exception):
    """The key is not usable; the message says why (becomes BadAccountKey or False)."""


class _Selection(NamedTuple):
    packets: list[Packet]  # minimal, in order, secret packets kept if the input had them
    cert: Cert  # the public certificate of those packets
    valid_until: float  # the earliest expiry among the kept signatures and keys (or inf)


def _packets(data: bytes) -> list[Packet]:
    from pysequoia.packet import PacketPile

    return list(PacketPile.from_bytes(data))


def _cert_packets(data: bytes) -> list[Packet]:
    """Sequoia's canonical packets of one certificate.

    `Cert.from_bytes` first, because it reads a key and nothing else (a compressed packet is
    refused, never inflated); only its re-serialisation, which holds key, user id and signature
    packets, goes through `PacketPile` (which would recurse into containers).
    """
    import pysequoia

    try:
        tsk = pysequoia.Tsk.from_bytes(data)
        canonical = bytes(tsk)
    except Exception as exc:
        raise ValueError(f"not an OpenPGP key ({_first_line(exc)})") from None
    try:
        packets = _packets(canonical)
    except Exception as exc:
        raise ValueError(f"not an OpenPGP key ({_first_line(exc)})") from None
    if not packets:
        raise ValueError("not an OpenPGP key")
    for packet in packets:
        try:
            packet.tag  # noqa: B018 (pysequoia raises here for a tag it has no name for)
        except Exception as exc:
            raise ValueError(f"a packet of an unknown kind ({_first_line(exc)})") from None
    return packets


def _groups(packets: list[Packet]) -> list[tuple[Packet, list[Packet]]]:
    """[(key or user id packet, the signatures that follow it)], primary first."""
    from pysequoia.packet import Tag

    out: list[tuple[Packet, list[Packet]]] = []
    for p in packets:
        if p.tag == Tag.Signature:
            if out:
                out[-1][1].append(p)
        elif p.tag != Tag.Trust:
            out.append((p, []))
    return out


def _newest_first(sigs: list[Packet]) -> list[Packet]:
    return sorted(sigs, key=lambda s: _ts(s.signature_created), reverse=True)


def _ts(moment: datetime | None) -> float:
    return -math.inf if moment is None else moment.timestamp()


def _select(
    packets: list[Packet], *, address: str | None, need_signing: bool, keep_signing: bool = False
) -> _Selection:
    """The minimal valid certificate in `packets`, decided by Sequoia; `_Refused` if none.

    `need_signing`: the primary or a signing subkey must sign (account keys). `keep_signing`:
    a signing subkey is kept when the primary cannot sign (peer keys: without it, a key made
    the way Sequoia makes them could not verify its owner's signatures once stored).

    For each user id (matching `address`, if given) and each encryption-capable subkey, newest
    first: the pair must be valid with all its signatures (so revocations count), and then the
    newest self-signature and binding that keep it valid are kept, alone.
    """
    from pysequoia.packet import SignatureType, Tag

    groups = _groups(packets)
    primary, primary_sigs = groups[0]
    full = _cert(packets)
    if full is None:
        raise _Refused("not a well-formed key")
    if full.is_revoked:
        raise _Refused("the key carries a revocation")
    try:
        valid_uids = {str(u) for u in full.user_ids}
    except Exception:
        valid_uids = set()
    uid_groups = [g for g in groups if g[0].tag == Tag.UserID]
    if address is not None:
        uid_groups = [
            g
            for g in uid_groups
            if _uid_address(g[0].user_id or "").casefold() == address.casefold()
        ]
    uid_groups = [
        g
        for g in uid_groups
        if (g[0].user_id or "") in valid_uids and not _self_revoked(primary, g[1])
    ]
    try:
        expiration = full.expiration
    except Exception:  # Sequoia finds no valid binding for the primary at all
        raise _Refused("the user id has no valid self-signature") from None
    expired = expiration is not None and expiration.timestamp() <= time.time()
    if not uid_groups or expired:
        raise _Refused(
            "the key has expired" if expired else "the user id has no valid self-signature"
        )
    subkeys = [g for g in groups[1:] if g[0].tag in (Tag.PublicSubkey, Tag.SecretSubkey)]
    subkeys.sort(key=lambda g: _ts(g[0].key_created), reverse=True)
    # Direct-key signatures may hold the primary's expiry: kept whenever dropping them would
    # change what Sequoia says about expiry.
    direct = [s for s in primary_sigs if s.signature_type == SignatureType.DirectKey]

    signing: list[Packet] = []
    if need_signing:
        signing = _signing_part(primary, uid_groups, subkeys)
    elif keep_signing:
        with contextlib.suppress(_Refused):
            signing = _signing_part(primary, uid_groups, subkeys)

    # Sequoia's answer for one exact packet sequence, asked once: a key that is already minimal
    # (the usual Autocrypt keydata) is probed as the group and again as the choice, the same
    # bytes; each probe is an encryption (about 0.16 ms, most of a new key's check).
    probed: dict[bytes, tuple[Cert | None, bool]] = {}

    def probe(chosen: Sequence[Packet]) -> tuple[Cert | None, bool]:
        blob = b"".join(bytes(p) for p in chosen)
        if blob not in probed:
            cert = _cert(chosen)
            probed[blob] = (cert, _encrypts(cert))
        return probed[blob]

    for uid, uid_sigs in uid_groups:
        for sub, sub_sigs in subkeys:
            if sub in signing:
                continue
            if not probe([primary, *primary_sigs, uid, *uid_sigs, sub, *sub_sigs])[1]:
                continue
            selfsigs = _newest_first([s for s in uid_sigs if _is_certification(s)])
            bindings = _newest_first(
                [s for s in sub_sigs if s.signature_type == SignatureType.SubkeyBinding]
            )
            for selfsig in selfsigs:
                for binding in bindings:
                    for extra in ([], direct):
                        chosen = [primary, *extra, uid, selfsig, *signing, sub, binding]
                        cert, encrypts = probe(chosen)
                        if (
                            cert is None
                            or not encrypts
                            or cert.expiration != expiration
                            or (uid.user_id or "") not in {str(u) for u in cert.user_ids}
                            or (signing and not _signs(chosen))
                        ):
                            continue
                        return _Selection(chosen, cert, _valid_until(chosen))
    if not subkeys and not need_signing:
        # the primary itself may be the encryption key (RSA keys of old)
        for uid, uid_sigs in uid_groups:
            for selfsig in _newest_first([s for s in uid_sigs if _is_certification(s)]):
                chosen = [primary, uid, selfsig]
                cert = _cert(chosen)
                if cert is not None and _encrypts(cert) and cert.expiration == expiration:
                    return _Selection(chosen, cert, _valid_until(chosen))
    if not subkeys:
        raise _Refused("the key has no encryption subkey")
    raise _Refused("no encryption subkey with a valid binding signature")


def _self_revoked(primary: Packet, sigs: list[Packet]) -> bool:
    """Whether a user id carries a revocation that names the primary key as its issuer.

    pysequoia cannot say whether a user id is revoked: `Cert.user_ids` lists revoked ones too
    (checked with a GnuPG `--quick-revoke-uid`, pysequoia 0.1.35), and no call verifies one
    given signature. So such a revocation is believed unverified: a forged one can only make
    us refuse the key, which whoever could add it to the header could do anyway.
    """
    from pysequoia.packet import SignatureType

    return any(
        s.signature_type == SignatureType.CertificationRevocation
        and (
            (s.issuer_fingerprint is not None and s.issuer_fingerprint == primary.fingerprint)
            or (s.issuer_key_id is not None and s.issuer_key_id == primary.key_id)
        )
        for s in sigs
    )


def _signing_part(
    primary: Packet,
    uid_groups: list[tuple[Packet, list[Packet]]],
    subkeys: list[tuple[Packet, list[Packet]]],
) -> list[Packet]:
    """[] if the primary may sign, else a signing subkey and its newest valid binding."""
    from pysequoia.packet import SignatureType

    uid, uid_sigs = uid_groups[0]
    for selfsig in _newest_first([s for s in uid_sigs if _is_certification(s)]):
        if _signs([primary, uid, selfsig]):
            return []
    for sub, sub_sigs in subkeys:
        flags = [s.key_flags for s in sub_sigs]
        if not any(f is not None and f.signing for f in flags):
            continue
        for binding in _newest_first(
            [s for s in sub_sigs if s.signature_type == SignatureType.SubkeyBinding]
        ):
            if _signs([primary, uid, *uid_sigs, sub, binding]):
                return [sub, binding]
    raise _Refused("the key cannot sign (neither its primary nor a valid signing subkey)")


def _cert(packets: Sequence[Packet]) -> Cert | None:
    import pysequoia

    try:
        return pysequoia.Cert.from_bytes(b"".join(bytes(p) for p in packets))
    except Exception:
        return None


def _encrypts(cert: Cert | None) -> bool:
    """Whether Sequoia finds a valid, unrevoked, unexpired encryption key under its policy."""
    import pysequoia

    if cert is None:
        return False
    try:
        pysequoia.encrypt(b"", [cert], armor=False)
    except Exception:
        return False
    return True


def _signs(packets: Sequence[Packet]) -> bool:
    """Whether Sequoia finds a valid signing key among public `packets` (no secret needed).

    Asked through a signature check's key lookup: pysequoia has no direct query, so this
    relies on the key flags of valid bindings, read through the packet API, plus validity.
    """
    from pysequoia.packet import SignatureType

    cert = _cert(packets)
    if cert is None:
        return False
    try:
        if cert.is_revoked or not cert.user_ids:
            return False
    except Exception:
        return False
    for p in packets:
        if _is_certification(p) or p.signature_type == SignatureType.SubkeyBinding:
            flags = p.key_flags
            if flags is not None and flags.signing:
                return True
    return False


def _valid_until(packets: Sequence[Packet]) -> float:
    """The earliest expiry among the kept signatures and the keys they bind (inf if none)."""
    from pysequoia.packet import SignatureType

    marks: list[float] = []
    key_created = -math.inf
    for p in packets:
        if p.key_created is not None:
            key_created = p.key_created.timestamp()
        if p.signature_expiration_time is not None:
            marks.append(p.signature_expiration_time.timestamp())
        period = p.key_validity_period
        if (
            period is not None
            and period.total_seconds() > 0
            and (
                _is_certification(p)
                or p.signature_type in (SignatureType.SubkeyBinding, SignatureType.DirectKey)
            )
        ):
            marks.append(key_created + period.total_seconds())
    return min(marks, default=math.inf)


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120]


# ---------------------------------------------------------------------------------------------
# Correspondents' keys (Autocrypt keydata received in mail)
#
# Peer keys come from other OpenPGP programs: RSA, NIST curves, v6 keys and extra material
# (third-party certifications, user attributes, other subkeys) are accepted and cut away. The
# question is "can we encrypt to this key now?", answered with a bool, since a bad key in a
# header just means the header is ignored (Autocrypt Level 1, "keydata").

# Every keydata from a valid Autocrypt header is smaller: headers above 10 KiB are invalid and
# base64 inflates by 4/3, so 10 KiB of binary never refuses a legitimate header.
MAX_PEER_KEY_BYTES = 10 * 1024
MAX_PEER_PACKETS = 32
MAX_PEER_SUBKEYS = 8
PEER_CACHE_SIZE = 4096
# One key packet at most this long: an RSA-8192 key (1024-byte modulus) fits, a 16384-bit one,
# whose every signature check would cost seconds, does not. (GnuPG makes nothing above 8192.)
MAX_PEER_KEY_PACKET_BYTES = 1100

_PEER_CACHE: OrderedDict[bytes, _PeerVerdict] = OrderedDict()
_PEER_CACHE_LOCK = threading.Lock()


def usable_peer_key(
    keydata: bytes, *, now: float | None = None, address: str | None = None
) -> bool:
    """Whether a correspondent's Autocrypt keydata is a key we may encrypt to at `now`.

    With `address` (the Autocrypt `addr`), a valid user id must name it (case-insensitively).
    Verdicts are memoized (the same key arrives with every mail). Never raises on bad input: a
    key in a mail header is attacker-controlled, and a bad one just means the header is ignored.
    """
    return minimal_peer_keydata(keydata, now=now, address=address) is not None


def peer_key_fingerprint(
    keydata: bytes, *, now: float | None = None, address: str | None = None
) -> str | None:
    """The primary key's fingerprint (upper-case hex) if `usable_peer_key`, else None.

    Unusable keys get no fingerprint so that nothing is shown to the user that looks like a
    key they could rely on.
    """
    try:
        verdict = _peer_verdict(keydata, now, address)
    except Exception:
        log.debug("peer key check failed unexpectedly", exc_info=True)
        return None
    return verdict.fingerprint if verdict.minimal is not None else None


def minimal_peer_keydata(
    keydata: bytes, *, now: float | None = None, address: str | None = None
) -> bytes | None:
    """The minimal form of a usable peer key (primary, the user id that matched `address`, its
    self-signature, one encryption subkey, its binding), or None if it is not usable at `now`.

    This is what to store and pass on: a user id for any other address is not in it.
    """
    try:
        return _peer_verdict(keydata, now, address).minimal
    except Exception:
        log.debug("peer key check failed unexpectedly", exc_info=True)
        return None


class _PeerVerdict(NamedTuple):
    minimal: bytes | None  # None: not usable
    fingerprint: str | None
    # the verdict holds for every `now` before valid_until (no kept expiry is crossed)
    valid_until: float


_NEVER_USABLE = _PeerVerdict(None, None, math.inf)


def _peer_verdict(keydata: bytes, now: float | None, address: str | None) -> _PeerVerdict:
    """The verdict for `keydata` at `now`, cached by SHA-256 of the bytes and the address."""
    if not isinstance(keydata, bytes | bytearray):
        return _NEVER_USABLE
    if not keydata or len(keydata) > MAX_PEER_KEY_BYTES:
        return _NEVER_USABLE  # refused before hashing: no cache entry to evict others with
    at = time.time() if now is None else float(now)
    if math.isnan(at):
        return _NEVER_USABLE
    folded = None if address is None else address.casefold()
    digest = hashlib.sha256(bytes(keydata) + b"\x00" + (folded or "").encode()).digest()
    with _PEER_CACHE_LOCK:
        verdict = _PEER_CACHE.get(digest)
        if verdict is not None:
            _PEER_CACHE.move_to_end(digest)
    if verdict is None:
        verdict, cacheable = _peer_check(bytes(keydata), folded)
        if cacheable:
            with _PEER_CACHE_LOCK:
                _PEER_CACHE[digest] = verdict
                while len(_PEER_CACHE) > PEER_CACHE_SIZE:
                    _PEER_CACHE.popitem(last=False)
    if at >= verdict.valid_until:
        return _NEVER_USABLE
    return verdict


def _peer_check(data: bytes, address: str | None) -> tuple[_PeerVerdict, bool]:
    """Sequoia's verdict now, and whether it may be cached (not if a time lies in the future)."""
    from pysequoia.packet import Tag

    try:
        packets = _cert_packets(data)
    except ValueError:
        return _NEVER_USABLE, True
    if len(packets) > MAX_PEER_PACKETS or packets[0].tag != Tag.PublicKey:
        return _NEVER_USABLE, True
    keys = [p for p in packets if p.key_created is not None]
    if len(keys) - 1 > MAX_PEER_SUBKEYS or any(
        len(p.body) > MAX_PEER_KEY_PACKET_BYTES for p in keys
    ):
        return _NEVER_USABLE, True
    try:
        try:
            chosen = _select(packets, address=address, need_signing=False, keep_signing=True)
        except _Refused:  # (the signing subkey made it fail: what encrypts is what counts)
            chosen = _select(packets, address=address, need_signing=False)
    except _Refused as exc:
        log.debug("peer key refused: %s", exc)
        # a key or signature from the future (a clock ahead of ours) may become valid: retry
        wall = time.time()
        future = any(_ts(p.key_created) > wall or _ts(p.signature_created) > wall for p in packets)
        return _NEVER_USABLE, not future
    minimal = b"".join(bytes(p) for p in chosen.packets)
    return _PeerVerdict(minimal, chosen.cert.fingerprint.upper(), chosen.valid_until), True


# ---------------------------------------------------------------------------------------------
# Messages: decryption (Autocrypt headers inside encrypted mail) and encryption (tests, interop)

# Encrypted input is bounded too: above this, a message is not decrypted at all.
MAX_ENCRYPTED_MESSAGE_BYTES = 32 * 1024 * 1024


def decrypt_message(
    message: bytes, secrets: Sequence[AccountKey], *, max_output: int = 4 * 1024 * 1024
) -> bytes | None:
    """The plaintext (the decrypted literal data: the inner MIME entity) of an armored or
    binary OpenPGP message, trying each account key in turn; None if none decrypts it, or if
    the plaintext would be longer than `max_output` bytes.

    pysequoia's `decrypt` returns the whole plaintext at once, so a compressed message could
    inflate without limit (a 200 KB message of zeros holds 200 MB). `decrypt_file` streams
    instead: its output is a FIFO read by `head -c max_output+1` into a file, so writing stops
    (a broken pipe) one byte past the limit. Sequoia itself still buffers up to its own
    25 MiB before releasing plaintext, and holds the GIL while it decrypts.
    """
    if not isinstance(message, bytes | bytearray) or not message:
        return None
    if len(message) > MAX_ENCRYPTED_MESSAGE_BYTES or max_output < 0:
        return None
    import pysequoia

    with tempfile.TemporaryDirectory(prefix="sma-pgp-") as tmp:
        source = os.path.join(tmp, "in")
        with open(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(message)
        for key in secrets:
            try:
                decryptor = pysequoia.Tsk.from_bytes(key.secret_armored.encode()).decryptor()
            except Exception:
                log.debug("account key unusable for decryption", exc_info=True)
                continue
            plaintext = _bounded_decrypt(source, tmp, decryptor, max_output)
            if plaintext is not None:
                return plaintext
    return None


def _bounded_decrypt(source: str, tmp: str, decryptor: object, max_output: int) -> bytes | None:
    import pysequoia

    fifo = os.path.join(tmp, "fifo")
    sink = os.path.join(tmp, "out")
    for path in (fifo, sink):
        if os.path.lexists(path):
            os.unlink(path)
    os.mkfifo(fifo, 0o600)
    head = shutil.which("head")
    reader = (
        [head, "-c", str(max_output + 1), fifo]
        if head
        else [sys.executable, "-c", _READER, str(max_output + 1), fifo]
    )
    with open(os.open(sink, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        child = subprocess.Popen(reader, stdin=subprocess.DEVNULL, stdout=out)
    ok = False
    try:
        pysequoia.decrypt_file(source, fifo, decryptor)  # type: ignore[arg-type]
        ok = True
    except Exception as exc:
        log.debug("decryption failed: %s", _first_line(exc))
    finally:
        if not ok:
            _release_reader(fifo, child)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            ok = False
    if not ok:
        return None
    with open(sink, "rb") as f:
        plaintext = f.read(max_output + 1)
    return plaintext if len(plaintext) <= max_output else None


def _release_reader(fifo: str, child: subprocess.Popen[bytes], patience: float = 5.0) -> None:
    """The reader waits for a writer that never came (the message did not decrypt): be one for
    a moment, so it reads EOF and ends. A non-blocking open for writing fails (ENXIO) until the
    reader has reached its own open, which a just-started `head` may not have yet; giving up at
    the first ENXIO left it blocked until the 30 s wait below killed it, so every mail that no
    key of ours opens cost 30 s (tests/service/test_encrypted_ingest, seen in the durations)."""
    deadline = time.monotonic() + patience
    while child.poll() is None and time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:
            time.sleep(0.002)


_READER = (
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "with open(sys.argv[2], 'rb') as f:\n"
    "    sys.stdout.buffer.write(f.read(n))\n"
)


# ---------------------------------------------------------------------------------------------
# Small helpers


def _is_certification(sig: Packet) -> bool:
    """A user id self-signature (signature types 0x10 to 0x13)."""
    from pysequoia.packet import SignatureType

    return sig.signature_type in (
        SignatureType.GenericCertification,
        SignatureType.PersonaCertification,
        SignatureType.CasualCertification,
        SignatureType.PositiveCertification,
    )


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


def _as_timestamp(now: datetime | float) -> float:
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        now = now.timestamp()
    if isinstance(now, bool) or not isinstance(now, int | float) or not 0 <= now < 2**32:
        raise ValueError("now must be a time from 1970 to 2106")
    return float(now)
