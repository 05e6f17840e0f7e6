"""A pymap IMAP server (in-memory `dict` backend) on a free loopback port, for tests.

pymap's dict backend knows exactly one user (the demo user), so one process is one account.
`PymapServer.new_account()` hands out that account after deleting every `_Autocrypt_SMA*`
folder; `tests.servers.accounts` instead starts one process per account, which is cheap
(about 0.4 s, launched ahead of need) and isolates tests completely.

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

from native_host.cli.throwaway_imap import PYMAP_LAUNCH

from .common import LOOPBACK, ServerStartError, free_port, wait_for_greeting

SMA_PREFIX = "_Autocrypt_SMA"
_START_ATTEMPTS = 3

# pymap has no __main__ module: launched the same way as the demo's server.
_LAUNCH = PYMAP_LAUNCH


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
        self._ready = False
        self._spawned_at = 0.0

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("pymap server not started")
        return self._dir / "pymap.log"

    def spawn(self) -> PymapServer:
        """Launch the process without waiting for it (`start()` waits); lets callers prewarm."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="sma-pymap-"))
        if self._process is None:
            self._spawn_process()
        return self

    def start(self) -> PymapServer:
        """Launch (unless spawned already) and wait until it serves IMAP."""
        if self._ready:
            return self
        failures: list[str] = []
        for _attempt in range(_START_ATTEMPTS):  # a free port can be taken before pymap binds
            try:
                self.spawn()
                process = self._process
                assert process is not None
                wait_for_greeting(
                    self.host,
                    self.port,
                    timeout=self.start_timeout,
                    process=process,
                    log=self.log_path,
                )
            except ServerStartError as exc:
                failures.append(str(exc))
                self._stop_process()
                continue
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - self._spawned_at
            self._ready = True
            return self
        self.stop()
        raise ServerStartError("\n---\n".join(failures))

    def _spawn_process(self) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-c",
            _LAUNCH,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--no-tls",
            "--pid-file",
            str(self.log_path.with_name("pymap.pid")),
            "--no-service",
            "admin",
            "--no-service",
            "managesieve",
            "--no-service",
            "swim",
            "dict",
            "--demo-data",
            f"--demo-user={self.user}",  # one argument: a value may start with "-"
            f"--demo-password={self.password}",
        ]
        self._spawned_at = time.monotonic()
        with self.log_path.open("wb") as log:
            # Output goes to a file, never a pipe: nobody reads a pipe while the tests run.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
                start_new_session=True,
            )

    def stop(self) -> None:
        self._stop_process()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _stop_process(self) -> None:
        self._ready = False
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

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
