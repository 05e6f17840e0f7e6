"""The SMA message parser, fed what the mail server (the adversary) can put in a folder: valid
signed messages with damaged headers, folding, line ends, encodings, documents and signatures,
and plain garbage. Each parses or raises RemoteProtocolError, within bounded time and memory; a
parsed message whose signature still verifies says exactly what was signed.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core import envelope
from native_host.core.crypto import DeviceKeys, canonical, sign_document, verify_document
from native_host.core.devicelog import genesis
from native_host.core.envelope import MessageType
from native_host.core.keysync import open_chunk, seal_chunk
from native_host.errors import RemoteProtocolError
from tests.fakes import SeededRandom
from tests.fuzz.contract import MIB, bounded

ME = "0123456789abcdef"
PEER = "fedcba9876543210"
KEYS = DeviceKeys.generate(SeededRandom(1))
ACCOUNT = "alice@example.org"
T = 1_800_000_000
ANNOUNCE = {"name": "Laptop", "joined": T, "last_seen": T + 100}


def _seeds() -> list[bytes]:
    common: dict[str, Any] = {"account": ACCOUNT, "now": T, "random": SeededRandom(2)}
    entry = genesis(PEER, KEYS, "phone", "0123456789ABCDEF0123456789ABCDEF01234567", T)
    chunk = zlib.compress(canonical({"lo": 0, "hi": 1, "ack": 0, "seen": 0, "peers": []}))
    return [
        envelope.build(MessageType.ANNOUNCE, PEER, dict(ANNOUNCE), **common),
        envelope.build(MessageType.ANNOUNCE, PEER, dict(ANNOUNCE), keys=KEYS, **common),
        envelope.build(MessageType.LOG, PEER, entry, keys=KEYS, **common),
        seal_chunk(
            chunk,
            sender=PEER,
            sender_keys=KEYS,
            recipient=ME,
            recipient_keys=KEYS.public,
            account=ACCOUNT,
            now=T,
            random=SeededRandom(3),
        ),
    ]


SEEDS = _seeds()


def _unsigned(document: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in document.items() if k != "sig"})


# What KEYS really signed (this also warms the schema validators outside every example's bounds).
SIGNED = frozenset(_unsigned(envelope.parse(raw).document) for raw in SEEDS)


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def join(lines: list[bytes], body: bytes, eol: bytes = b"\r\n") -> bytes:
    return eol.join(lines) + eol + eol + body


ODD_VALUES = st.sampled_from(
    [b"", b" ", b"2", b"1 ", b"BASE64", b"quoted-printable", b"announce", b"log", b"key-update",
     b"0123456789ABCDEF", b"\xc3\xa9", b"\x00", b"=?utf-8?b?YQ==?=", b"x" * 20_000]
)  # fmt: skip


@st.composite
def header_damage(draw: st.DrawFn, lines: list[bytes]) -> list[bytes]:
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        name, _, value = lines[at].partition(b": ")
        how = draw(
            st.sampled_from(["drop", "dup", "value", "fold", "name", "case", "many", "junk"])
        )
        if how == "drop" and len(lines) > 1:
            del lines[at]
        elif how == "dup":
            lines.insert(at, lines[at])
        elif how == "value":
            lines[at] = name + b": " + draw(ODD_VALUES | st.binary(max_size=20))
        elif how == "fold" and len(value) > 1:
            cut = draw(st.integers(1, len(value) - 1))
            fold = draw(st.sampled_from([b"\r\n ", b"\r\n\t", b"\n ", b"\r\n", b" \r\n "]))
            lines[at] = name + b": " + value[:cut] + fold + value[cut:]
        elif how == "name":
            lines[at] = draw(st.sampled_from([b"", b" ", b"X-A ", b"A:B"])) + b": " + value
        elif how == "case":
            lines[at] = name.upper() + b":" + value
        elif how == "many":
            lines[at:at] = [b"X-Pad: 1"] * draw(st.sampled_from([10, 64, 1000]))
        elif how == "junk":
            lines.insert(at, draw(st.binary(max_size=30)))
    return lines


@st.composite
def document_damage(
    draw: st.DrawFn, document: dict[str, Any], resigned: set[bytes]
) -> dict[str, Any]:
    """The signed JSON document changed the way a forger or a broken client might."""
    doc: dict[str, Any] = json.loads(json.dumps(document))
    key = draw(st.sampled_from([*doc, "to", "extra"]))
    how = draw(st.sampled_from(["drop", "value", "data", "sig", "resign", "nest"]))
    value: Any = draw(
        st.sampled_from([None, True, -1, 0, 2**40, 2**64, 1.5, "", "x" * 300, [], {}, ME, "log"])
        | st.text(max_size=20)
    )
    if how == "drop":
        doc.pop(key, None)
    elif how == "value":
        doc[key] = value
    elif how == "data" and isinstance(doc.get("data"), dict) and doc["data"]:
        field = draw(st.sampled_from(sorted(doc["data"])))
        doc["data"][field] = value
    elif how == "sig" and isinstance(doc.get("sig"), str) and doc["sig"]:
        at = draw(st.integers(0, len(doc["sig"]) - 1))
        doc["sig"] = doc["sig"][:at] + draw(st.sampled_from("A/+=_")) + doc["sig"][at + 1 :]
    elif how == "resign":  # signed by the right key over a changed body: a legitimate signature
        doc[key] = value
        doc = sign_document(doc, KEYS)
        resigned.add(_unsigned(doc))
    elif how == "nest":
        depth = draw(st.sampled_from([50, 5000]))
        doc["data"] = json.loads("[" * depth + "]" * depth) if depth < 900 else {"deep": 1}
    return doc


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, int, frozenset[bytes]]:
    """A message, the index of the valid seed it is (-1: none), and every body KEYS signed."""
    resigned: set[bytes] = set()
    index = draw(st.integers(0, len(SEEDS) - 1))
    raw = SEEDS[index]
    lines, body = split(raw)
    how = draw(
        st.sampled_from(["keep", "headers", "document", "number", "body", "bytes", "eol", "big"])
    )
    if how == "headers":
        raw = join(draw(header_damage(lines)), body)
    elif how == "document":
        document = draw(document_damage(envelope.parse(raw).document, resigned))
        text = json.dumps(document).encode("utf-8", "surrogatepass")
        raw = join(lines, base64.encodebytes(text).replace(b"\n", b"\r\n"))
    elif how == "number":  # numbers Python reads as inf, 0 or a huge int, spliced into the JSON
        spliced = json.dumps(envelope.parse(raw).document)
        number = draw(st.sampled_from(["1e400", "-1e400", "1e-400", "1" * 5000, "-0", "2.0"]))
        spliced = spliced.replace('"data": {', '"data": {"x": ' + number + ", ", 1)
        raw = join(lines, base64.encodebytes(spliced.encode()).replace(b"\n", b"\r\n"))
    elif how == "body":
        body = draw(
            st.sampled_from(
                [
                    body.replace(b"\r\n", b""),
                    body.replace(b"=", b""),
                    body + b"=",
                    body.replace(b"\r\n", b" \t\r\n"),
                    body[: len(body) // 2],
                    body.replace(b"+", b"-").replace(b"/", b"_"),
                    base64.b64encode(b"\xef\xbb\xbf" + base64.b64decode(body)),
                    b"",
                ]
            )
        )
        raw = join(lines, body)
    elif how == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + draw(st.binary(max_size=3)) + raw[at + 1 :]
    elif how == "eol":
        raw = join(lines, body, draw(st.sampled_from([b"\n", b"\r", b"\r\r\n"])))
    elif how == "big":  # the largest a folder can hand us, and just over
        size = draw(st.sampled_from([envelope.MAX_MESSAGE_BYTES - len(raw), 20_000]))
        document = envelope.parse(raw).document
        document["data"] = {**document["data"], "pad": "A" * (size * 3 // 4 - 400)}
        text = json.dumps(document).encode()
        raw = join(lines, base64.encodebytes(text).replace(b"\n", b"\r\n"))
        raw += b"A" * draw(st.sampled_from([0, 0, envelope.MAX_MESSAGE_BYTES]))
    return raw, index if how == "keep" else -1, SIGNED | resigned


@given(messages() | st.binary(max_size=2000).map(lambda b: (b, -1, SIGNED)))
def test_any_message_parses_or_is_one_remote_protocol_error(
    case: tuple[bytes, int, frozenset[bytes]],
) -> None:
    raw, seed, signed = case
    with bounded(16 * MIB + 12 * len(raw)):
        try:
            message = envelope.parse(raw)
        except RemoteProtocolError:
            assert seed < 0, "a valid message was refused"
            return
        verified = verify_document(message.document, KEYS.public)
        opened = None
        if message.type is MessageType.KEY_UPDATE:
            with contextlib.suppress(RemoteProtocolError):
                opened = open_chunk(message, me=ME, my_keys=KEYS, signer=KEYS.public)
    assert message.type.value == message.document["type"]
    assert message.sender == message.document["from"]
    if verified:  # no damage to a message mints a signature over something KEYS never signed
        assert _unsigned(message.document) in signed
    if opened is not None:
        assert opened["lo"] == 0


def test_an_out_of_range_number_is_a_remote_protocol_error() -> None:
    """Regression: 1e400 was read as inf, and the signature check then crashed with ValueError."""
    lines, _ = split(SEEDS[1])
    text = json.dumps(envelope.parse(SEEDS[1]).document).replace(
        '"data": {', '"data": {"x": 1e400, '
    )
    with pytest.raises(RemoteProtocolError, match="out of range"):
        envelope.parse(join(lines, base64.encodebytes(text.encode())))


def test_the_slice_is_not_vacuous() -> None:
    """Every seed parses, and the signed ones verify: damage is measured from valid messages."""
    parsed = [envelope.parse(raw) for raw in SEEDS]
    assert [verify_document(m.document, KEYS.public) for m in parsed] == [False, True, True, True]
    assert open_chunk(parsed[3], me=ME, my_keys=KEYS, signer=KEYS.public)["hi"] == 1
