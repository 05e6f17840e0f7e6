"""Envelope and params validation, fed any frame body: strict JSON, the hand-written envelope
check and every method's params schema accept or refuse with a stable code (invalid_json,
invalid_request, unknown_method, invalid_params), agree with the envelope schema, and never echo
a params value (it may be a password) in an error message.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from native_host.api import all_methods
from native_host.api.dispatch import Method, resolve
from native_host.api.envelope import MAX_SAFE_INTEGER, Request, parse_request
from native_host.api.schemas import schemas
from native_host.errors import ErrorCode, HostError
from native_host.jsonstrict import InvalidJson, decode_object
from tests.fuzz.contract import MIB, bounded

METHODS = all_methods()
CHECKER = schemas()  # compiled once, outside every example's bounds
MAX_ERROR_MESSAGE = 1000  # the envelope schema's bound on error.message
SECRET = "SECRET 7f3a/"  # planted in params values: must never come back in an error message


def _property_names() -> list[str]:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for rel, doc in CHECKER.documents.items():
        if rel.startswith("methods/"):
            walk(doc["$defs"]["params"])
    return sorted(names)


KEYS = st.sampled_from(_property_names()) | st.text(max_size=10)
PLAUSIBLE: st.SearchStrategy[Any] = st.sampled_from(
    [
        "alice@example.org",
        "0123456789abcdef",
        "Laptop",
        "profile-1",
        "QUJD",
        "",
        "imap.example.org",
        "starttls",
        0,
        1,
        143,
        65535,
        -1,
        2**53,
        2**64,
        -(2**70),
        10**400,
        1.5,
        3.0,
        1e308,
        True,
        None,
        [],
        {},
    ]
)
SECRETS = st.text(max_size=20).map(lambda t: f"{SECRET}{t}")
LEAVES = PLAUSIBLE | SECRETS | st.text(max_size=30) | st.integers() | st.floats()
# Two levels (enough for the one nested params object, imap), not st.recursive: generating the
# values, not validating them, is what each example costs.
JSONISH = (
    LEAVES
    | st.lists(LEAVES, max_size=3)
    | st.dictionaries(KEYS, LEAVES | st.lists(LEAVES, max_size=2), max_size=4)
)
IDS: st.SearchStrategy[Any] = (
    st.integers(-MAX_SAFE_INTEGER - 2, MAX_SAFE_INTEGER + 2)
    | st.sampled_from([0, 2**63, 1.0, -3.0, 0.5, float("inf"), float("nan"), True, None, [], {}])
    | st.text(max_size=300)
)
METHOD_NAMES = (
    st.sampled_from(sorted(METHODS))
    | st.sampled_from(["", "Ping", "ping\n", "ping ", "a..b", "x" * 65, "ping.", "sma.join.x"])
    | st.text(max_size=20)
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed requests for real methods with params near their schema, then damaged."""
    message: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        message["id"] = draw(IDS)
    if draw(st.integers(0, 9)):
        message["method"] = draw(METHOD_NAMES)
    if draw(st.booleans()):
        message["params"] = draw(st.dictionaries(KEYS, JSONISH, max_size=5) | JSONISH)
    for key in draw(st.lists(st.text(max_size=8), max_size=2)):
        message.setdefault(key, draw(JSONISH))
    return message


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """JSON text of an envelope, then strictness traps and damage."""
    text = json.dumps(draw(envelopes()), allow_nan=True)
    how = draw(
        st.sampled_from(
            ["keep", "dup", "nan", "huge", "deep", "surrogate", "bytes", "bom", "trail", "top"]
        )
    )
    if how == "dup" and text.startswith("{") and len(text) > 2:
        text = '{"id":1,' + text[1:] if '"id"' in text else '{"method":"a","method":"b",' + text[1:]
    elif how == "nan":
        text = text.replace("1", draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])), 1)
    elif how == "huge":
        text = '{"id":' + draw(st.sampled_from(["9" * 5000, "1e999999", "-0", "1E400"])) + "}"
    elif how == "deep":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        text = '{"id":1,"method":"ping","params":{"a":' + _deep(depth) + "}}"
    elif how == "surrogate":
        text = text.replace('"', '"\\ud800', 1)
    elif how == "top":
        text = draw(st.sampled_from(["[]", "1", '"x"', "null", "", " ", "{}"]))
    data = text.encode("utf-8", "surrogatepass")
    if how == "bytes" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at + 1 :]
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "trail":
        data += draw(st.sampled_from([b" ", b"x", b"{}", b"\x00", b"\n"]))
    return data


def check(message: dict[str, Any]) -> Request | HostError:
    """parse_request then resolve, as the host loop does; only HostError may escape."""
    refused: HostError | None = None
    try:
        request = parse_request(message)
    except HostError as exc:
        refused = exc
    assert CHECKER.request.is_valid(message) == (refused is None), "disagrees with the schema"
    if refused is not None:
        assert refused.code is ErrorCode.INVALID_REQUEST
        return refused
    try:
        method = resolve(METHODS, request)
    except HostError as exc:
        refused = exc
    if refused is not None:
        assert refused.code in (ErrorCode.UNKNOWN_METHOD, ErrorCode.INVALID_PARAMS)
        return refused
    assert isinstance(method, Method)
    return request


def assert_clear(error: HostError) -> None:
    assert 0 < len(error.message) <= MAX_ERROR_MESSAGE
    assert SECRET not in error.message, error.message


@given(bodies() | st.binary(max_size=300))
def test_any_frame_body_is_a_request_or_one_stable_code(body: bytes) -> None:
    with bounded(8 * MIB + 40 * len(body)):
        try:
            outcome: Request | HostError | InvalidJson = check(decode_object(body))
        except InvalidJson as exc:
            outcome = exc
    if isinstance(outcome, InvalidJson):
        assert 0 < len(str(outcome)) <= MAX_ERROR_MESSAGE
    elif isinstance(outcome, HostError):
        assert_clear(outcome)


@given(st.sampled_from(sorted(METHODS)), st.dictionaries(KEYS, JSONISH, max_size=5))
def test_params_near_every_schema_are_valid_or_invalid_params(
    method: str, params: dict[str, Any]
) -> None:
    """Params aimed at each method in turn, so every schema sees many near misses."""
    with bounded(8 * MIB):
        outcome = check({"id": 1, "method": method, "params": params})
    if isinstance(outcome, HostError):
        assert outcome.code is ErrorCode.INVALID_PARAMS
        assert_clear(outcome)


def test_the_slice_is_not_vacuous() -> None:
    assert isinstance(check({"id": 1, "method": "hello", "params": {"instance": "p1"}}), Request)
    refused = check({"id": 1, "method": "hello", "params": {"instance": SECRET}})
    assert isinstance(refused, HostError)
    assert refused.code is ErrorCode.INVALID_PARAMS
    assert_clear(refused)
