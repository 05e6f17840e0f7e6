"""The real host process, fed damaged byte streams on its stdin the way a broken or hostile
add-on could: everything on its stdout is a frame that matches the schemas, each complete frame
gets one answer, it never answers internal_error or logs a traceback, and after every bad but
framed input a ping still answers. An over-long frame makes it say frame_too_large and exit 0;
only then is it restarted.

One host serves many examples (starting one costs far more than a frame), so this property
runs at most 2,000 examples even under HYPOTHESIS_PROFILE=fuzz; the in-process frame tests in
test_fuzz_frames.py carry the 100,000.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_host import framing
from tests.fuzz.test_fuzz_frames import REQUEST_ERRORS, mutated_frames, reference_bodies
from tests.host.harness import CheckedHost

HEADER = struct.Struct("=I")
LIMIT = 4096  # the fuzzed host's frame limit: small, so that over-long frames are cheap to send
MAX_HOST_EXAMPLES = 2_000
ANSWER_SECONDS = 10.0


class RestartingHost:
    """One host at a time; a new one only when the last left for a legitimate reason."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._homes = itertools.count()
        self._probes = itertools.count()
        self.retired: list[CheckedHost] = []
        self.host = self._start()
        self.seen = 0  # messages of the current host already checked

    def _start(self) -> CheckedHost:
        home = self._base / f"home{next(self._homes)}"
        home.mkdir()
        return CheckedHost(home, env={"SMA_MAX_FRAME_BYTES": str(LIMIT)})

    def send(self, data: bytes) -> None:
        """Write to the host; if it is gone, say why (its exit code and the end of its log)."""
        try:
            self.host.send_bytes(data)
        except BrokenPipeError:
            raise self.gone(data) from None

    def gone(self, data: bytes) -> AssertionError:
        log = self.host.stderr_path.read_text(errors="replace")[-3000:]
        code = self.host.proc.poll()
        return AssertionError(f"the host left (exit code {code}) before or on {data!r}: {log}")

    def new_messages(self) -> list[dict[str, object]]:
        messages = self.host.received[self.seen :]
        self.seen = len(self.host.received)
        return messages

    def probe(self) -> None:
        """A ping must still answer, and nothing may be sent after it that was not asked for."""
        probe_id = f"probe-{next(self._probes)}"
        try:
            self.host.send_message({"id": probe_id, "method": "ping"})
        except BrokenPipeError:
            raise self.gone(b"a ping") from None
        response = self.host.wait_response(probe_id, timeout=ANSWER_SECONDS)
        assert "result" in response, response

    def restart(self) -> None:
        """After an over-long frame: its answer (the last frame, so the reader thread has sorted
        every earlier one by then), an exit code of 0, and a new host."""
        while True:  # answers to earlier bad frames also come with id null
            message = self.host.next_unsolicited(timeout=ANSWER_SECONDS)
            if message["error"]["code"] == "frame_too_large":
                break
        assert self.host.wait_exit(timeout=ANSWER_SECONDS) == 0
        self.host.close()
        self.retired.append(self.host)
        self.host = self._start()
        self.seen = 0

    def close(self) -> list[CheckedHost]:
        self.host.close()
        return [*self.retired, self.host]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartingHost]:
    pool = RestartingHost(tmp_path_factory.mktemp("fuzz-hosts"))
    yield pool
    for host in pool.close():
        log = host.stderr_path.read_text(errors="replace")
        assert host.problems() == [], log
        assert "Traceback" not in log, log


def completed(data: bytes, may_exit: bool = True) -> tuple[bytes, list[bytes], bool]:
    """`data` with its last frame completed (so that the host is not left waiting for bytes that
    never come) and cut after an over-long header (the host reads no further; without
    `may_exit`, cut before it), the bodies the host will read, and whether it then meets an
    over-long header."""
    at = 0
    while at < len(data):
        rest = len(data) - at
        if rest < 4:  # a partial header: zero-fill it (this may announce too much: fine)
            data += bytes(4 - rest)
            continue
        (length,) = HEADER.unpack_from(data, at)
        if length > LIMIT:
            data = data[: at + 4] if may_exit else data[:at]
            break
        data += b" " * max(0, length - (rest - 4))
        at += 4 + length
    bodies, too_large = reference_bodies(data, LIMIT)
    return data, bodies, too_large


@settings(max_examples=min(settings().max_examples, MAX_HOST_EXAMPLES))
@given(
    st.lists(mutated_frames() | st.binary(max_size=32), min_size=1, max_size=6).map(b"".join),
    st.integers(0, 19),
)
def test_the_real_host_answers_any_stream_with_frames_and_keeps_serving(
    hosts: RestartingHost, data: bytes, exit_roll: int
) -> None:
    # An over-long frame ends the host, and a restart costs a hundred frames: one in 20 only.
    data, bodies, too_large = completed(data, may_exit=exit_roll == 0)
    if bodies or too_large:
        hosts.send(data)
    if too_large:
        hosts.restart()
        messages = hosts.retired[-1].received
        assert messages[-1]["error"]["code"] == "frame_too_large"
        messages = messages[-1 - len(bodies) : -1]
    else:
        hosts.probe()
        messages = hosts.new_messages()[:-1]  # the last one answers the probe
    assert len(messages) == len(bodies)
    for message in messages:
        error = message.get("error")
        if error is not None:
            assert error["code"] in REQUEST_ERRORS, message  # type: ignore[index]
    assert hosts.host.stream_error is None


def test_the_slice_is_not_vacuous(hosts: RestartingHost) -> None:
    data, bodies, too_large = completed(HEADER.pack(5) + b"{")
    assert (len(bodies), too_large) == (1, False)
    hosts.host.send_bytes(data)
    hosts.probe()
    assert [m["error"]["code"] for m in hosts.new_messages()[:-1]] == ["invalid_json"]  # type: ignore[index]
    assert framing.MAX_FRAME_BYTES > LIMIT
