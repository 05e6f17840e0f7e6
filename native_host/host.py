"""The stdio loop: the only code that touches the real stdin and stdout.

One reader thread (the main one) reads frames in order; cheap methods are answered right there,
everything else goes to a small bounded worker pool, so responses can come out of order and a
slow IMAP call never delays `ping`. All output goes through one locked frame writer.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, BinaryIO, NamedTuple

from native_host import framing
from native_host.api.dispatch import Method, error_message, resolve, run
from native_host.api.envelope import parse_request, request_id_of
from native_host.errors import ErrorCode, HostError
from native_host.session import Session
from native_host.threads import start_daemon

log = logging.getLogger("native_host")


class HostConfig(NamedTuple):  # not a dataclass: see Method in api/dispatch.py
    max_frame_bytes: int = framing.MAX_FRAME_BYTES
    max_response_bytes: int = framing.MAX_FRAME_BYTES
    workers: int = 4
    max_pending: int = 64  # queued + running requests; beyond it a request is answered `busy`
    shutdown_grace: float = 0.5  # on EOF, how long running requests may still answer

    @classmethod
    def from_env(cls) -> HostConfig:
        limit = os.environ.get("SMA_MAX_FRAME_BYTES", "")
        if not limit:
            return cls()
        if not limit.isdigit() or int(limit) < 64:
            log.warning(
                "ignoring SMA_MAX_FRAME_BYTES=%r: not a whole number of at least 64", limit[:32]
            )
            return cls()
        return cls(max_frame_bytes=int(limit))


class FrameWriter:
    """Serialises whole frames onto the output; the one place the frame limit is enforced."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        try:
            frame = framing.encode_frame(message, self._limit)
        except framing.ResponseTooLarge as exc:
            if "event" in message:
                log.error("dropped event %s: %s", message["event"], exc)
                return
            error = HostError(
                ErrorCode.RESPONSE_TOO_LARGE,
                f"the answer would be {exc.length} bytes; the limit is {exc.limit}",
            )
            frame = framing.encode_frame(error_message(message.get("id"), error), self._limit)
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(frame)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed = True  # the app went away; nobody reads our answers any more

    def emit(self, event: str, data: dict[str, Any]) -> None:
        self.send({"event": event, "data": data})


class WorkerPool:
    """A fixed number of daemon threads and a bounded count of accepted jobs.

    Daemon threads, because a worker stuck in a dead IMAP connection must not keep the
    process alive after the app closed stdin.
    """

    def __init__(self, workers: int, max_pending: int) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pending = threading.Semaphore(max_pending)
        self._idle = threading.Condition()
        self._count = 0
        self._threads = [start_daemon(self._work, f"worker-{i}") for i in range(workers)]

    def submit(self, job: Callable[[], None]) -> bool:
        if not self._pending.acquire(blocking=False):
            return False
        with self._idle:
            self._count += 1
        self._jobs.put(job)
        return True

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # run() already shapes errors; this is a last line of defence
                log.exception("worker job failed")
            finally:
                self._pending.release()
                with self._idle:
                    self._count -= 1
                    self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending or `timeout` passes; True if everything finished."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        for _ in self._threads:
            self._jobs.put(None)
        return True


class Host:
    """Serves one connection until end of input; returns the process exit code."""

    def __init__(
        self,
        reader: BinaryIO,
        writer: BinaryIO,
        methods: Mapping[str, Method],
        config: HostConfig | None = None,
        session: Session | None = None,
    ) -> None:
        self.config = config or HostConfig()
        self.methods = methods
        self.reader = reader
        self.out = FrameWriter(writer, self.config.max_response_bytes)
        self.session = session or Session(self.out.emit)
        self.pool = WorkerPool(self.config.workers, self.config.max_pending)

    def serve(self) -> int:
        try:
            while not self.out.closed:
                try:
                    body = framing.read_frame(self.reader, self.config.max_frame_bytes)
                except framing.FrameTooLarge as exc:
                    # The stream is now out of step (the body is unread), so the only safe move
                    # is to say why and leave; the add-on reconnects.
                    self.out.send(
                        error_message(None, HostError(ErrorCode.FRAME_TOO_LARGE, str(exc)))
                    )
                    return 0
                if body is None:
                    return 0
                try:
                    self.handle_frame(body)
                except Exception:  # a bug in dispatch must cost one answer, not the connection
                    log.exception("failed to handle a frame")
                    error = HostError(
                        ErrorCode.INTERNAL_ERROR,
                        "the host failed to handle a request; its log has the details",
                    )
                    self.out.send(error_message(None, error))
            return 0
        finally:
            self.pool.drain(self.config.shutdown_grace)
            self.session.close()

    def handle_frame(self, body: bytes) -> None:
        try:
            message = framing.decode_object(body)
        except framing.InvalidJson as exc:
            self.out.send(error_message(None, HostError(ErrorCode.INVALID_JSON, str(exc))))
            return
        try:
            request = parse_request(message)
            method = resolve(self.methods, request)
            if method.name == "hello":
                self._bind(request.params["instance"])
        except HostError as exc:
            self.out.send(error_message(request_id_of(message), exc))
            return
        context = self.session.context()
        if method.inline:
            self.out.send(run(method, context, request))
            return
        if not self.pool.submit(lambda: self.out.send(run(method, context, request))):
            busy = HostError(
                ErrorCode.BUSY,
                f"more than {self.config.max_pending} requests are in progress; retry later",
            )
            self.out.send(error_message(request.id, busy))

    def _bind(self, instance: str) -> None:
        if self.session.bound and instance != self.session.instance:
            raise HostError(
                ErrorCode.INVALID_REQUEST,
                f"this connection is already bound to instance {self.session.instance!r}",
            )
        self.session.bind(instance)


class _Terminated(BaseException):
    """SIGTERM. A BaseException, like KeyboardInterrupt, so that no `except Exception` on the
    way (the per-frame safety net) can swallow the app's request to exit."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _warm_up() -> None:
    """Compile the schemas off the critical path, so the first validated request finds them ready."""
    from native_host.api.schemas import schemas

    try:
        schemas()
    except Exception:
        log.exception("schema warm-up failed")


def _protect_stdout() -> BinaryIO:
    """Keep fd 1 for frames only: everything else that writes to stdout lands on stderr.

    Libraries (a warning, a stray print, Rust or C code writing to fd 1) would otherwise corrupt
    the frame stream and make Thunderbird drop the port.
    """
    frames_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(frames_fd, "wb")


def main(argv: list[str] | None = None) -> int:
    """Entry point. Thunderbird passes the manifest path and the add-on id; we only log them."""
    args = sys.argv[1:] if argv is None else argv
    level = os.environ.get("SMA_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "WARNING",
        format="autocrypt-sma-host[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    writer = _protect_stdout()
    reader = os.fdopen(0, "rb", buffering=0)
    from native_host.api import all_methods

    host = Host(reader, writer, all_methods(), HostConfig.from_env())
    log.info("started for %s", args[1] if len(args) > 1 else "a direct caller")
    start_daemon(_warm_up, "warm-up")
    try:
        return host.serve()
    except (_Terminated, KeyboardInterrupt):
        return 0
