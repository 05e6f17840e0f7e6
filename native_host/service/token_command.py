"""OAuth2 access tokens from a command the user names (like mbsync's PassCmd, or `oama access`).

For a device that is not Thunderbird: the host runs the command whenever it needs a token (no
shell: the argv as given; stdin closed; at most COMMAND_TIMEOUT seconds, then its whole process
group is killed; at most STDOUT_LIMIT bytes of output) and takes the first line as the token.
The token is held in memory until the server refuses it, then the command runs again: a token
that expired mid-run costs one rerun and no user action.

Errors are `TokenCommandError` (code auth_failed) with a message that never holds the token
and holds of the command's stderr only its last line, capped, with every token-like run of
characters replaced (a failing helper may print what it was handling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from native_host.errors import ErrorCode
from native_host.ports import AccessToken, Clock, StoreAuthError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
STDOUT_LIMIT = 16 * 1024
STDERR_LIMIT = 4 * 1024
STDERR_SHOWN = 200  # characters of the last stderr line a message may carry
RETRY_AFTER = 5.0  # a failed command is not run again sooner (three loops may ask at once)
MAX_ARGS = 64
MAX_ARG_CHARS = 4096
# A run of characters that could be a token or a secret: scrubbed from what stderr shows.
_TOKENISH = re.compile(r"[A-Za-z0-9._~+/=\-]{16,}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces (RFC 6750 is stricter)


class TokenCommandError(StoreAuthError):
    """The token command failed, or its token was refused (code auth_failed)."""

    code = ErrorCode.AUTH_FAILED


def scrub_stderr(raw: bytes) -> str:
    """The last non-empty line of `raw`, capped, with token-like runs replaced by ***."""
    lines = [line.strip() for line in raw.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return _TOKENISH.sub("***", last)[:STDERR_SHOWN]


def check_command(argv: Sequence[str]) -> str | None:
    """Why `argv` cannot be a token command, or None (the schema bounds it too)."""
    if not argv or not argv[0]:
        return "the token command is empty"
    if len(argv) > MAX_ARGS or any(len(a) > MAX_ARG_CHARS or "\x00" in a for a in argv):
        return "the token command is too long or holds a NUL character"
    return None


def _read_bounded(process: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bytes, str]:
    """Read stdout (to STDOUT_LIMIT + 1) and stderr (to STDERR_LIMIT) until both close or the
    deadline; returns (stdout, stderr, problem) where problem is "" or why it was cut short."""
    out, err = bytearray(), bytearray()
    assert process.stdout is not None
    assert process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), bytes(err), f"took longer than {COMMAND_TIMEOUT:.0f} s"
            for key, _events in selector.select(left):
                chunk = os.read(key.fd, 4096)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer: bytearray = key.data
                if buffer is out:
                    out += chunk
                    if len(out) > STDOUT_LIMIT:
                        return bytes(out), bytes(err), f"wrote more than {STDOUT_LIMIT} bytes"
                elif len(err) < STDERR_LIMIT:
                    err += chunk[: STDERR_LIMIT - len(err)]
    return bytes(out), bytes(err), ""


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def run_token_command(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run `argv` and return the first line of its output: an access token."""
    problem = check_command(argv)
    if problem:
        raise TokenCommandError(problem)
    name = os.path.basename(argv[0])
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        raise TokenCommandError(
            f"cannot run the token command {name!r}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        out, err, cut = _read_bounded(process, time.monotonic() + timeout)
        if cut:
            raise TokenCommandError(f"the token command {name!r} {cut}; it was stopped")
        try:
            status = process.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            raise TokenCommandError(f"the token command {name!r} did not exit") from None
    finally:
        if process.poll() is None:
            _kill(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    if status != 0:
        said = scrub_stderr(err)
        raise TokenCommandError(
            f"the token command {name!r} failed (exit status {status})"
            + (f": {said}" if said else "")
        )
    first = out.decode("utf-8", "replace").splitlines()[0].strip() if out.strip() else ""
    if not first:
        raise TokenCommandError(f"the token command {name!r} printed no token")
    if not _TOKEN.fullmatch(first):
        raise TokenCommandError(
            f"the token command {name!r} printed a first line that is not an access token "
            "(spaces or control characters)"
        )
    return first


class CommandTokens:
    """The TokenSource of an account whose tokens come from a command."""

    def __init__(self, account: str, argv: Sequence[str], clock: Clock) -> None:
        self.account = account
        self.argv = list(argv)
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._failed: tuple[float, TokenCommandError] | None = None
        self.runs = 0  # times the command ran (tests count them)

    def token(self) -> AccessToken:
        with self._lock:
            if self._value is not None:
                return AccessToken(self._value, fresh=False)
            now = self._clock()
            if self._failed is not None and now - self._failed[0] < RETRY_AFTER:
                raise self._failed[1]
            self.runs += 1
            try:
                self._value = run_token_command(self.argv)
            except TokenCommandError as exc:
                log.info("%s: %s", self.account, exc)
                self._failed = (now, exc)
                raise
            self._failed = None
            return AccessToken(self._value, fresh=True)

    def rejected(self, token: AccessToken, detail: str) -> StoreAuthError:
        with self._lock:
            if self._value == token.value:
                self._value = None
        return TokenCommandError(f"the server refused the token from the token command ({detail})")

    def accepted(self, token: AccessToken) -> None:
        return None
