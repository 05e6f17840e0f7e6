"""A throwaway IMAP server (pymap's in-memory `dict` backend) on loopback, for the demo and tests.

No root, no configuration, nothing left behind: the process and its temp dir go when it stops.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 20.0
# pymap has no __main__ module; this is what its console script does, with this interpreter.
PYMAP_LAUNCH = "import sys; from pymap.main import main; sys.argv[0] = 'pymap'; sys.exit(main())"
DEMO_PASSWORD = "demo-password"  # noqa: S105 (a throwaway server on loopback)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayImap:
    host = "127.0.0.1"

    def __init__(self, username: str = "alice@example.org", password: str = DEMO_PASSWORD) -> None:
        self.username = username
        self.password = password
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="sma-pymap-"))
        self.log_path = self._dir / "pymap.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ThrowawayImap:
        command = [
            sys.executable, "-c", PYMAP_LAUNCH, "--port", str(self.port), "--no-tls", "dict",
            "--demo-data", "--demo-user", self.username, "--demo-password", self.password,
        ]  # fmt: skip
        # A log file, not a pipe: nobody drains a pipe, and a full one would stall the server.
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pymap exited at start: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pymap did not accept connections within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ThrowawayImap:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
