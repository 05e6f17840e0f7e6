"""Speaks to a host process the way Thunderbird does; used by the CLI and by the test harness.

Thunderbird (Gecko's NativeMessaging module) runs the manifest's `path` with two arguments, the
manifest's own path and the add-on id, in the executable's directory, with pipes for all three
standard streams.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from native_host import framing

ADDON_ID = "autocrypt-sma@autocrypt.org"
HOST_NAME = "org.autocrypt.sma"
MAX_INBOUND = framing.MAX_FRAME_BYTES  # what Thunderbird accepts from a host


class HostCallError(Exception):
    """The host answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HostGone(Exception):
    """The host closed its output (exited) before answering."""


def default_host_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m native_host`."""
    script = Path(sys.executable).with_name("autocrypt-sma-host")
    if script.exists():
        return [str(script)]
    found = shutil.which("autocrypt-sma-host")
    return [found] if found else [sys.executable, "-m", "native_host"]


class HostProcess:
    """One running host and a reader thread that sorts its frames into responses and events."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        manifest_path: str | None = None,
        addon_id: str = ADDON_ID,
        env: dict[str, str] | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> None:
        self.command = list(command or default_host_command())
        executable = self.command[0]
        manifest = manifest_path or str(Path(executable).parent / f"{HOST_NAME}.json")
        self.proc = subprocess.Popen(
            [*self.command, manifest, addon_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=str(Path(executable).parent) if os.path.isabs(executable) else None,
            env=env,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._stdin = self.proc.stdin
        self._stdout = self.proc.stdout
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._responses: dict[Any, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.unsolicited: queue.Queue[dict[str, Any]] = queue.Queue()  # responses with id null
        self.received: list[dict[str, Any]] = []  # every message, in order, for schema checks
        self.stream_error: str | None = None
        self._eof = False
        self._reader = threading.Thread(target=self._read_loop, name="host-reader", daemon=True)
        self._reader.start()

    # --- raw access, for framing tests -------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        self._stdin.write(data)
        self._stdin.flush()

    def send_message(self, message: dict[str, Any]) -> None:
        self.send_bytes(framing.encode_frame(message, limit=2**32 - 1))

    def close_stdin(self) -> None:
        if not self._stdin.closed:
            self._stdin.close()

    # --- requests -----------------------------------------------------------------------------
    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send one request and wait for its response message (result or error)."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send_message(message)
        return self.wait_response(request_id, timeout=timeout)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The result of a request, or HostCallError."""
        response = self.request(method, params, timeout=timeout)
        if "error" in response:
            raise HostCallError(response["error"]["code"], response["error"]["message"])
        result: dict[str, Any] = response["result"]
        return result

    def wait_response(self, request_id: Any, *, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while request_id not in self._responses:
                if self._eof:
                    raise HostGone(f"host exited before answering request {request_id!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no answer to request {request_id!r} within {timeout} s")
                self._lock.wait(remaining)
            return self._responses.pop(request_id)

    def next_unsolicited(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.unsolicited.get(timeout=timeout)

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.events.get(timeout=timeout)

    def wait_event(
        self,
        name: str,
        timeout: float = 10.0,
        check: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The data of the next `name` event (passing `check`); other events are passed over.
        Raises queue.Empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(timeout=max(0.01, deadline - time.monotonic()))
            if event["event"] == name and (check is None or check(event["data"])):
                data: dict[str, Any] = event["data"]
                return data

    # --- lifecycle ----------------------------------------------------------------------------
    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self, timeout: float = 5.0) -> int:
        """Close stdin like Thunderbird does, then wait; kill if it will not go."""
        self.close_stdin()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> HostProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        try:
            while True:
                body = framing.read_frame(self._stdout, MAX_INBOUND)
                if body is None:
                    break
                message = framing.decode_object(body)
                self._sort(message)
        except (framing.FrameTooLarge, framing.InvalidJson) as exc:
            # Thunderbird would drop the port here; record it so tests fail loudly.
            self.stream_error = str(exc)
        finally:
            with self._lock:
                self._eof = True
                self._lock.notify_all()

    def _sort(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(message)
            if "event" in message:
                self.events.put(message)
            elif message.get("id") is None:
                self.unsolicited.put(message)
            else:
                self._responses[message["id"]] = message
                self._lock.notify_all()
