"""Whatever arrives from mail or from another device through the server, the peer-state and
key-sync parsers accept it or reject it with their one error type: never another exception.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from native_host.core import envelope
from native_host.core.autocrypt import (
    InvalidHeader,
    InvalidMessage,
    PeerState,
    contributions,
    message_headers,
    parse_header,
)
from native_host.core.crypto import DeviceKeys
from native_host.core.envelope import MessageType
from native_host.core.keysync import open_chunk, parse_payload
from native_host.errors import RemoteProtocolError
from tests.fakes import SeededRandom

HEADER_NAMES = ["From", "To", "Cc", "Date", "Autocrypt", "Content-Type", "Auto-Submitted", "X-A"]
ATTRS = st.sampled_from(["addr", "keydata", "prefer-encrypt", "_x", "type", "", "addr "])
VALUES = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["a@b.c", "mutual", "QUJD", "=", ";", "\r\n ", "é@ü.de"]
)


@st.composite
def header_values(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(ATTRS, VALUES), max_size=6))
    return ";".join(f"{name}={value}" for name, value in parts)


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(HEADER_NAMES) | st.text(max_size=8))
        value = draw(header_values() | VALUES)
        lines.append(f"{name}: {value}")
    text = "\r\n".join(lines) + draw(st.sampled_from(["", "\r\n\r\nbody", "\n\n", "\r\n"]))
    return text.encode("utf-8", "surrogatepass")


@given(header_values() | st.text(max_size=300))
def test_parse_header_raises_only_invalid_header(value: str) -> None:
    try:
        header = parse_header(value)
    except InvalidHeader:
        return
    assert header.addr == header.addr.strip().lower()
    assert header.keydata


@given(header_blocks() | st.binary(max_size=2000))
def test_reading_a_message_raises_only_invalid_message(block: bytes) -> None:
    try:
        info = message_headers(block)
    except InvalidMessage:
        return
    states = contributions(
        info, 1_800_000_000, key_ok=lambda key, _a: key if len(key) % 2 == 0 else None
    )
    for state in states:
        assert PeerState.from_json(state.to_json()) == state


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["lo", "hi", "ack", "seen", "peers", "x"]), JSONISH))
def test_a_payload_of_any_shape_is_refused_or_read(payload: dict[str, Any]) -> None:
    try:
        envelope.check_payload("key-update-payload", payload)
    except RemoteProtocolError:
        return
    try:
        parse_payload(payload)
    except RemoteProtocolError:
        return


KEYS = DeviceKeys.generate(SeededRandom(1))
ME = "1" * 16
SENDER = "2" * 16


@given(st.binary(max_size=600), st.booleans())
def test_a_sealed_chunk_of_garbage_is_one_remote_protocol_error(junk: bytes, packed: bool) -> None:
    """The worst case: a member (or its stolen key) seals garbage for us."""
    from native_host.core.keysync import seal_chunk

    body = zlib.compress(junk) if packed else junk
    raw = seal_chunk(
        body,
        sender=SENDER,
        sender_keys=KEYS,
        recipient=ME,
        recipient_keys=KEYS.public,
        account="me@example.org",
        now=1_800_000_000,
        random=SeededRandom(len(junk)),
    )
    message = envelope.parse(raw)
    assert message.type is MessageType.KEY_UPDATE
    try:
        open_chunk(message, me=ME, my_keys=KEYS, signer=KEYS.public)
    except RemoteProtocolError:
        return


@given(st.binary(max_size=3000))
def test_any_bytes_in_an_inbox_are_one_remote_protocol_error(raw: bytes) -> None:
    try:
        message = envelope.parse(raw)
    except RemoteProtocolError:
        return
    try:
        open_chunk(message, me=ME, my_keys=KEYS, signer=KEYS.public)
    except RemoteProtocolError:
        return


def test_the_fuzz_slice_sees_real_key_updates_too() -> None:
    """A sanity check that the garbage tests above are not vacuous: a well-formed chunk opens."""
    from native_host.core.keysync import seal_chunk

    payload = {"lo": 0, "hi": 1, "ack": 0, "seen": 0, "peers": []}
    from native_host.core.crypto import canonical

    raw = seal_chunk(
        zlib.compress(canonical(payload)),
        sender=SENDER,
        sender_keys=KEYS,
        recipient=ME,
        recipient_keys=KEYS.public,
        account="me@example.org",
        now=1_800_000_000,
        random=SeededRandom(0),
    )
    assert open_chunk(envelope.parse(raw), me=ME, my_keys=KEYS, signer=KEYS.public) == payload
