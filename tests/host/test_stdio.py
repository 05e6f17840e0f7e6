"""Framing and envelope rules, tested on a real host process started as Thunderbird starts it."""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Callable

import pytest

from native_host import PROTOCOL_VERSION, __version__
from native_host.framing import MAX_FRAME_BYTES
from tests.host.harness import CheckedHost

HEADER = struct.Struct("=I")


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def test_ping_answers_versions(host: CheckedHost) -> None:
    assert host.call("ping") == {"host_version": __version__, "protocol_version": PROTOCOL_VERSION}


def test_string_ids_and_empty_params_are_echoed(host: CheckedHost) -> None:
    host.send_message({"id": "req-\u03b1", "method": "ping", "params": {}})
    assert host.wait_response("req-\u03b1")["result"]["protocol_version"] == PROTOCOL_VERSION


def test_oversized_frame_is_refused_without_reading_its_body(host: CheckedHost) -> None:
    host.send_bytes(HEADER.pack(MAX_FRAME_BYTES + 1))  # no body follows, and none is needed
    answer = host.next_unsolicited(timeout=5)
    assert answer == {
        "id": None,
        "error": {"code": "frame_too_large", "message": answer["error"]["message"]},
    }
    assert str(MAX_FRAME_BYTES) in answer["error"]["message"]
    assert host.wait_exit(timeout=5) == 0


def test_frame_limit_is_configurable(spawn: Callable[..., CheckedHost]) -> None:
    host = spawn(env={"SMA_MAX_FRAME_BYTES": "1000"})
    host.send_message({"id": 1, "method": "ping", "params": {"pad": "x" * 2000}})
    assert host.next_unsolicited(timeout=5)["error"]["code"] == "frame_too_large"
    assert host.wait_exit(timeout=5) == 0


def test_a_frame_of_exactly_the_limit_is_read(host: CheckedHost) -> None:
    head = b'{"id":1,"method":"ping","params":{"pad":"'
    tail = b'"}}'
    body = head + b"x" * (MAX_FRAME_BYTES - len(head) - len(tail)) + tail
    assert len(body) == MAX_FRAME_BYTES
    host.send_bytes(frame(body))
    error = host.wait_response(1)["error"]
    assert error["code"] == "invalid_params"
    assert "params.pad" in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"id": 1, "method": "ping"', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"id": 1, "method": "p\xc3ing"}', "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'"ping"', "not an object"),
        (b"", "not JSON"),
        (b'{"id": 1, "id": 2, "method": "ping"}', "duplicate key"),
        (b'{"id": 1, "method": "ping", "params": {"x": NaN}}', "NaN"),
        (b'{"id": 1, "method": "ping", "params": {"x": Infinity}}', "Infinity"),
        (b'{"id": 1, "method": "ping", "params": {"x": -Infinity}}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"id": 1' + b"1" * 5000 + b', "method": "ping"}', "not JSON"),
    ],
    ids=[
        "truncated",
        "bad-utf8-start",
        "bad-utf8-inside",
        "array",
        "string",
        "empty",
        "duplicate-key",
        "nan",
        "infinity",
        "minus-infinity",
        "deep-nesting",
        "huge-integer",
    ],
)
def test_bad_json_gets_invalid_json_with_null_id_and_the_host_keeps_serving(
    host: CheckedHost, body: bytes, fragment: str
) -> None:
    host.send_bytes(frame(body))
    answer = host.next_unsolicited(timeout=5)
    assert answer["id"] is None
    assert answer["error"]["code"] == "invalid_json"
    assert fragment in answer["error"]["message"]
    assert host.call("ping")["protocol_version"] == PROTOCOL_VERSION


@pytest.mark.parametrize(
    ("message", "echo"),
    [
        ({"method": "ping"}, None),
        ({"id": True, "method": "ping"}, None),
        ({"id": 1.5, "method": "ping"}, None),
        ({"id": None, "method": "ping"}, None),
        ({"id": "x" * 257, "method": "ping"}, None),
        ({"id": 2**53, "method": "ping"}, None),
        ({"id": 7}, 7),
        ({"id": 7, "method": 3}, 7),
        ({"id": 7, "method": "Ping"}, 7),
        ({"id": 7, "method": "ping\n"}, 7),
        ({"id": 7, "method": "ping", "params": []}, 7),
        ({"id": "s", "method": "ping", "extra": 1}, "s"),
    ],
    ids=[
        "no-id",
        "bool-id",
        "fraction-id",
        "null-id",
        "long-id",
        "unsafe-int-id",
        "no-method",
        "method-not-string",
        "method-upper",
        "method-newline",
        "params-array",
        "extra-member",
    ],
)
def test_malformed_requests_get_invalid_request(
    host: CheckedHost, message: dict[str, object], echo: object
) -> None:
    host.send_message(message)
    answer = host.next_unsolicited(timeout=5) if echo is None else host.wait_response(echo)
    assert answer["id"] == echo
    assert answer["error"]["code"] == "invalid_request"
    assert host.call("ping")["protocol_version"] == PROTOCOL_VERSION


def test_unknown_method(host: CheckedHost) -> None:
    answer = host.request("sma.teleport", {})
    assert answer["error"]["code"] == "unknown_method"
    assert "sma.teleport" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("method", "params", "path"),
    [
        ("hello", {}, "'instance' is a required property"),
        ("hello", {"instance": 5}, "params.instance: must be of type"),
        ("hello", {"instance": "../../etc"}, "params.instance: does not match pattern"),
        ("hello", {"instance": "ok\n"}, "params.instance: does not match pattern"),
        ("hello", {"instance": "ok", "x": 1}, "'x' was unexpected"),
        ("ping", {"x": 1}, "params.x"),
    ],
)
def test_invalid_params_name_the_failing_path(
    host: CheckedHost, method: str, params: dict[str, object], path: str
) -> None:
    error = host.request(method, params)["error"]
    assert error["code"] == "invalid_params"
    assert path in error["message"]


def test_invalid_params_never_echo_the_value(host: CheckedHost) -> None:
    secret = "hunter2-" + "s" * 80
    error = host.request("hello", {"instance": secret})["error"]
    assert secret not in error["message"]


def test_hello_binds_the_connection_once(host: CheckedHost) -> None:
    assert host.call("hello", {"instance": "profile-1"})["instance"] == "profile-1"
    assert host.call("hello", {"instance": "profile-1"})["instance"] == "profile-1"
    error = host.request("hello", {"instance": "profile-2"})["error"]
    assert error["code"] == "invalid_request"
    assert "profile-1" in error["message"]


def test_eof_on_stdin_exits_zero_within_one_second(host: CheckedHost) -> None:
    host.call("ping")
    started = time.monotonic()
    host.close_stdin()
    assert host.wait_exit(timeout=5) == 0
    assert time.monotonic() - started < 1.0


def test_sigterm_exits_cleanly(host: CheckedHost) -> None:
    host.call("ping")
    host.proc.send_signal(signal.SIGTERM)
    assert host.wait_exit(timeout=5) == 0
    assert "Traceback" not in host.stderr_text()


def test_requests_pipelined_in_one_burst_are_all_answered(host: CheckedHost) -> None:
    burst = b"".join(frame(b'{"id": %d, "method": "ping"}' % n) for n in range(500))
    host.send_bytes(burst)
    for n in range(500):
        assert host.wait_response(n)["result"]["protocol_version"] == PROTOCOL_VERSION


def test_sigterm_right_after_an_answer_still_exits(spawn: Callable[..., CheckedHost]) -> None:
    """SIGTERM landing while the host flushes an answer once went to the per-frame safety net and
    was swallowed; the host then ignored the app's request to exit."""
    for _ in range(15):
        host = spawn()
        host.call("ping")
        host.proc.send_signal(signal.SIGTERM)
        assert host.wait_exit(timeout=5) == 0
