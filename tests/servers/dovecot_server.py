"""A private Dovecot 2.3 IMAP server on a free loopback port, for tests.

Everything lives in one temp dir: the config file, base/state dirs, the log, the passwd-file
and the users' maildirs. No system service is touched. Two namespace flavours:

- ``"default"``: ``prefix = ""``, ``separator = /`` (NAMESPACE answers ``(("" "/"))``);
- ``"inbox-prefix"``: the Courier/Cyrus style ``prefix = INBOX.``, ``separator = .``, where a
  top-level folder is ``INBOX._Autocrypt_SMA``.

Every test can get a fresh, empty account on the same running server: `new_account()` hands out
users from a pool already in the passwd-file; `add_user` appends one (Dovecot re-reads the file
when it changes, but at most once a second, so `add_user` waits that long). Failed logins are
not tarpitted (no auth penalty; `auth_failure_delay = 0` still costs about 0.5 s).

    with DovecotServer(namespace="inbox-prefix") as server:
        user, password = server.new_account()
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from .common import LOOPBACK, ServerStartError, free_port, log_tail, wait_for_greeting

Namespace = Literal["default", "inbox-prefix"]

_START_ATTEMPTS = 3
_POOL_BATCH = 64  # users written to the passwd-file at a time
_REREAD_SECONDS = 1.1  # Dovecot checks a passwd-file for changes at most once a second

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

# With `oauth2_introspection`: SASL XOAUTH2 and OAUTHBEARER, checked by an oauth2 passdb that
# asks the provider's RFC 7662 introspection endpoint (POST token=...) about every login (no
# auth cache: a revoked token is refused at the next login).
_OAUTH2_PASSDB = """passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {dir}/dovecot-oauth2.conf.ext
}}
"""
_OAUTH2_SETTINGS = """introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""

# Inside a namespace block: a special-use Trash, created when the user logs in.
_TRASH_MAILBOX = """  mailbox Trash {
    special_use = \\Trash
    auto = create
  }
"""

_CONFIG = """# Generated for the test suite; see tests/servers/dovecot_server.py
protocols = imap
listen = {host}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth2_mechanisms}
# Little tarpit for failed logins: tests may try wrong passwords, all from 127.0.0.1.
auth_failure_delay = 0
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
{oauth2_passdb}userdb {{
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
    address = {host}
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
  # No auth penalty (it would slow every later login from 127.0.0.1 after a failed one).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def make_self_signed_cert(cert_path: Path, key_path: Path, host: str) -> None:
    """A self-signed certificate for `host` (an IP address or a DNS name), valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def find_dovecot() -> tuple[str, str]:
    """Paths of `dovecot` and `doveadm`; a clear error (never a skip) if they are missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    dovecot = shutil.which("dovecot", path=search)
    doveadm = shutil.which("doveadm", path=search)
    if dovecot is None or doveadm is None:
        raise ServerStartError(INSTALL_HINT)
    return dovecot, doveadm


class DovecotServer:
    def __init__(
        self,
        *,
        namespace: Namespace = "default",
        tls: bool = False,
        trash: bool = False,
        oauth2_introspection: str | None = None,
        oauth2_mechanisms: tuple[str, ...] = ("xoauth2", "oauthbearer"),
        start_timeout: float = 30.0,
    ) -> None:
        """`trash=True` gives every account a ``Trash`` folder with ``special_use = \\Trash``
        (created at login), as Gmail and most providers have: the deletion path that moves
        messages there and expunges them (native_host/adapters/imap_deletion.py) needs one.
        `oauth2_introspection` (an RFC 7662 URL, tests/servers/oauth2_provider.py) adds SASL
        XOAUTH2 and OAUTHBEARER for any user the provider vouches for (PLAIN stays);
        `oauth2_mechanisms` offers fewer (a server with only XOAUTH2, like Outlook's)."""
        if namespace not in _NAMESPACES:
            raise ValueError(f"unknown namespace flavour {namespace!r}")
        self.namespace: Namespace = namespace
        self.host = LOOPBACK
        self.port = 0  # plain IMAP (STARTTLS offered too when `tls`)
        self.tls = tls
        self.trash = trash
        self.oauth2_introspection = oauth2_introspection
        self.oauth2_mechanisms = oauth2_mechanisms
        self.tls_port = 0  # implicit TLS (IMAPS), only when `tls`
        self.start_timeout = start_timeout
        self.startup_seconds = 0.0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._doveadm = ""
        self._users_lock = threading.RLock()
        self._serial = itertools.count(1)
        self._pool: list[tuple[str, str]] = []

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

    @property
    def cert_path(self) -> Path:
        """The server's self-signed certificate (PEM), to trust in a client's SSLContext."""
        return self.directory / "cert.pem"

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
        self._pool = self._fresh_users(_POOL_BATCH)
        (directory / "users").write_text("")
        self._append_users_unlocked(self._pool)  # before the start: no re-read to wait for
        settings = {
            "host": self.host,
            "dir": directory,
            "login_user": login_user,
            "internal_user": internal_user,
            "internal_group": internal_group,
            "mail_user": mail_user,
            "mail_group": mail_group,
            "namespace": _NAMESPACES[self.namespace]
            if not self.trash
            else _NAMESPACES[self.namespace].rstrip("}") + _TRASH_MAILBOX + "}",
            "ssl": "ssl = no",
            "oauth2_mechanisms": "",
            "oauth2_passdb": "",
        }
        if self.oauth2_introspection is not None:
            (directory / "dovecot-oauth2.conf.ext").write_text(
                _OAUTH2_SETTINGS.format(url=self.oauth2_introspection)
            )
            mechanisms = " ".join(self.oauth2_mechanisms)
            settings["oauth2_mechanisms"] = " " + mechanisms
            settings["oauth2_passdb"] = _OAUTH2_PASSDB.format(dir=directory, mechanisms=mechanisms)
        if self.tls:
            make_self_signed_cert(self.cert_path, directory / "key.pem", self.host)
            settings["ssl"] = (
                f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{directory / 'key.pem'}\n"
                "ssl_min_protocol = TLSv1.2"
            )
        failures: list[str] = []
        for _attempt in range(_START_ATTEMPTS):  # a free port can be taken before Dovecot binds
            try:
                self._launch(dovecot, settings)
                return self
            except ServerStartError as exc:
                failures.append(f"{exc}\ndovecot.log:\n{log_tail(self.log_path)}")
                self._stop_process()
            except BaseException:
                self.stop()
                raise
        self.stop()
        raise ServerStartError("\n---\n".join(failures))

    def _launch(self, dovecot: str, settings: dict[str, object]) -> None:
        self.port = free_port()
        self.tls_port = 0
        if self.tls:
            while self.tls_port in (0, self.port):
                self.tls_port = free_port()
        self.config_path.write_text(
            _CONFIG.format(port=self.port, tls_port=self.tls_port, **settings)
        )
        began = time.monotonic()
        self._run_master(dovecot, mode="wb")
        self.startup_seconds = time.monotonic() - began

    def _run_master(self, dovecot: str, mode: str) -> None:
        with (self.directory / "dovecot.out").open(mode) as out:
            # -F keeps the master in the foreground, so this Popen is the server. Its output
            # goes to a file: Dovecot's children inherit the descriptors and would hold a pipe.
            self._process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
        wait_for_greeting(
            self.host,
            self.port,
            timeout=self.start_timeout,
            process=self._process,
            log=self.directory / "dovecot.out",
        )

    def halt(self) -> None:
        """Stop the server but keep its directory, config and mail (for a restart)."""
        self._stop_process()

    def relaunch(self) -> None:
        """Start it again after `halt`, on the same port with the same mail."""
        dovecot, _doveadm = find_dovecot()
        self._run_master(dovecot, mode="ab")

    def stop(self) -> None:
        """`doveadm stop`, wait for the master (about 1 s), reap, remove the temp dir."""
        self._stop_process()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stopper: subprocess.Popen[bytes] | None = None
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    stopper = subprocess.Popen(
                        [self._doveadm, "-c", str(self.config_path), "stop"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Last resort: the session started for this server only (master and children).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            if stopper is not None:
                # doveadm polls for the master's exit about once a second; it is done already.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stopper.wait(timeout=0.2)
                if stopper.poll() is None:
                    stopper.terminate()
                stopper.wait(timeout=10)

    def kick(self, user: str) -> None:
        """End every IMAP session of `user` (`doveadm kick`): its clients must log in again."""
        subprocess.run(
            [self._doveadm or find_dovecot()[1], "-c", str(self.config_path), "kick", user],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=15,
            check=False,  # exit status 68 when no session was there
        )

    def add_user(self, name: str, password: str, *, wait: bool = True) -> None:
        """Add a login to the passwd-file.

        Dovecot looks at a changed passwd-file at most once a second, so a login right after
        the change can still fail: with `wait` this returns once the new user can log in.
        """
        self._append_users([(name, password)])
        if wait:
            time.sleep(_REREAD_SECONDS)

    def _append_users(self, users: list[tuple[str, str]]) -> None:
        for name, password in users:
            for text in (name, password):
                if not text or any(ch in text for ch in ":\r\n\0"):
                    raise ValueError(
                        "user names and passwords must be non-empty, no ':' or newlines"
                    )
        with self._users_lock:
            self._append_users_unlocked(users)

    def _append_users_unlocked(self, users: list[tuple[str, str]]) -> None:
        with (self.directory / "users").open("a") as passwd:
            passwd.writelines(f"{name}:{{PLAIN}}{password}\n" for name, password in users)

    def _fresh_users(self, count: int) -> list[tuple[str, str]]:
        return [(f"user{next(self._serial)}", secrets.token_urlsafe(12)) for _ in range(count)]

    def new_account(self) -> tuple[str, str]:
        """A new, empty account (its maildir is created on first login).

        Accounts come from a pool written to the passwd-file ahead of time (before the server
        starts, then in batches), so most calls do not wait for Dovecot's re-read.
        """
        self.start()
        with self._users_lock:
            if not self._pool:
                batch = self._fresh_users(_POOL_BATCH)
                self._append_users_unlocked(batch)
                time.sleep(_REREAD_SECONDS)
                self._pool.extend(batch)
            return self._pool.pop(0)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
