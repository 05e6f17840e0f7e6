"""Helpers shared by the test IMAP servers: free loopback ports, waiting for a listener, logs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A test IMAP server did not come up; the message carries the tail of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:]


def wait_for_greeting(
    host: str,
    port: int,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until the port accepts a connection and sends an IMAP greeting (`* OK ...`)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"server exited with status {process.returncode} before listening on "
                f"{host}:{port}; log:\n{log_tail(log) if log else ''}"
            )
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                greeting = sock.recv(512)
                if greeting.startswith(b"* OK"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"x LOGOUT\r\n")
                    return
                last_error = ServerStartError(f"unexpected greeting {greeting!r}")
        except OSError as exc:
            last_error = exc
        time.sleep(0.02)
    raise ServerStartError(
        f"no IMAP greeting on {host}:{port} within {timeout} s ({last_error}); log:\n"
        f"{log_tail(log) if log else ''}"
    )
