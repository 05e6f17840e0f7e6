"""The frame reader and the host loop above it, fed any byte stream: every complete frame is
answered by exactly one valid frame, an over-long one by frame_too_large and an orderly exit, a
half frame by an orderly exit; never a traceback, never a byte that is not a frame, and the
reader allocates by what arrived, not by what a length header announces.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import contextlib
import io
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from native_host import framing
from native_host.api.envelope import request_id_of
from native_host.api.schemas import schemas
from native_host.api.system import METHODS
from native_host.host import Host, HostConfig
from native_host.session import Session
from tests.fuzz.contract import KIB, MIB, bounded

HEADER = struct.Struct("=I")
LIMITS = st.sampled_from([64, 1000, framing.MAX_FRAME_BYTES])
# Only the methods that touch nothing outside the process: a mutated request for any other
# method is unknown_method here (the real host process test covers the full table).
PING_ONLY = {m.name: m for m in METHODS if m.name == "ping"}
REQUEST_ERRORS = {"invalid_json", "invalid_request", "unknown_method", "invalid_params"}

VALID_BODIES = st.sampled_from(
    [
        b'{"id":1,"method":"ping"}',
        b'{"id":"a","method":"ping","params":{}}',
        b'{"id":9007199254740991,"method":"ping","params":{}}',
        b'{"id":2,"method":"hello","params":{"instance":"p1"}}',
        b'{"id":3,"method":"sma.join","params":{"acount":"a@b.c"}}',  # invalid_params
    ]
)


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame, then maybe its length, body or both damaged, or a piece of it cut off."""
    body = draw(VALID_BODIES | st.binary(max_size=200))
    length = len(body)
    how = draw(st.sampled_from(["keep", "length", "flip", "insert", "truncate", "header"]))
    if how == "length":
        length = draw(
            st.sampled_from([0, 1, length - 1, length + 1, 2**31, 2**32 - 1])
            | st.integers(0, 2**32 - 1)
        )
        length = max(0, min(length, 2**32 - 1))
    if how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
        length = len(body)
    if how == "insert":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
        length = len(body)
    data = HEADER.pack(length) + body
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    if how == "header":
        data = data[: draw(st.integers(0, 3))]
    return data


STREAMS = st.lists(mutated_frames() | st.binary(max_size=64), max_size=8).map(b"".join)


class ChunkyStream(io.RawIOBase):
    """A pipe's behaviour: reads return at most `chunk` bytes, whatever was asked for."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._data = io.BytesIO(data)
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(self._chunk if size < 0 else min(size, self._chunk))


def reference_bodies(data: bytes, limit: int) -> tuple[list[bytes], bool]:
    """The bodies a correct reader yields, and whether it then stops at an over-long header."""
    bodies: list[bytes] = []
    at = 0
    while len(data) - at >= 4:
        (length,) = HEADER.unpack_from(data, at)
        if length > limit:
            return bodies, True
        if len(data) - at - 4 < length:
            break
        bodies.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return bodies, False


@given(STREAMS, LIMITS, st.integers(1, 70))
def test_the_reader_yields_whole_frames_or_one_clear_refusal(
    data: bytes, limit: int, chunk: int
) -> None:
    stream = ChunkyStream(data, chunk)
    bodies: list[bytes] = []
    refusal: framing.FrameTooLarge | None = None
    # The reader may keep what it read (the input) a few times over, never what a header claims.
    with bounded(64 * KIB + 4 * len(data)):
        while True:
            try:
                body = framing.read_frame(stream, limit)  # type: ignore[arg-type]
            except framing.FrameTooLarge as exc:
                refusal = exc
                break
            if body is None:
                break
            bodies.append(body)
    if refusal is not None:
        assert refusal.length > refusal.limit == limit
    assert (bodies, refusal is not None) == reference_bodies(data, limit)


@given(st.sampled_from([framing.MAX_FRAME_BYTES, 2**32 - 1]), st.binary(max_size=16))
def test_a_header_announcing_the_most_allocates_nothing_of_it(length: int, tail: bytes) -> None:
    """The worst case for memory: the largest lengths with almost nothing behind them."""
    with bounded(64 * KIB), contextlib.suppress(framing.FrameTooLarge):
        framing.read_frame(io.BytesIO(HEADER.pack(length) + tail))


def parse_output(out: bytes) -> list[dict[str, Any]]:
    """Every byte the host wrote, as frames: no stray bytes, each one strict JSON."""
    stream = io.BytesIO(out)
    messages = []
    while (body := framing.read_frame(stream, framing.MAX_FRAME_BYTES)) is not None:
        messages.append(framing.decode_object(body))
    assert stream.tell() == len(out), "bytes on the output that are not a whole frame"
    return messages


@given(STREAMS, LIMITS)
def test_the_host_loop_answers_each_frame_with_one_valid_frame(data: bytes, limit: int) -> None:
    out = io.BytesIO()
    config = HostConfig(max_frame_bytes=limit, workers=1)
    host = Host(io.BytesIO(data), out, PING_ONLY, config, Session(lambda name, d: None))
    with bounded(2 * MIB + 8 * len(data)):
        assert host.serve() == 0
    messages = parse_output(out.getvalue())
    bodies, too_large = reference_bodies(data, limit)
    assert len(messages) == len(bodies) + too_large
    checker = schemas()
    for body, message in zip(bodies, messages, strict=False):
        assert checker.response_problems("ping", message) == []
        if "error" in message:
            assert message["error"]["code"] in REQUEST_ERRORS, message
            try:
                sent = framing.decode_object(body)
            except framing.InvalidJson:
                assert message["id"] is None
            else:
                assert message["id"] == request_id_of(sent)
        else:
            assert framing.decode_object(body)["method"] == "ping"
    if too_large:
        assert messages[-1]["id"] is None
        assert messages[-1]["error"]["code"] == "frame_too_large"


def test_the_slice_is_not_vacuous() -> None:
    """The strategies above do reach an answered ping and every early way out."""
    data = frame(b'{"id":1,"method":"ping"}') + frame(b"{") + HEADER.pack(2**31)
    out = io.BytesIO()
    Host(
        io.BytesIO(data), out, PING_ONLY, HostConfig(workers=1), Session(lambda n, d: None)
    ).serve()
    codes = [m.get("error", {}).get("code") for m in parse_output(out.getvalue())]
    assert codes == [None, "invalid_json", "frame_too_large"]
