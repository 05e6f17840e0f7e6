"""Helpers shared by the test IMAP servers: free loopback ports, waiting for a listener, logs."""

from __future__ import annotations

import contextlib
import os
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


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on `port` (None: cannot tell here)."""
    if not Path("/proc/net/tcp").exists():
        return None
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    mine: set[str] = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                mine.add(target[len("socket:[") : -1])
    return bool(mine & _listening_inodes(port))


def wait_for_greeting(
    host: str,
    port: int,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until the port accepts a connection and sends an IMAP greeting (`* OK ...`).

    With `process`, the listening socket must also be that process's: a free port can be
    taken by someone else before the server binds it, and then the server exits instead.
    """
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
                    if process is None or owns_listener(process.pid, port) is not False:
                        return
                    last_error = ServerStartError(f"port {port} is held by another process")
                else:
                    last_error = ServerStartError(f"unexpected greeting {greeting!r}")
        except OSError as exc:
            last_error = exc
        time.sleep(0.02)
    raise ServerStartError(
        f"no IMAP greeting on {host}:{port} within {timeout} s ({last_error}); log:\n"
        f"{log_tail(log) if log else ''}"
    )
