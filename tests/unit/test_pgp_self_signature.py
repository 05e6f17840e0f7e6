"""The self-signature we write ourselves: Sequoia accepts it, and anything but the unprotected
v4 Ed25519 secret key it was made for is refused rather than signed with."""

from __future__ import annotations

from collections.abc import Callable

import pysequoia
import pytest
from pysequoia.packet import PacketPile, Tag

from native_host.adapters.pgp_self_signature import SelfSignatureError, certify_sign_binding


def _generated() -> tuple[list[bytes], bytes, bytes, int]:
    tsk = pysequoia.Tsk.generate("<a@example.org>", profile=pysequoia.Profile.RFC4880)
    packets = list(PacketPile.from_bytes(bytes(tsk)))
    primary = next(p for p in packets if p.tag == Tag.SecretKey)
    uid = next(p for p in packets if p.tag == Tag.UserID)
    assert primary.key_created is not None
    return (
        [bytes(primary), bytes(uid)],
        primary.body,
        uid.body,
        int(primary.key_created.timestamp()),
    )


def test_sequoia_finds_the_primary_signing_capable() -> None:
    (primary, uid), body, user_id, created = _generated()
    signature = certify_sign_binding(body, user_id, created + 1)
    cert = pysequoia.Tsk.from_bytes(primary + uid + signature)
    assert [str(u) for u in cert.extract_certificate().user_ids] == ["<a@example.org>"]
    signed = pysequoia.sign(cert.signer(), b"m", mode=pysequoia.SignatureMode.DETACHED, armor=False)
    assert (
        pysequoia.Sig.from_bytes(signed).issuer_fingerprint
        == cert.extract_certificate().fingerprint
    )


def test_a_signature_over_another_user_id_does_not_verify() -> None:
    (primary, uid), body, _, created = _generated()
    signature = certify_sign_binding(body, b"<mallory@example.org>", created + 1)
    cert = pysequoia.Cert.from_bytes(primary + uid + signature)
    try:
        valid = [str(u) for u in cert.user_ids]
    except Exception:  # Sequoia: the primary has no valid binding at all
        valid = []
    assert valid == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:5] + b"\x01" + b[6:], "not a v4 EdDSA"),  # RSA algorithm octet
        (lambda b: b"\x06" + b[1:], "not a v4 EdDSA"),
        (lambda b: b[:8] + b"\x00" + b[9:], "not an Ed25519 key"),  # OID changed
        (lambda b: b[:-2] + bytes([b[-2] ^ 1, b[-1]]), "checksum"),
        (lambda b: b[:50], "truncated|protected|malformed"),
        (lambda b: b[:51] + b"\xfe" + b[52:], "protected"),  # S2K usage octet: encrypted
    ],
)
def test_refuses_what_it_was_not_made_for(damage: Callable[[bytes], bytes], message: str) -> None:
    _, body, user_id, created = _generated()
    assert body[51] == 0  # the S2K usage octet after 1+4+1+1+9+2+33 public octets
    with pytest.raises(SelfSignatureError, match=message):
        certify_sign_binding(damage(body), user_id, created)
