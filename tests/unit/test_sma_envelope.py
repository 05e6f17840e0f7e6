"""The SMA message envelope: what we build parses back, and anything else is a RemoteProtocolError."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core import envelope
from native_host.core.envelope import MessageType
from native_host.errors import RemoteProtocolError
from tests.fakes import SeededRandom

DEVICE = "0123456789abcdef"
DATA = {"name": "Laptop", "joined": 1_800_000_000, "last_seen": 1_800_000_100}


def build(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "account": "alice@example.org",
        "now": 1_800_000_100.0,
        "random": SeededRandom(1),
    }
    args.update(overrides)
    return envelope.build(MessageType.ANNOUNCE, DEVICE, dict(DATA), **args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    parsed = envelope.parse(build())
    assert parsed.type is MessageType.ANNOUNCE
    assert parsed.sender == DEVICE
    assert parsed.created == 1_800_000_100
    assert parsed.data == DATA


def test_marker_header_subject_and_crlf() -> None:
    raw = build()
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nAutocrypt-SMA: 2\r\n" in head
    assert "do not delete" in head
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_account_with_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="e-mail address"):
        build(account="alice@example.org\r\nBcc: mallory@example.org")


def test_we_never_build_what_we_would_reject() -> None:
    with pytest.raises(RemoteProtocolError):
        envelope.build(
            MessageType.ANNOUNCE,
            DEVICE,
            {"name": ""},
            account="a@b.c",
            now=1.0,
            random=SeededRandom(1),
        )


def replace_header(raw: bytes, old: bytes, new: bytes) -> bytes:
    head, body = raw.split(b"\r\n\r\n", 1)
    return head.replace(old, new) + b"\r\n\r\n" + body


def with_document(raw: bytes, document: bytes) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\n" + base64.encodebytes(document)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (
            lambda r: replace_header(r, b"Autocrypt-SMA: 2", b"X-Other: 1"),
            "0 Autocrypt-SMA headers",
        ),
        (
            lambda r: replace_header(
                r, b"Autocrypt-SMA: 2", b"Autocrypt-SMA: 2\r\nAutocrypt-SMA: 2"
            ),
            "2 Autocrypt-SMA",
        ),
        (lambda r: replace_header(r, b"Autocrypt-SMA: 2", b"Autocrypt-SMA: 3"), "unsupported"),
        (
            lambda r: replace_header(r, b"Autocrypt-SMA: 2", b"Autocrypt-SMA: 1"),
            "autocrypt-sma 0.1.0",
        ),
        (
            lambda r: replace_header(
                r,
                b"Autocrypt-SMA-Device: 0123456789abcdef",
                b"Autocrypt-SMA-Device: fedcba9876543210",
            ),
            "disagree",
        ),
        (lambda r: replace_header(r, b"base64", b"8bit"), "not base64"),
        (lambda r: r.split(b"\r\n\r\n")[0] + b"\r\n\r\n!!!notbase64", "not valid base64"),
        (lambda r: with_document(r, b'{"v":2,"v":2}'), "duplicate key"),
        (
            lambda r: with_document(
                r, b'{"v":1,"type":"announce","from":"0123456789abcdef","created":1,"data":{}}'
            ),
            "document.v",
        ),
        (
            lambda r: with_document(
                r,
                b'{"v":2,"type":"announce","from":"0123456789abcdef","created":1,"data":{"name":"x"}}',
            ),
            "announce",
        ),
        (
            lambda r: with_document(
                r, b'{"v":2,"type":"teleport","from":"0123456789abcdef","created":1,"data":{}}'
            ),
            "document.type",
        ),
        (lambda r: r.replace(b"\r\n\r\n", b"\r\n"), "no end of headers"),
        (lambda r: b"X-Pad: " + b"a" * 20_000 + b"\r\n" + r, "no end of headers"),
        (lambda r: b"".join(b"X-%d: y\r\n" % n for n in range(100)) + r, "header lines"),
        (lambda r: b"\xff: x\r\n" + r, "non-ASCII"),
        (lambda r: r + b"A" * envelope.MAX_MESSAGE_BYTES, "over"),
    ],
    ids=[
        "no-marker",
        "two-markers",
        "wrong-version",
        "format-1-of-0.1.0",
        "header-body-mismatch",
        "not-base64-cte",
        "bad-base64",
        "duplicate-json-key",
        "document-version",
        "announce-data",
        "unknown-type",
        "no-body-separator",
        "huge-header",
        "many-headers",
        "non-ascii-header",
        "too-large",
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError, match=reason):
        envelope.parse(mangle(build()))


@given(st.binary(max_size=3000))
def test_any_bytes_parse_or_raise_remote_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        envelope.parse(raw)


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=500))
def test_corrupting_a_valid_message_never_crashes(noise: bytes, at: int) -> None:
    raw = build()
    at = min(at, len(raw))
    with contextlib.suppress(RemoteProtocolError):
        envelope.parse(raw[:at] + noise + raw[at:])
