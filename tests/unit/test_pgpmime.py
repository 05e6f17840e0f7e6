"""PGP/MIME structure (RFC 3156): the OpenPGP message is found only where the sender put its
protected payload, and every malformed or oversized shape is refused with InvalidMessage."""

from __future__ import annotations

import base64

import pytest

from native_host.core.autocrypt import InvalidMessage
from native_host.core.pgpmime import (
    MAX_ENCRYPTED_BYTES,
    MAX_PARTS,
    encrypted_payload,
    is_pgp_mime,
)

ARMORED = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhF4D\r\n-----END PGP MESSAGE-----\r\n"
HEAD = (
    b"From: a@example.org\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
    b' boundary="XyZ"\r\n\r\n'
)


def pgp_mime(data: bytes = ARMORED, *, encoding: str = "7bit", head: bytes = HEAD) -> bytes:
    return (
        head
        + b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
        + b"--XyZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        + b"--XyZ\r\nContent-Type: application/octet-stream; name=encrypted.asc\r\n"
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + data
        + b"\r\n--XyZ--\r\n"
    )


def test_the_second_part_is_the_openpgp_message() -> None:
    assert is_pgp_mime(pgp_mime())
    assert encrypted_payload(pgp_mime()).strip() == ARMORED.strip()


def test_lf_line_endings_work_too() -> None:
    assert (
        encrypted_payload(pgp_mime().replace(b"\r\n", b"\n")).strip()
        == ARMORED.replace(b"\r\n", b"\n").strip()
    )


def test_base64_transfer_encoding_is_decoded() -> None:
    binary = bytes(range(256))
    wrapped = base64.encodebytes(binary).replace(b"\n", b"\r\n")
    assert encrypted_payload(pgp_mime(wrapped, encoding="base64")) == binary


def test_other_protocols_and_types_are_not_pgp_mime() -> None:
    smime = HEAD.replace(b"application/pgp-encrypted", b"application/pkcs7-mime")
    assert not is_pgp_mime(pgp_mime(head=smime))
    with pytest.raises(InvalidMessage, match="not a PGP/MIME"):
        encrypted_payload(pgp_mime(head=smime))
    assert not is_pgp_mime(b"From: a@example.org\r\nContent-Type: text/plain\r\n\r\nhi")


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidMessage, match="above"):
        encrypted_payload(pgp_mime(b"A" * MAX_ENCRYPTED_BYTES))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b"--XyZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--XyZ--\r\n",
            "1 parts",
        ),
        (
            b"--XyZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nV\r\n--XyZ\r\n\r\nx\r\n",
            "close",
        ),
        (
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\nV\r\n--XyZ\r\n"
            b"Content-Type: application/octet-stream\r\n\r\nx\r\n--XyZ--\r\n",
            "first part",
        ),
        (
            b"--XyZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nV\r\n--XyZ\r\n"
            b"Content-Type: text/html\r\n\r\nx\r\n--XyZ--\r\n",
            "second part",
        ),
        (
            b"--XyZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nV\r\n--XyZ\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uue\r\n\r\n"
            b"x\r\n--XyZ--\r\n",
            "transfer encoding",
        ),
        (b"--XyZ\r\n\r\nx\r\n" * (MAX_PARTS + 2) + b"--XyZ--\r\n", "more than"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        encrypted_payload(HEAD + body)


def test_missing_or_odd_boundary_is_refused() -> None:
    head = HEAD.replace(b'boundary="XyZ"', b'boundary="a\x01b"')
    with pytest.raises(InvalidMessage, match="boundary"):
        encrypted_payload(pgp_mime(head=head))
