"""PGP/MIME (RFC 3156) structure: find the OpenPGP message inside a multipart/encrypted mail.

Pure and deliberately shallow. Autocrypt reads only the root of each layer: the outer message
must itself be multipart/encrypted (an encrypted part nested in a multipart/mixed, as a
forwarded mail or a list footer makes, is not the sender's protected payload), it has exactly
the two parts RFC 3156 names, and of the decrypted entity only the root header block counts
(Level 1 puts Autocrypt-Gossip "in the root MIME part of the encrypted message payload"; the
protected-headers convention puts the protected headers there too). So the nesting depth is
fixed at one on each side and nothing here recurses, whatever the input; the sizes are bounded
by the caller (`MAX_ENCRYPTED_BYTES`) and by `autocrypt.message_headers` for the inner block.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from native_host.core.autocrypt import MAX_HEADER_BLOCK_BYTES, InvalidMessage, header_block

# A whole encrypted mail the host reads. It arrives base64 in one native-messaging frame, which
# the host caps at 1 MiB (framing.MAX_FRAME_BYTES): 700 KiB is 956 KB of base64, leaving room
# for the JSON around it. Larger mail (attachments) counts by its outer headers alone.
MAX_ENCRYPTED_BYTES = 700 * 1024
# The decrypted inner entity kept in memory; a larger plaintext is not read (decrypt_message's
# max_output). Only its header block is used.
MAX_INNER_BYTES = 4 * 1024 * 1024
MAX_PARTS = 8  # a PGP/MIME body has two; a few more allow for a stray preamble split
MAX_PART_HEADER_BYTES = 4 * 1024

_BOUNDARY_OK = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{1,70}")


def is_pgp_mime(raw: bytes) -> bool:
    """Whether the message's root is multipart/encrypted with the OpenPGP protocol."""
    msg = _headers(header_block(raw))
    return (
        msg.get_content_type().lower() == "multipart/encrypted"
        and str(msg.get_param("protocol", "")).strip().lower() == "application/pgp-encrypted"
    )


def encrypted_payload(raw: bytes) -> bytes:
    """The OpenPGP message of a PGP/MIME mail (its second part's body, transfer-decoded).

    Raises InvalidMessage if the mail is larger than MAX_ENCRYPTED_BYTES, is not PGP/MIME, or
    its body does not have the RFC 3156 shape.
    """
    if len(raw) > MAX_ENCRYPTED_BYTES:
        raise InvalidMessage(f"encrypted message above {MAX_ENCRYPTED_BYTES} bytes")
    head = header_block(raw)
    msg = _headers(head)
    if not is_pgp_mime(raw):
        raise InvalidMessage("not a PGP/MIME encrypted message")
    boundary = msg.get_boundary()
    if boundary is None or not _BOUNDARY_OK.fullmatch(boundary):
        raise InvalidMessage("multipart/encrypted without a usable boundary")
    body = raw[len(head) :].lstrip(b"\r\n")
    parts = _split(body, boundary.encode("ascii"))
    if len(parts) != 2:
        raise InvalidMessage(f"PGP/MIME body has {len(parts)} parts, not 2")
    control, data = parts
    if _part_type(control)[0] != "application/pgp-encrypted":
        raise InvalidMessage("first part is not application/pgp-encrypted")
    content_type, encoding, payload = _part_type(data)
    if content_type != "application/octet-stream":
        raise InvalidMessage("second part is not application/octet-stream")
    if encoding == "base64":
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", payload), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessage("second part is not valid base64") from None
    if encoding not in ("", "7bit", "8bit", "binary"):
        raise InvalidMessage(f"unsupported transfer encoding {encoding[:20]!r}")
    return payload


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines up to `--boundary--` (RFC 2046 section 5.1.1)."""
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
            if len(parts) > MAX_PARTS:
                raise InvalidMessage(f"more than {MAX_PARTS} parts")
        if match.group(1):  # the close delimiter
            return parts
        start = match.end()
    raise InvalidMessage("multipart body without a close delimiter")


def _part_type(part: bytes) -> tuple[str, str, bytes]:
    """(content type, transfer encoding, body) of one body part."""
    if part.startswith((b"\r\n", b"\n")):  # no header fields: text/plain by default
        return "text/plain", "", part.lstrip(b"\r\n")
    head = header_block(part)
    if len(head) > MAX_PART_HEADER_BYTES:
        raise InvalidMessage("part header above 4 KiB")
    msg = _headers(head)
    encoding = str(msg.get("Content-Transfer-Encoding", "")).strip().lower()
    body = part[len(head) :]
    body = body[4:] if body.startswith(b"\r\n\r\n") else body[2:]
    return msg.get_content_type().lower(), encoding, body


def _headers(block: bytes) -> Message:
    if len(block) > MAX_HEADER_BLOCK_BYTES:
        raise InvalidMessage("header block above 64 KiB")
    return HeaderParser(policy=compat32).parsestr(block.decode("utf-8", "replace") + "\r\n\r\n")
