"""A private Dovecot 2.3 IMAP server on a free loopback port, for tests.

Everything lives in one temp dir: the config file, base/state dirs, the log, the passwd-file
and the users' maildirs. No system service is touched. Two namespace flavours:

- ``"default"``: ``prefix = ""``, ``separator = /`` (NAMESPACE answers ``(("" "/"))``);
- ``"inbox-prefix"``: the Courier/Cyrus style ``prefix = INBOX.``, ``separator = .``, where a
  top-level folder is ``INBOX._Autocrypt_SMA``.

Dovecot re-reads the passwd-file when it changes, so `new_account()` (or `add_user`) gives each
test a fresh, empty account on the same running server.

    with DovecotServer(namespace="inbox-prefix") as server:
        user, password = server.new_account()
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from .common import LOOPBACK, ServerStartError, free_port, log_tail, wait_for_greeting

Namespace = Literal["default", "inbox-prefix"]

INSTALL_HINT = (
    "Dovecot is not installed: the IMAP contract tests need it. "
    "Install it with `apt-get install dovecot-imapd` (Debian/Ubuntu)."
)

_NAMESPACES: dict[str, str] = {
    "default": """namespace inbox {
  inbox = yes
  separator = /
  prefix =
}""",
    "inbox-prefix": """namespace inbox {
  inbox = yes
  separator = .
  prefix = INBOX.
}""",
}

_CONFIG = """# Generated for the test suite; see tests/servers/dovecot_server.py
protocols = imap
listen = {host}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:~/Maildir

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={dir}/home/%u
}}

{namespace}

protocol imap {{
  mail_max_userip_connections = 1000
}}

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def find_dovecot() -> tuple[str, str]:
    """Paths of `dovecot` and `doveadm`; a clear error (never a skip) if they are missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    dovecot = shutil.which("dovecot", path=search)
    doveadm = shutil.which("doveadm", path=search)
    if dovecot is None or doveadm is None:
        raise ServerStartError(INSTALL_HINT)
    return dovecot, doveadm


class DovecotServer:
    def __init__(self, *, namespace: Namespace = "default", start_timeout: float = 30.0) -> None:
        if namespace not in _NAMESPACES:
            raise ValueError(f"unknown namespace flavour {namespace!r}")
        self.namespace: Namespace = namespace
        self.host = LOOPBACK
        self.port = 0
        self.start_timeout = start_timeout
        self.startup_seconds = 0.0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._doveadm = ""
        self._users_lock = threading.Lock()
        self._serial = itertools.count(1)

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("dovecot server not started")
        return self._dir

    @property
    def config_path(self) -> Path:
        return self.directory / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "dovecot.log"

    def start(self) -> DovecotServer:
        if self._process is not None:
            return self
        dovecot, self._doveadm = find_dovecot()
        self._dir = Path(tempfile.mkdtemp(prefix="sma-dovecot-"))
        directory = self._dir
        if os.geteuid() == 0:
            # The mail processes run as nobody: they must reach the home dirs under this one.
            directory.chmod(0o755)
            mail_user, mail_group = "nobody", "nogroup"
            try:
                grp.getgrnam(mail_group)
            except KeyError:
                mail_group = grp.getgrgid(pwd.getpwnam(mail_user).pw_gid).gr_name
            login_user = internal_user = mail_user
            internal_group = mail_group
        else:  # unprivileged: everything runs as the current user
            mail_user = login_user = internal_user = pwd.getpwuid(os.geteuid()).pw_name
            mail_group = internal_group = grp.getgrgid(os.getegid()).gr_name
        for sub in ("run", "state", "home"):
            (directory / sub).mkdir()
        home = directory / "home"
        if os.geteuid() == 0:
            shutil.chown(home, mail_user, mail_group)
        (directory / "users").write_text("")
        self.port = free_port()
        self.config_path.write_text(
            _CONFIG.format(
                host=self.host,
                port=self.port,
                dir=directory,
                login_user=login_user,
                internal_user=internal_user,
                internal_group=internal_group,
                mail_user=mail_user,
                mail_group=mail_group,
                namespace=_NAMESPACES[self.namespace],
            )
        )
        began = time.monotonic()
        with (directory / "dovecot.out").open("wb") as out:
            # -F keeps the master in the foreground, so this Popen is the server. Its output
            # goes to a file: Dovecot's children inherit the descriptors and would hold a pipe.
            self._process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
                start_new_session=True,
            )
        try:
            wait_for_greeting(
                self.host,
                self.port,
                timeout=self.start_timeout,
                process=self._process,
                log=directory / "dovecot.out",
            )
        except BaseException as exc:
            details = log_tail(self.log_path)
            self.stop()
            if isinstance(exc, ServerStartError):
                raise ServerStartError(f"{exc}\ndovecot.log:\n{details}") from None
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                subprocess.run(
                    [self._doveadm, "-c", str(self.config_path), "stop"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                    check=False,
                )
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def add_user(self, name: str, password: str) -> None:
        """Add a login; Dovecot notices the changed passwd-file on the next authentication."""
        for text in (name, password):
            if not text or any(ch in text for ch in ":\r\n\0"):
                raise ValueError(
                    "user names and passwords must be non-empty, without ':' or newlines"
                )
        with self._users_lock, (self.directory / "users").open("a") as users:
            users.write(f"{name}:{{PLAIN}}{password}\n")

    def new_account(self) -> tuple[str, str]:
        """A new, empty account (its maildir is created on first login)."""
        self.start()
        name = f"user{next(self._serial)}"
        password = secrets.token_urlsafe(12)
        self.add_user(name, password)
        return name, password

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
