"""Frames and strict JSON: property tests of the contract "accept, or reject with a clear error"."""

from __future__ import annotations

import contextlib
import io
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host import framing
from native_host.jsonstrict import InvalidJson, decode_object, encode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_frames_round_trip(message: dict[str, object]) -> None:
    stream = io.BytesIO(framing.encode_frame(message))
    body = framing.read_frame(stream)
    assert body is not None
    assert framing.decode_object(body) == message
    assert framing.read_frame(stream) is None


def test_length_is_native_order_uint32() -> None:
    data = framing.encode_frame({"a": 1})
    assert struct.unpack("=I", data[:4])[0] == len(data) - 4


@given(st.binary(max_size=2000))
def test_any_bytes_decode_to_an_object_or_invalid_json(body: bytes) -> None:
    try:
        value: object = decode_object(body)
    except InvalidJson as exc:
        value = exc
    assert isinstance(value, dict) or (isinstance(value, InvalidJson) and str(value))


@given(st.text(max_size=300))
def test_any_text_decodes_to_an_object_or_invalid_json(text: str) -> None:
    with contextlib.suppress(InvalidJson):
        decode_object(text.encode("utf-8", "surrogatepass"))


def test_truncated_frame_is_end_of_input() -> None:
    data = framing.encode_frame({"a": "b"})
    assert framing.read_frame(io.BytesIO(data[:-1])) is None
    assert framing.read_frame(io.BytesIO(data[:2])) is None


def test_oversized_frame_is_refused_before_the_body_is_read() -> None:
    stream = io.BytesIO(struct.pack("=I", 101) + b"x" * 101)
    with pytest.raises(framing.FrameTooLarge):
        framing.read_frame(stream, limit=100)
    assert stream.tell() == 4


def test_outbound_limit() -> None:
    with pytest.raises(framing.ResponseTooLarge):
        framing.encode_frame({"blob": "x" * 200}, limit=100)


def test_lone_surrogates_are_escaped_not_emitted_as_invalid_utf8() -> None:
    body = encode({"id": "\ud800"})
    assert body == b'{"id":"\\ud800"}'
    assert json.loads(body) == {"id": "\ud800"}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999999", "123456789.0e99999"])
def test_numbers_out_of_float_range_are_invalid_json_not_infinity(number: str) -> None:
    """Regression: they decoded to inf, which canonical JSON (signature checks) then refused
    with a ValueError, a crash instead of RemoteProtocolError for a message from the server."""
    with pytest.raises(InvalidJson, match="out of range"):
        decode_object(f'{{"a":{number}}}'.encode())
    assert decode_object(b'{"a":1e308,"b":-0.5,"c":1e-400}') == {"a": 1e308, "b": -0.5, "c": 0.0}
