"""A pymap IMAP server (in-memory `dict` backend) on a free loopback port, for tests.

pymap's dict backend knows exactly one user (the demo user), so one process is one account.
`PymapServer.new_account()` hands out that account after deleting every `_Autocrypt_SMA*`
folder; `tests.servers.accounts` instead starts one process per account, which is cheap
(about 0.3 s) and isolates tests completely.

    with PymapServer() as server:
        user, password = server.new_account()
        ImapStore(server.host, server.port, user, password, security="none")
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .common import LOOPBACK, free_port, wait_for_greeting

SMA_PREFIX = "_Autocrypt_SMA"


class PymapServer:
    def __init__(
        self,
        *,
        user: str = "demouser",
        password: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = LOOPBACK
        self.port = 0
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.start_timeout = start_timeout
        self.startup_seconds = 0.0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("pymap server not started")
        return self._dir / "pymap.log"

    def start(self) -> PymapServer:
        if self._process is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="sma-pymap-"))
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "pymap",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--no-tls",
            "--pid-file",
            str(self._dir / "pymap.pid"),
            "--no-service",
            "admin",
            "--no-service",
            "managesieve",
            "--no-service",
            "swim",
            "dict",
            "--demo-data",
            "--demo-user",
            self.user,
            "--demo-password",
            self.password,
        ]
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            # Output goes to a file, never a pipe: nobody reads a pipe while the tests run.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
            )
        try:
            wait_for_greeting(
                self.host,
                self.port,
                timeout=self.start_timeout,
                process=self._process,
                log=self.log_path,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def clear_sma_folders(self) -> None:
        """Delete (and unsubscribe) every folder whose name starts with `_Autocrypt_SMA`."""
        from imapclient import IMAPClient

        with IMAPClient(self.host, self.port, ssl=False, timeout=10.0) as client:
            client.login(self.user, self.password)
            found = client.list_folders("", SMA_PREFIX + "*")
            for name in sorted((entry[2] for entry in found), key=len, reverse=True):
                client.delete_folder(name)  # children before their parents
            for _flags, _delimiter, name in client.list_sub_folders("", SMA_PREFIX + "*"):
                client.unsubscribe_folder(name)

    def new_account(self) -> tuple[str, str]:
        """The (only) account, with no SMA folders left from earlier tests."""
        self.start()
        self.clear_sma_folders()
        return self.user, self.password

    def __enter__(self) -> PymapServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
