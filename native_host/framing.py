"""Native-messaging frames exactly as Thunderbird speaks them: uint32 length (native order) + UTF-8 JSON.

Pure functions over bytes and blocking binary streams; the host loop owns the real stdin/stdout.
"""

from __future__ import annotations

import struct
from typing import IO, Any

from native_host.jsonstrict import InvalidJson, decode_object
from native_host.jsonstrict import encode as encode_json

__all__ = ["InvalidJson", "decode_object", "encode_frame", "encode_json", "read_frame"]

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


class ResponseTooLarge(Exception):
    """An outbound message would be over the limit Thunderbird accepts."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message of {length} bytes is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
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


def read_frame(stream: IO[bytes], limit: int = MAX_FRAME_BYTES) -> bytes | None:
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


def encode_frame(message: dict[str, Any], limit: int = MAX_FRAME_BYTES) -> bytes:
    """A complete frame for `message`; raises ResponseTooLarge instead of producing one over `limit`."""
    body = encode_json(message)
    if len(body) > limit:
        raise ResponseTooLarge(len(body), limit)
    return _HEADER.pack(len(body)) + body
