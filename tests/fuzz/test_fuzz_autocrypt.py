"""The Autocrypt header parser and the message reader, fed what any correspondent can send:
valid headers with damaged, duplicated, reordered or unknown attributes, folding, broken base64
and sizes at the 10 KiB bound, inside header blocks of any shape. A header parses or raises
InvalidHeader, a block reads or raises InvalidMessage, and what a message contributes to the
peer state always survives the JSON round trip and the merge, within bounded time and memory.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from native_host.core.autocrypt import (
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_BYTES,
    AutocryptHeader,
    InvalidHeader,
    InvalidMessage,
    PeerState,
    contributions,
    merge,
    message_headers,
    outgoing_header,
    parse_header,
)
from tests.fuzz.contract import MIB, bounded

T = 1_800_000_000
ADDRS = ["bob@example.org", "carol@example.net", "Bob@Example.ORG", "dave@xn--bcher-kva.example"]
KEYDATA = st.sampled_from([b"\x99\x01", bytes(range(256)), b"k" * 7000]) | st.binary(
    min_size=1, max_size=64
)


def key_ok(keydata: bytes, _addr: str) -> bytes | None:
    """A stand-in for the OpenPGP check, deterministic so the merge sees both outcomes."""
    return keydata if keydata[0] != 0 else None


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[str, AutocryptHeader]:
    addr = draw(st.sampled_from(ADDRS))
    keydata = draw(KEYDATA)
    mutual = draw(st.booleans())
    expected = AutocryptHeader(addr.lower(), "mutual" if mutual else "nopreference", keydata)
    return outgoing_header(addr, keydata, mutual), expected


ATTRIBUTES = st.sampled_from(
    ["addr=x@y.z", "_extra=1", "type=1", "prefer-encrypt=nopreference", "prefer-encrypt=mutual ",
     "keydata=", "keydata=QUJD", "addr=", "ADDR=a@b.c", "addr=a b@c.d", "=", "addr", " ; ",
     "keydata=QUJD=", "keydata=Q U J D", "keydata=QUJD\r\n =", "_=", "addr=a@b.c\x00"]
)  # fmt: skip


@st.composite
def header_values(draw: st.DrawFn) -> tuple[str, AutocryptHeader | None]:
    """A valid header value, then maybe damaged; the header it must parse to if undamaged."""
    value, expected = draw(valid_headers())
    parts = value.split("; ")
    how = draw(
        st.sampled_from(
            ["keep", "attr", "drop", "dup", "order", "fold", "b64", "pad", "chars", "size"]
        )
    )
    if how == "keep":
        return value, expected
    if how == "attr":
        parts.insert(draw(st.integers(0, len(parts))), draw(ATTRIBUTES | st.text(max_size=20)))
    elif how == "drop":
        del parts[draw(st.integers(0, len(parts) - 1))]
    elif how == "dup":
        parts.append(parts[draw(st.integers(0, len(parts) - 1))])
    elif how == "order":
        parts = draw(st.permutations(parts))
    elif how == "fold":  # folding as a mail library leaves it, and as a server mangles it
        at = draw(st.integers(0, len(value)))
        fold = draw(st.sampled_from(["\r\n ", "\r\n\t", "\n ", " ", "\r\n"]))
        return value[:at] + fold + value[at:], None
    elif how == "b64":
        key = parts[-1]
        at = draw(st.integers(len("keydata="), len(key)))
        parts[-1] = (
            key[:at] + draw(st.sampled_from(["!", "=", "-", "_", "é", "\x00", "A"])) + key[at:]
        )
    elif how == "pad":
        parts[-1] = parts[-1].rstrip("=") + draw(st.sampled_from(["", "=", "==", "==="]))
    elif how == "chars":
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(st.text(min_size=1, max_size=4)) + value[at:], None
    elif how == "size":  # at and just over the 10 KiB bound
        room = MAX_HEADER_BYTES - len("Autocrypt: ") - len(value)
        return value + ";_pad=" + "x" * (room - 6 + draw(st.integers(-1, 1))), None
    return "; ".join(parts), None


@given(header_values() | st.text(max_size=300).map(lambda t: (t, None)))
def test_a_header_value_parses_or_is_invalid_header(
    case: tuple[str, AutocryptHeader | None],
) -> None:
    value, expected = case
    refused: InvalidHeader | None = None
    with bounded(MIB):
        try:
            header = parse_header(value)
        except InvalidHeader as exc:
            refused = exc
    if refused is not None:
        assert expected is None, f"a valid header was refused: {refused}"
        assert refused.reason
        return
    if expected is not None:
        assert header == expected
    assert header.addr == header.addr.strip().lower()
    assert "@" in header.addr
    assert header.keydata
    assert len(("Autocrypt: " + value).encode("utf-8", "surrogateescape")) <= MAX_HEADER_BYTES
    assert base64.b64decode(base64.b64encode(header.keydata)) == header.keydata


NAMES = st.sampled_from(
    ["From", "To", "Cc", "Reply-To", "Date", "Autocrypt", "Content-Type", "Auto-Submitted",
     "FROM", "autocrypt", "X-A", "Subject"]
)  # fmt: skip
FIELD_VALUES = st.sampled_from(
    ["bob@example.org", "Bob <bob@example.org>", "a@b.c, d@e.f", '"x@y" <bob@example.org>',
     "<>", "(comment) bob@example.org", "=?utf-8?q?B=C3=B6b?= <bob@example.org>",
     "Tue, 15 Jan 2027 10:00:00 +0000", "Tue, 15 Jan 2027 10:00:00 -0000", "99 Foo 99999",
     "Thu, 01 Jan 1970 00:00:00 +2359", "Sun, 31 Dec 9999 23:59:59 -2359",
     "multipart/report; report-type=delivery-status", "multipart/encrypted", "text/plain; x=\"",
     "auto-replied (vacation)", "auto-generated", "no", "", '"' * 50, "<" * 100, "(" * 100]
)  # fmt: skip


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    fields = []
    for _ in range(draw(st.integers(0, 10))):
        name = draw(NAMES | st.text(max_size=8))
        if name.lower() == "autocrypt":
            value = draw(header_values())[0]
        else:
            value = draw(FIELD_VALUES | st.text(max_size=40))
        fields.append(f"{name}: {value}")
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    block = eol.join(fields).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["keep", "keep", "many", "big", "body", "bytes"]))
    if how == "many":  # at and over the field-count bound
        block += b"\r\nX: 1" * draw(st.sampled_from([150, 199, 200, 201, 5000]))
    elif how == "big":  # at and over the block-size bound
        block += b"\r\nX: " + b"a" * (
            MAX_HEADER_BLOCK_BYTES - len(block) + draw(st.integers(-9, 9))
        )
    elif how == "body":
        block += b"\r\n\r\n" + draw(st.binary(max_size=200))
    elif how == "bytes" and block:
        at = draw(st.integers(0, len(block) - 1))
        block = block[:at] + draw(st.binary(min_size=1, max_size=4)) + block[at + 1 :]
    return block


@given(header_blocks() | st.binary(max_size=2000), st.lists(st.text(max_size=80), max_size=3))
def test_a_header_block_reads_or_is_invalid_message(block: bytes, gossip: list[str]) -> None:
    with bounded(8 * MIB + 40 * len(block)):
        try:
            info = message_headers(block)
        except InvalidMessage:
            return
        states = contributions(info, T, key_ok=key_ok, gossip_values=gossip)
    for state in states:
        assert PeerState.from_json(state.to_json()) == state
        assert merge(state, state) == state
    if states:
        assert states[0].addr == info.from_addr
        merged = states[0]
        for other in states[1:]:
            assert other.addr != merged.addr
            assert merge(other, PeerState(addr=other.addr)) == merge(
                PeerState(addr=other.addr), other
            )


def test_the_slice_is_not_vacuous() -> None:
    value = outgoing_header("bob@example.org", b"\x99\x01", True)
    block = f"From: bob@example.org\r\nDate: Tue, 15 Jan 2027 10:00:00 +0000\r\nAutocrypt: {value}"
    (state,) = contributions(message_headers(block.encode()), T + 10**8, key_ok=key_ok)
    assert state.public_key == b"\x99\x01"
    assert state.prefer_encrypt == "mutual"
