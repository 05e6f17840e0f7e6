"""The host loop in-process, with methods the product does not have (slow, huge, broken)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from native_host import framing
from native_host.api import all_methods
from native_host.api.dispatch import Method
from native_host.host import Host, HostConfig
from native_host.session import Context


class Loop:
    """A Host serving over two pipes in a thread; the test is the add-on."""

    def __init__(self, extra: list[Method], config: HostConfig) -> None:
        to_host_r, self._to_host_w = os.pipe()
        self._from_host_r, from_host_w = os.pipe()
        methods = {**all_methods(), **{m.name: m for m in extra}}
        self.host = Host(
            os.fdopen(to_host_r, "rb", buffering=0), os.fdopen(from_host_w, "wb"), methods, config
        )
        self._out = os.fdopen(self._to_host_w, "wb", buffering=0)
        self._in = os.fdopen(self._from_host_r, "rb", buffering=0)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.exit_code = self.host.serve()
        self.host.out._stream.close()

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(framing.encode_frame(message))

    def receive(self) -> dict[str, Any]:
        body = framing.read_frame(self._in, 2 * framing.MAX_FRAME_BYTES)
        assert body is not None, "host closed its output"
        return framing.decode_object(body)

    def close(self) -> None:
        self._out.close()
        self.thread.join(timeout=5)
        self._in.close()


@pytest.fixture
def make_loop() -> Iterator[Any]:
    loops: list[Loop] = []

    def make(extra: list[Method], **config: Any) -> Loop:
        loop = Loop(extra, HostConfig(**config))
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


def test_slow_work_never_blocks_ping_and_answers_come_out_of_order(make_loop: Any) -> None:
    release = threading.Event()

    def slow(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        return {"done": True}

    loop = make_loop([Method("test.slow", slow, parameterless=True)])
    loop.send({"id": "slow", "method": "test.slow"})
    loop.send({"id": "fast", "method": "ping"})
    assert loop.receive()["id"] == "fast"
    release.set()
    assert loop.receive() == {"id": "slow", "result": {"done": True}}


def test_over_the_pending_bound_requests_are_answered_busy(make_loop: Any) -> None:
    release = threading.Event()

    def slow(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        return {}

    loop = make_loop([Method("test.slow", slow, parameterless=True)], workers=2, max_pending=3)
    for n in range(4):
        loop.send({"id": n, "method": "test.slow"})
    busy = loop.receive()
    assert busy["id"] == 3
    assert busy["error"]["code"] == "busy"
    release.set()
    assert sorted(loop.receive()["id"] for _ in range(3)) == [0, 1, 2]


def test_a_result_over_the_frame_limit_becomes_response_too_large(make_loop: Any) -> None:
    def huge(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        return {"blob": "x" * framing.MAX_FRAME_BYTES}

    loop = make_loop([Method("test.huge", huge, parameterless=True)])
    loop.send({"id": 1, "method": "test.huge"})
    answer = loop.receive()
    assert answer["id"] == 1
    assert answer["error"]["code"] == "response_too_large"


def test_a_crashing_method_is_internal_error_without_traceback(
    make_loop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret detail /home/alice/.keys")

    loop = make_loop([Method("test.broken", broken, parameterless=True)])
    loop.send({"id": 1, "method": "test.broken"})
    error = loop.receive()["error"]
    assert error["code"] == "internal_error"
    assert "secret detail" not in error["message"]
    assert "Traceback" not in error["message"]
    loop.send({"id": 2, "method": "ping"})
    assert "result" in loop.receive()
    assert "secret detail" in caplog.text  # the traceback went to the log (stderr)


def test_requests_read_before_hello_keep_the_instance_they_were_read_under(make_loop: Any) -> None:
    release = threading.Event()

    def whoami(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        return {"instance": context.instance}

    loop = make_loop([Method("test.whoami", whoami, parameterless=True)])
    loop.send({"id": "before", "method": "test.whoami"})
    loop.send({"id": "hello", "method": "hello", "params": {"instance": "p1"}})
    assert loop.receive()["id"] == "hello"
    loop.send({"id": "after", "method": "test.whoami"})
    release.set()
    answers = {m["id"]: m["result"]["instance"] for m in (loop.receive(), loop.receive())}
    assert answers == {"before": "default", "after": "p1"}


def test_stray_output_goes_to_stderr_and_stdout_carries_only_frames() -> None:
    code = (
        "import os, warnings\n"
        "from native_host.host import _protect_stdout\n"
        "frames = _protect_stdout()\n"
        "print('stray print')\n"
        "os.write(1, b'raw fd write\\n')\n"
        "warnings.warn('library warning')\n"
        "frames.write(b'FRAME'); frames.flush()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"FRAME"
    for text in (b"stray print", b"raw fd write", b"library warning"):
        assert text in done.stderr


def test_a_bug_in_dispatch_costs_one_answer_not_the_connection(
    make_loop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = make_loop([])
    original = loop.host.handle_frame
    calls = {"n": 0}

    def flaky(body: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("bug")
        original(body)

    monkeypatch.setattr(loop.host, "handle_frame", flaky)
    loop.send({"id": 1, "method": "ping"})
    assert loop.receive() == {
        "id": None,
        "error": {"code": "internal_error", "message": loop_message()},
    }
    loop.send({"id": 2, "method": "ping"})
    assert loop.receive()["id"] == 2


def loop_message() -> str:
    return "the host failed to handle a request; its log has the details"


def test_the_path_to_the_first_ping_imports_nothing_heavy() -> None:
    """What the host imports before it can answer `ping` (the cold start the add-on waits for):
    none of these, each of which `python -X importtime` showed costing milliseconds there. (Those
    the interpreter already had do not count: an editable install's import hook brings pathlib.)"""
    heavy = ["dataclasses", "inspect", "pathlib", "jsonschema", "imapclient", "keyring", "pgpy",
             "sqlite3", "native_host.ports", "native_host.api.schemas", "native_host.service"]  # fmt: skip
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import native_host.host\n"
        "from native_host.api import all_methods\n"
        "all_methods()\n"
        f"print(sorted(m for m in {heavy!r} if m in set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
