"""Correspondents' keys: which Autocrypt keydata we may encrypt to, and that deciding is cheap
on repeat and never crashes on what a mail header may carry."""

from __future__ import annotations

import contextlib
import random
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_host.adapters import pgp

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T = NOW.timestamp()
HOUR = 3600.0
DAY = 24 * HOUR


@contextlib.contextmanager
def _quiet() -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgpy
        import pgpy.constants

        yield pgpy


def _sections(data: bytes) -> list[list[bytes]]:
    """The key as [key or user id packet, its signatures...] groups of raw packets."""
    out: list[list[bytes]] = []
    for p in pgp._packets(data):
        if p.tag == pgp.TAG_SIGNATURE:
            out[-1].append(p.raw)
        else:
            out.append([p.raw])
    return out


def _join(*sections: list[bytes]) -> bytes:
    return b"".join(b"".join(s) for s in sections)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _ed25519(pgpy: Any, uid: str, *, subkey: bool = True, **uid_prefs: Any) -> Any:
    c = pgpy.constants
    k = pgpy.PGPKey.new(c.PubKeyAlgorithm.EdDSA, c.EllipticCurveOID.Ed25519, created=NOW)
    k.add_uid(
        pgpy.PGPUID.new(uid),
        usage={c.KeyFlags.Certify, c.KeyFlags.Sign},
        hash=c.HashAlgorithm.SHA256,
        created=NOW,
        **uid_prefs,
    )
    if subkey:
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519, created=NOW)
        k.add_subkey(
            sub, usage={c.KeyFlags.EncryptCommunications}, hash=c.HashAlgorithm.SHA256, created=NOW
        )
    return k


def _fingerprint(key: Any) -> str:
    return str(key.fingerprint).replace(" ", "").upper()


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty cache, so a verdict is always computed by the test."""
    monkeypatch.setattr(pgp, "_PEER_CACHE", OrderedDict())


@pytest.fixture(scope="module")
def ed() -> Any:
    """Ed25519 primary, Cv25519 encryption subkey: what Autocrypt clients send."""
    with _quiet() as pgpy:
        return _ed25519(pgpy, "Bob <bob@example.org>")


@pytest.fixture(scope="module")
def ed_keydata(ed: Any) -> bytes:
    return bytes(ed.pubkey)


@dataclass(frozen=True)
class Rsa:
    keydata: bytes  # primary, both user ids, the subkey and its binding
    sign_uid: list[bytes]  # user id whose self-signature allows certify and sign only
    encrypt_uid: list[bytes]  # user id whose self-signature also allows encryption
    primary: list[bytes]
    subkey: list[bytes]  # subkey packet and its binding (flags: encrypt communications)
    binding_without_flags: bytes
    fingerprint: str
    # the RSA subkey unbound, and a Cv25519 subkey "bound" by that subkey instead of the primary
    bound_by_subkey: bytes


@pytest.fixture(scope="module")
def rsa() -> Rsa:
    """One RSA 2048 primary and one RSA 2048 subkey, cut into the keys the tests need."""
    with _quiet() as pgpy:
        c = pgpy.constants
        k = pgpy.PGPKey.new(c.PubKeyAlgorithm.RSAEncryptOrSign, 2048, created=NOW)
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.RSAEncryptOrSign, 2048, created=NOW)
        sign = {c.KeyFlags.Certify, c.KeyFlags.Sign}
        encrypt = {c.KeyFlags.EncryptCommunications, c.KeyFlags.EncryptStorage}
        k.add_uid(pgpy.PGPUID.new("<rsa@example.org>"), usage=sign, created=NOW)
        k.add_uid(pgpy.PGPUID.new("<rsa-enc@example.org>"), usage=sign | encrypt, created=NOW)
        k.add_subkey(sub, usage={c.KeyFlags.EncryptCommunications}, created=NOW)
        bound = next(iter(k.subkeys.values()))
        # an RSA subkey can sign, so pgpy cross-signs and allows a binding without key flags
        no_flags = bytes(k.bind(bound, hash=c.HashAlgorithm.SHA256, created=NOW))
        keydata = bytes(k.pubkey)
        fingerprint = _fingerprint(k)
        cv = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.Curve25519, created=NOW)
        k.add_subkey(cv, usage={c.KeyFlags.EncryptCommunications}, created=NOW)
        cv_bound = k.subkeys[cv.fingerprint.keyid]
        sig = pgpy.PGPSignature.new(
            c.SignatureType.Subkey_Binding,
            bound.key_algorithm,  # RSA, like the primary's
            c.HashAlgorithm.SHA256,
            bound.fingerprint.keyid,
            created=NOW,
        )
        sig._signature.subpackets.addnew(
            "KeyFlags", hashed=True, flags={c.KeyFlags.EncryptCommunications}
        )
        by_subkey = bytes(bound._sign(cv_bound, sig))
        cv_packet = _sections(bytes(cv_bound.pubkey))[0][0]
    sections = _sections(keydata)
    uid_of = {s[0]: s for s in sections if pgp._packets(s[0])[0].tag == pgp.TAG_USER_ID}
    (sign_uid,) = [s for raw, s in uid_of.items() if b"<rsa@" in raw]
    (encrypt_uid,) = [s for raw, s in uid_of.items() if b"<rsa-enc@" in raw]
    (subkey,) = [s for s in sections if pgp._packets(s[0])[0].tag == pgp.TAG_PUBLIC_SUBKEY]
    evil = _join(sections[0], sign_uid, subkey[:1], [cv_packet, by_subkey])
    return Rsa(keydata, sign_uid, encrypt_uid, sections[0], subkey, no_flags, fingerprint, evil)


# ---------------------------------------------------------------------------------------------
# Keys we may encrypt to


def test_ed25519_with_cv25519_subkey_is_usable(ed: Any, ed_keydata: bytes) -> None:
    assert pgp.usable_peer_key(ed_keydata)
    assert pgp.peer_key_fingerprint(ed_keydata) == _fingerprint(ed)


def test_our_own_account_keydata_is_usable() -> None:
    key = pgp.generate_account_key("alice@example.org", NOW)
    assert pgp.usable_peer_key(key.keydata())
    assert pgp.peer_key_fingerprint(key.keydata()) == key.fingerprint


def test_rsa_with_rsa_encryption_subkey_is_usable(rsa: Rsa) -> None:
    assert pgp.usable_peer_key(rsa.keydata)
    # and it is the subkey that makes it usable: that user id allows no encryption
    assert pgp.usable_peer_key(_join(rsa.primary, rsa.sign_uid, rsa.subkey))
    assert pgp.peer_key_fingerprint(rsa.keydata) == rsa.fingerprint


def test_rsa_primary_flagged_for_encryption_is_usable_alone(rsa: Rsa) -> None:
    assert pgp.usable_peer_key(_join(rsa.primary, rsa.encrypt_uid))


def test_rsa_subkey_bound_without_key_flags_is_usable(rsa: Rsa) -> None:
    """Older keys carry no key flags: then an RSA, ElGamal or ECDH subkey is for encryption."""
    data = _join(rsa.primary, rsa.sign_uid, [rsa.subkey[0], rsa.binding_without_flags])
    assert [p.tag for p in pgp._packets(data)] == [6, 13, 2, 14, 2]
    assert pgp.usable_peer_key(data)


def test_nist_p256_key_is_usable() -> None:
    with _quiet() as pgpy:
        c = pgpy.constants
        k = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDSA, c.EllipticCurveOID.NIST_P256, created=NOW)
        k.add_uid(
            pgpy.PGPUID.new("<nist@example.org>"),
            usage={c.KeyFlags.Certify, c.KeyFlags.Sign},
            created=NOW,
        )
        sub = pgpy.PGPKey.new(c.PubKeyAlgorithm.ECDH, c.EllipticCurveOID.NIST_P256, created=NOW)
        k.add_subkey(sub, usage={c.KeyFlags.EncryptStorage}, created=NOW)
        data = bytes(k.pubkey)
    assert pgp.usable_peer_key(data)


def test_material_we_do_not_need_is_skipped_not_refused(ed_keydata: bytes) -> None:
    primary, uid, sub = _sections(ed_keydata)
    trust = bytes([0xC0 | pgp.TAG_TRUST, 2, 0, 0])
    v3_sig = bytes([0xC0 | pgp.TAG_SIGNATURE, 3, 3, 0, 0])
    unreadable_sig = bytes([0xC0 | pgp.TAG_SIGNATURE, 6, 4, 0x10, 22, 8, 0, 0])
    user_attribute = [bytes([0xC0 | 17, 3, 2, 0, 0]), b"".join(uid[1:])]
    data = _join(primary, [uid[0], trust, v3_sig, unreadable_sig, *uid[1:]], user_attribute, sub)
    assert pgp.usable_peer_key(data)


# ---------------------------------------------------------------------------------------------
# Keys we may not encrypt to


def test_sign_only_key_is_not_usable() -> None:
    with _quiet() as pgpy:
        data = bytes(_ed25519(pgpy, "<sign-only@example.org>", subkey=False).pubkey)
    assert not pgp.usable_peer_key(data)
    assert pgp.peer_key_fingerprint(data) is None


def test_rsa_sign_only_primary_is_not_usable(rsa: Rsa) -> None:
    assert not pgp.usable_peer_key(_join(rsa.primary, rsa.sign_uid))


def test_key_without_user_id_is_not_usable(ed_keydata: bytes) -> None:
    primary, _, sub = _sections(ed_keydata)
    assert not pgp.usable_peer_key(_join(primary, sub))


def test_subkey_without_binding_is_not_usable(ed_keydata: bytes) -> None:
    primary, uid, sub = _sections(ed_keydata)
    assert pgp.usable_peer_key(_join(primary, uid, sub))
    assert not pgp.usable_peer_key(_join(primary, uid, sub[:1]))


@pytest.mark.parametrize("where", ["hashed area", "signature value"])
def test_subkey_with_corrupted_binding_is_not_usable(ed_keydata: bytes, where: str) -> None:
    primary, uid, (subkey, binding) = _sections(ed_keydata)
    # header 2 bytes, then version, type, algorithms, hashed length; last bytes are the MPIs
    index = 8 if where == "hashed area" else len(binding) - 3
    assert not pgp.usable_peer_key(_join(primary, uid, [subkey, _flip(binding, index)]))


def test_subkey_bound_by_another_key_is_not_usable(ed_keydata: bytes) -> None:
    with _quiet() as pgpy:
        other = bytes(_ed25519(pgpy, "<mallory@example.org>").pubkey)
    primary, uid, _ = _sections(ed_keydata)
    _, _, foreign_sub = _sections(other)
    assert not pgp.usable_peer_key(_join(primary, uid, foreign_sub))


def test_only_the_primary_key_binds_subkeys(rsa: Rsa) -> None:
    """An unbound RSA subkey (attacker's) signing a binding for another subkey binds nothing."""
    tags = [p.tag for p in pgp._packets(rsa.bound_by_subkey)]
    assert tags == [6, 13, 2, 14, 14, 2]
    assert not pgp.usable_peer_key(rsa.bound_by_subkey)


def test_user_id_with_corrupted_self_signature_is_not_usable(ed_keydata: bytes) -> None:
    primary, (uid, selfsig), sub = _sections(ed_keydata)
    assert not pgp.usable_peer_key(_join(primary, [uid, _flip(selfsig, len(selfsig) - 3)], sub))
    assert not pgp.usable_peer_key(_join(primary, [uid], sub))


def test_user_id_self_signature_is_bound_to_the_user_id(ed_keydata: bytes) -> None:
    primary, (uid, selfsig), sub = _sections(ed_keydata)
    other_uid = uid.replace(b"bob@", b"eve@")
    assert other_uid != uid
    assert not pgp.usable_peer_key(_join(primary, [other_uid, selfsig], sub))


def test_expired_encryption_subkey_is_usable_only_before_expiry() -> None:
    with _quiet() as pgpy:
        c = pgpy.constants
        k = _ed25519(pgpy, "<expiring@example.org>")
        sub = next(iter(k.subkeys.values()))
        # pgpy's bind() ignores key_expiration, so the binding is made the way bind() makes it
        sig = pgpy.PGPSignature.new(
            c.SignatureType.Subkey_Binding,
            k.key_algorithm,
            c.HashAlgorithm.SHA256,
            k.fingerprint.keyid,
            created=NOW,
        )
        sig._signature.subpackets.addnew(
            "KeyFlags", hashed=True, flags={c.KeyFlags.EncryptCommunications}
        )
        sig._signature.subpackets.addnew("KeyExpirationTime", hashed=True, expires=timedelta(1))
        binding = bytes(k._sign(sub, sig))
        primary, uid, (subkey, _) = _sections(bytes(k.pubkey))
    data = _join(primary, uid, [subkey, binding])
    assert pgp.usable_peer_key(data, now=T + HOUR)
    assert not pgp.usable_peer_key(data, now=T + 2 * DAY)
    assert not pgp.usable_peer_key(data)  # the wall clock is long past 2024-05-02
    assert pgp.peer_key_fingerprint(data, now=T + HOUR) == _fingerprint(k)
    assert pgp.peer_key_fingerprint(data, now=T + 2 * DAY) is None


def test_expired_primary_is_usable_only_before_expiry() -> None:
    with _quiet() as pgpy:
        data = bytes(_ed25519(pgpy, "<short@example.org>", key_expiration=timedelta(1)).pubkey)
    assert pgp.usable_peer_key(data, now=T + HOUR)
    assert not pgp.usable_peer_key(data, now=T + DAY)
    assert not pgp.usable_peer_key(data)


def test_a_newer_direct_key_signature_can_set_the_expiry() -> None:
    with _quiet() as pgpy:
        c = pgpy.constants
        k = _ed25519(pgpy, "<direct@example.org>")
        sig = pgpy.PGPSignature.new(
            c.SignatureType.DirectlyOnKey,
            k.key_algorithm,
            c.HashAlgorithm.SHA256,
            k.fingerprint.keyid,
            created=NOW + timedelta(hours=1),
        )
        sig._signature.subpackets.addnew("KeyExpirationTime", hashed=True, expires=timedelta(1))
        direct = bytes(k._sign(k, sig))
        primary, uid, sub = _sections(bytes(k.pubkey))
    data = _join([*primary, direct], uid, sub)
    assert pgp.usable_peer_key(data, now=T + 2 * HOUR)
    assert not pgp.usable_peer_key(data, now=T + 2 * DAY)
    # a direct-key signature alone binds no user id
    assert not pgp.usable_peer_key(_join([*primary, direct], uid[:1], sub), now=T + 2 * HOUR)


def test_revoked_primary_is_not_usable() -> None:
    with _quiet() as pgpy:
        k = _ed25519(pgpy, "<revoked@example.org>")
        before = bytes(k.pubkey)
        k |= k.revoke(k)
        revoked = bytes(k.pubkey)
    assert pgp.usable_peer_key(before)
    assert [p.tag for p in pgp._packets(revoked)] == [6, 2, 13, 2, 14, 2]
    assert not pgp.usable_peer_key(revoked)
    # a revocation that does not verify revokes nothing
    primary, *rest = _sections(revoked)
    forged = [primary[0], _flip(primary[1], len(primary[1]) - 3)]
    assert pgp.usable_peer_key(_join(forged, *rest))


def test_revoked_subkey_is_not_usable() -> None:
    with _quiet() as pgpy:
        k = _ed25519(pgpy, "<subrevoked@example.org>")
        sub = next(iter(k.subkeys.values()))
        sub |= k.revoke(sub)
        data = bytes(k.pubkey)
    assert [p.tag for p in pgp._packets(data)] == [6, 13, 2, 14, 2, 2]
    assert not pgp.usable_peer_key(data)


def test_revoked_user_id_binds_nothing() -> None:
    with _quiet() as pgpy:
        k = _ed25519(pgpy, "<uidrevoked@example.org>")
        uid = k.userids[0]
        uid |= k.revoke(uid)
        data = bytes(k.pubkey)
    assert [p.tag for p in pgp._packets(data)] == [6, 13, 2, 2, 14, 2]
    assert not pgp.usable_peer_key(data)


def test_secret_key_is_not_keydata(ed: Any) -> None:
    secret = bytes(ed)
    assert pgp._packets(secret)[0].tag == pgp.TAG_SECRET_KEY
    assert not pgp.usable_peer_key(secret)
    primary, uid, _ = _sections(bytes(ed.pubkey))
    _, _, secret_sub = _sections(secret)
    assert not pgp.usable_peer_key(_join(primary, uid, secret_sub))


def test_two_keys_in_one_keydata_are_refused(ed_keydata: bytes, rsa: Rsa) -> None:
    assert not pgp.usable_peer_key(ed_keydata + rsa.keydata)


# ---------------------------------------------------------------------------------------------
# Garbage and bounds


def test_every_truncation_is_refused_cleanly(ed_keydata: bytes) -> None:
    for n in range(len(ed_keydata)):
        assert pgp.usable_peer_key(ed_keydata[:n]) is False, n


@pytest.mark.parametrize("size", [0, 1, 2, 100, 5000, pgp.MAX_PEER_KEY_BYTES])
def test_random_bytes_are_refused_cleanly(size: int) -> None:
    blob = random.Random(size).randbytes(size)
    assert pgp.usable_peer_key(blob) is False
    assert pgp.peer_key_fingerprint(blob) is None
    assert pgp.usable_peer_key(b"\x99" + blob[1:]) is False  # an old-format public key header


def test_not_bytes_is_refused_cleanly() -> None:
    for value in (None, "keydata", 42, [1, 2]):
        assert pgp.usable_peer_key(value) is False  # type: ignore[arg-type]
        assert pgp.peer_key_fingerprint(value) is None  # type: ignore[arg-type]


@pytest.fixture
def pgpy_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[None]]:
    """Arm with the returned function; from then on every entry into `_pgpy()` is recorded
    (and fails, which usable_peer_key swallows: hence recorded, not raised)."""
    calls: list[None] = []

    def arm() -> list[None]:
        def recording() -> Any:
            calls.append(None)
            raise AssertionError("pgpy must not be reached")

        monkeypatch.setattr(pgp, "_pgpy", recording)
        return calls

    return arm


def test_oversized_keydata_is_refused_before_pgpy(
    ed_keydata: bytes, pgpy_calls: Callable[[], list[None]]
) -> None:
    calls = pgpy_calls()
    # trust packets are otherwise ignored, so only the size can refuse this
    padding = bytes([0xC0 | pgp.TAG_TRUST, 255]) + (pgp.MAX_PEER_KEY_BYTES).to_bytes(4, "big")
    blob = ed_keydata + padding + bytes(pgp.MAX_PEER_KEY_BYTES)
    assert not pgp.usable_peer_key(blob)
    assert not pgp.usable_peer_key(bytes(pgp.MAX_PEER_KEY_BYTES + 1))
    assert not calls


def test_too_many_packets_are_refused_before_pgpy(
    ed_keydata: bytes, pgpy_calls: Callable[[], list[None]]
) -> None:
    trust = bytes([0xC0 | pgp.TAG_TRUST, 0])
    at_limit = ed_keydata + trust * (pgp.MAX_PEER_PACKETS - 5)
    assert pgp.usable_peer_key(at_limit)
    calls = pgpy_calls()
    assert not pgp.usable_peer_key(at_limit + trust)
    assert not calls


def test_too_many_subkeys_are_refused_before_pgpy(
    ed_keydata: bytes, pgpy_calls: Callable[[], list[None]]
) -> None:
    primary, uid, sub = _sections(ed_keydata)
    assert pgp.usable_peer_key(_join(primary, uid, *[sub] * pgp.MAX_PEER_SUBKEYS))
    calls = pgpy_calls()
    assert not pgp.usable_peer_key(_join(primary, uid, *[sub] * (pgp.MAX_PEER_SUBKEYS + 1)))
    assert not calls


def _mpi(value: int) -> bytes:
    return value.bit_length().to_bytes(2, "big") + value.to_bytes((value.bit_length() + 7) // 8)


@pytest.mark.parametrize(
    ("modulus_bits", "exponent", "weighed_by_pgpy"),
    [
        (2048, 65537, True),  # the control: shaped right, so it gets as far as pgpy
        (1024, 65537, False),
        (8200, 65537, False),
        (2048, 2**64 + 1, False),
    ],
)
def test_rsa_size_bounds_are_checked_before_pgpy(
    rsa: Rsa,
    pgpy_calls: Callable[[], list[None]],
    modulus_bits: int,
    exponent: int,
    weighed_by_pgpy: bool,
) -> None:
    modulus = (1 << (modulus_bits - 1)) | 1
    body = bytes([4]) + int(T).to_bytes(4, "big") + bytes([1]) + _mpi(modulus) + _mpi(exponent)
    primary = bytes([0xC0 | pgp.TAG_PUBLIC_KEY, 255]) + len(body).to_bytes(4, "big") + body
    calls = pgpy_calls()
    assert not pgp.usable_peer_key(_join([primary], rsa.sign_uid, rsa.subkey))
    assert bool(calls) is weighed_by_pgpy


@settings(max_examples=60)
@given(data=st.data())
def test_any_corruption_gives_a_bool(ed_keydata: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(ed_keydata) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = ed_keydata[:index] + bytes([value]) + ed_keydata[index + 1 :]
    assert pgp.usable_peer_key(mutated) in (True, False)


def test_nothing_reaches_stdout(ed_keydata: bytes, capfd: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        pgp.usable_peer_key(ed_keydata)
        pgp.usable_peer_key(ed_keydata[:-1])
    out, _ = capfd.readouterr()
    assert out == ""


# ---------------------------------------------------------------------------------------------
# The cache


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The `now` of every verdict actually computed (not served from the cache)."""
    seen: list[float] = []
    real: Callable[[bytes, float], Any] = pgp._peer_check

    def counting(data: bytes, now: float) -> Any:
        seen.append(now)
        return real(data, now)

    monkeypatch.setattr(pgp, "_peer_check", counting)
    return seen


def test_a_known_key_is_not_checked_again(ed_keydata: bytes, checks: list[float]) -> None:
    assert pgp.usable_peer_key(ed_keydata)
    assert pgp.usable_peer_key(ed_keydata)
    assert pgp.peer_key_fingerprint(ed_keydata) is not None
    assert pgp.usable_peer_key(bytearray(ed_keydata))  # type: ignore[arg-type]
    assert len(checks) == 1
    assert not pgp.usable_peer_key(ed_keydata[:-1])
    assert not pgp.usable_peer_key(ed_keydata[:-1])
    assert len(checks) == 2


def test_a_cached_verdict_is_not_reused_across_an_expiry(checks: list[float]) -> None:
    with _quiet() as pgpy:
        data = bytes(_ed25519(pgpy, "<cached@example.org>", key_expiration=timedelta(1)).pubkey)
    assert pgp.usable_peer_key(data, now=T + HOUR)
    assert pgp.usable_peer_key(data, now=T + 2 * HOUR)  # same side of the expiry: cached
    assert len(checks) == 1
    assert not pgp.usable_peer_key(data, now=T + 2 * DAY)
    assert not pgp.usable_peer_key(data, now=T + 3 * DAY)
    assert len(checks) == 2
    assert pgp.usable_peer_key(data, now=T + HOUR)
    assert len(checks) == 3


def test_the_cache_is_bounded_and_least_recently_used_goes_first(
    ed_keydata: bytes, rsa: Rsa, checks: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgp, "PEER_CACHE_SIZE", 2)
    own = pgp.generate_account_key("carol@example.org", NOW).keydata()
    for data in (ed_keydata, rsa.keydata, ed_keydata, own):  # rsa is the least recent
        assert pgp.usable_peer_key(data)
    assert len(pgp._PEER_CACHE) == 2
    assert len(checks) == 3
    pgp.usable_peer_key(ed_keydata)
    assert len(checks) == 3
    pgp.usable_peer_key(rsa.keydata)
    assert len(checks) == 4


def test_concurrent_checks_agree(ed_keydata: bytes, rsa: Rsa) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        for data in (ed_keydata, rsa.keydata, ed_keydata[:-1]) * 5:
            ok = pgp.usable_peer_key(data)
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 2 * 5 * 8
    assert results.count(False) == 5 * 8
