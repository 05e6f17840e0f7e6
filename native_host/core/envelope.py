"""The SMA message envelope: what every message we put in an SMA folder looks like, and its parser.

A message is a small RFC 5322 mail so that any IMAP server stores it and any mail client shows
something sensible: a Subject that says what it is and not to delete it, the marker header
`Autocrypt-SMA: 1`, and one base64 JSON body part. The JSON document repeats the type and the
sending device, because the body is what gets signed (from the pairing protocol on); the
headers are for people and quick filtering, and must agree with the body.

Everything parsed here comes from the mail server, the adversary: sizes are bounded before
anything is decoded, and any failure is a RemoteProtocolError.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from native_host.core.crypto import DeviceKeys, sign_document
from native_host.errors import RemoteProtocolError
from native_host.jsonstrict import InvalidJson, decode_object, encode
from native_host.ports import RandomBytes

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

SMA_HEADER = "Autocrypt-SMA"
SMA_VERSION = "2"  # 0.1.0 wrote "1": refused with a clear message (no migration)
TYPE_HEADER = "Autocrypt-SMA-Type"
DEVICE_HEADER = "Autocrypt-SMA-Device"
CONTENT_TYPE = "application/json; charset=utf-8"
DOCUMENT_VERSION = 2

MAX_MESSAGE_BYTES = 1024 * 1024  # never fetched or parsed above this
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 64

_ADDRESS_RE = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")
_SCHEMA_PATH = Path(__file__).parent / "schemas" / "sma.json"
_SCHEMA_URI = "https://autocrypt-sma.invalid/schemas/sma/sma.json"


class MessageType(StrEnum):
    ANNOUNCE = "announce"
    LOG = "log"
    PAIR_REQUEST = "pair-request"
    PAIR_ACCEPT = "pair-accept"
    PAIR_CONFIRM = "pair-confirm"
    PAIR_KEY = "pair-key"
    PAIR_REJECT = "pair-reject"
    KEY_UPDATE = "key-update"
    ACCOUNT_KEY = "account-key"
    KEY_REQUEST = "key-request"


_SUBJECT_TEXT = {
    MessageType.ANNOUNCE: "device announcement",
    MessageType.LOG: "device log entry",
    MessageType.KEY_UPDATE: "key update",
    MessageType.ACCOUNT_KEY: "account key (encrypted)",
    MessageType.KEY_REQUEST: "account key request",
}
SUBJECTS = {
    t: f"Autocrypt SMA: {_SUBJECT_TEXT.get(t, 'pairing message')} (do not delete or move)"
    for t in MessageType
}


@dataclass(frozen=True)
class LogHead:
    """Where the sender's device log stood when it sent a message."""

    seq: int
    hash: str


@dataclass(frozen=True)
class SmaMessage:
    type: MessageType
    sender: str  # the device id the document claims; trusted only once a signature says so
    created: int  # the sender's clock: informative, never trusted for ordering
    data: dict[str, Any]
    document: dict[str, Any]  # the whole signed document, for the caller's signature check
    to: str | None = None  # the recipient device (inbox messages): a replay elsewhere is refused
    head: LogHead | None = None  # the sender's log head (signed; trusted once the signature is)


@cache
def _validators() -> dict[str, Validator]:
    import json

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    registry: Registry[Any] = Registry().with_resource(_SCHEMA_URI, Resource.from_contents(schema))
    return {
        name: Draft202012Validator({"$ref": f"{_SCHEMA_URI}#/$defs/{name}"}, registry=registry)
        for name in ("document", "key-update-payload", *(t.value for t in MessageType))
    }


def _check(name: str, value: dict[str, Any]) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_validators()[name].iter_errors(value))
    if error is not None:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise RemoteProtocolError(f"{name}{path}: fails {error.validator}")


def check_payload(name: str, value: dict[str, Any]) -> None:
    """Check a decrypted payload against its schema (the sender was a member, but a bug or a
    newer version must not get further than this)."""
    _check(name, value)


def build(
    type: MessageType,
    sender: str,
    data: dict[str, Any],
    *,
    account: str,
    now: float,
    random: RandomBytes,
    keys: DeviceKeys | None = None,
    to: str | None = None,
    head: LogHead | None = None,
) -> bytes:
    """The raw message to append; its document is validated so we never send what we would
    reject, and signed by the sender's device key when `keys` is given. `head` is the sender's
    device-log head, signed with the rest: a receiver that cannot find it learns that the server
    is hiding log entries from it (docs/protocol.md, "Withholding")."""
    if not _ADDRESS_RE.fullmatch(account):
        raise ValueError("account must be a bare e-mail address")
    document: dict[str, Any] = {
        "v": DOCUMENT_VERSION,
        "type": type.value,
        "from": sender,
        "created": int(now),
        "data": data,
    }
    if to is not None:
        document["to"] = to
    if head is not None:
        document["head"] = {"seq": head.seq, "hash": head.hash}
    if keys is not None:
        document = sign_document(document, keys)
    _check("document", document)
    _check(type.value, data)
    body = base64.encodebytes(encode(document)).replace(b"\n", b"\r\n")
    headers = [
        f"From: Autocrypt SMA <{account}>",
        f"To: <{account}>",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{random(16).hex()}@autocrypt-sma.invalid>",
        f"Subject: {SUBJECTS[type]}",
        "MIME-Version: 1.0",
        f"{SMA_HEADER}: {SMA_VERSION}",
        f"{TYPE_HEADER}: {type.value}",
        f"{DEVICE_HEADER}: {sender}",
        f"Content-Type: {CONTENT_TYPE}",
        "Content-Transfer-Encoding: base64",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


def _split(raw: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(separator, 0, MAX_HEADER_BYTES + len(separator))
        if index >= 0:
            return raw[:index], raw[index + len(separator) :]
    raise RemoteProtocolError(f"no end of headers within {MAX_HEADER_BYTES} bytes")


def _headers(block: bytes) -> dict[str, list[str]]:
    """Unfolded headers by lower-case name; only ASCII, only a bounded number of lines."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError("non-ASCII bytes in the header block") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_HEADER_LINES:
        raise RemoteProtocolError(f"more than {MAX_HEADER_LINES} header lines")
    headers: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if current is None:
                raise RemoteProtocolError("continuation line before any header")
            current[-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise RemoteProtocolError("malformed header line")
        current = headers.setdefault(name.lower(), [])
        current.append(value.strip())
    return headers


def _one(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name.lower(), [])
    if len(values) != 1:
        raise RemoteProtocolError(f"{len(values)} {name} headers, need exactly one")
    return values[0]


OLD_PAIRING = (
    "a pairing message from autocrypt-sma 0.1.0 (codes compared on two screens): this version "
    "pairs with a code typed on the new device; update the other device and start again"
)


def _refuse_old_pairing(document: Any) -> None:
    """0.1.0 pairing messages are refused by name, not as malformed junk (no migration)."""
    if not isinstance(document, dict):
        return
    data = document.get("data")
    kind = document.get("type")
    if kind == "pair-reveal" or (
        kind == "pair-request" and isinstance(data, dict) and "commitment" in data
    ):
        raise RemoteProtocolError(OLD_PAIRING)


def parse(raw: bytes) -> SmaMessage:
    """Parse and check one message from an SMA folder, or raise RemoteProtocolError."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"message of {len(raw)} bytes is over {MAX_MESSAGE_BYTES}")
    block, body = _split(raw)
    headers = _headers(block)
    version = _one(headers, SMA_HEADER)
    if version == "1":
        raise RemoteProtocolError(
            f"a message of SMA format 1 (autocrypt-sma 0.1.0), which this version does not read"
            f" (it speaks format {SMA_VERSION}); devices still on 0.1.0 must be updated and paired"
            " again"
        )
    if version != SMA_VERSION:
        raise RemoteProtocolError(f"unsupported {SMA_HEADER} version")
    header_type = _one(headers, TYPE_HEADER)
    header_device = _one(headers, DEVICE_HEADER)
    if _one(headers, "Content-Transfer-Encoding").lower() != "base64":
        raise RemoteProtocolError("body is not base64")
    try:
        payload = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("body is not valid base64") from None
    try:
        document = decode_object(payload)
    except InvalidJson as exc:
        raise RemoteProtocolError(f"body: {exc}") from None
    _refuse_old_pairing(document)
    _check("document", document)
    kind = MessageType(document["type"])
    _check(kind.value, document["data"])
    if header_type != kind.value or header_device != document["from"]:
        raise RemoteProtocolError("headers disagree with the signed document")
    return SmaMessage(
        kind,
        document["from"],
        document["created"],
        document["data"],
        document,
        document.get("to"),
        LogHead(document["head"]["seq"], document["head"]["hash"]) if "head" in document else None,
    )
