"""Native-messaging frames exactly as Thunderbird speaks them: uint32 length (native order) + UTF-8 JSON.

Pure functions over bytes and blocking binary streams; the host loop owns the real stdin/stdout.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

# Thunderbird drops the port when the host sends more than 1 MiB; we hold inbound frames to the
# same bound by default so a runaway add-on cannot make the host allocate without limit.
MAX_FRAME_BYTES = 1024 * 1024

_HEADER = struct.Struct("=I")  # "=": native byte order, standard 4-byte size, no padding
HEADER_SIZE = _HEADER.size


class FrameTooLarge(Exception):
    """The announced length is over the limit; the body was neither read nor allocated."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class InvalidJson(Exception):
    """A frame's body is not one strict UTF-8 JSON object."""


class ResponseTooLarge(Exception):
    """An outbound message would be over the limit Thunderbird accepts."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message of {length} bytes is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """Read exactly `size` bytes; None at EOF (also mid-way: a half frame means the app is gone)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, limit: int = MAX_FRAME_BYTES) -> bytes | None:
    """Next frame body from `stream`, or None at end of input."""
    header = _read_exact(stream, HEADER_SIZE)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise FrameTooLarge(length, limit)
    if length == 0:
        return b""
    return _read_exact(stream, length)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidJson(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")


def decode_object(body: bytes) -> dict[str, Any]:
    """Strictly decode one JSON object: UTF-8 only, no duplicate keys, no NaN or Infinity."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing over-long digit strings
        raise InvalidJson(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidJson(f"top level is {type(value).__name__}, not an object")
    return value


def encode_json(message: dict[str, Any]) -> bytes:
    """UTF-8 JSON; strings that cannot be UTF-8 (lone surrogates echoed back) fall back to escapes."""
    try:
        return json.dumps(
            message, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(
            message, ensure_ascii=True, separators=(",", ":"), allow_nan=False
        ).encode("ascii")


def encode_frame(message: dict[str, Any], limit: int = MAX_FRAME_BYTES) -> bytes:
    """A complete frame for `message`; raises ResponseTooLarge instead of producing one over `limit`."""
    body = encode_json(message)
    if len(body) > limit:
        raise ResponseTooLarge(len(body), limit)
    return _HEADER.pack(len(body)) + body
