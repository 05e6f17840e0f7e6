"""`autocrypt-sma doctor`: find out, in plain words, why Thunderbird cannot use the host.

It walks the path Thunderbird walks: finds the manifest where the application looks (on Windows
through the registry), checks it the way Gecko does (name, type, absolute path, allowed add-on),
starts the launcher the way Gecko does (arguments: the manifest's path and the add-on id; working
directory: the launcher's; a bare environment like a GUI app's) and sends `ping`. Then it checks
the keyring and logs in to every configured account's IMAP server with its stored password; for
an OAuth2 account it runs the token command and logs in with its token, or, where Thunderbird
supplies the tokens (which doctor cannot have), says so and checks that the server offers
OAUTHBEARER or XOAUTH2. Every problem comes with the fix. Nothing it prints or returns contains
a secret (no password, no token, no token command's stderr beyond its scrubbed last line).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from native_host import __version__
from native_host.cli.client import ADDON_ID, HostCallError, HostGone, HostProcess
from native_host.cli.install import (
    APP_TITLES,
    APPS,
    REGISTRY_KEY,
    App,
    Platform,
    Scope,
    WinReg,
    check_manifest,
    current_platform,
    is_ours,
    lookup_order,
    pinned_python,
    real_winreg,
    registry_read,
)
from native_host.ports import SecretStore, SecretStoreUnavailable, StoreAuthError, StoreError
from native_host.service.accounts import AccountRecord, ImapSettings, password_name

if TYPE_CHECKING:
    from native_host.adapters.imap_login import ImapLogin

Status = Literal["ok", "problem", "skip"]
DEFAULT_TIMEOUT = 10.0
INSTALL_FIX = "run `autocrypt-sma install`"
# What a GUI application's environment may still carry; everything else is dropped for the launch.
PASSED_TO_HOST = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "XDG_DATA_HOME",
    "SMA_HOME",
    "SMA_LOG_LEVEL",
    "PYTHON_KEYRING_BACKEND",
    "SYSTEMROOT",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "TEMP",
    "TMP",
)


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        if self.status == "ok":
            return f"ok: {self.check}: {self.detail}"
        if self.status == "skip":
            return f"skip: {self.check}: {self.detail}"
        return f"PROBLEM: {self.check}: {self.detail} — fix: {self.fix}"


StoreOpener = Callable[[ImapSettings, "str | ImapLogin", float], Any]
SecretsFor = Callable[[str], SecretStore]


def _open_imap(settings: ImapSettings, password: str | ImapLogin, timeout: float) -> Any:
    from native_host.service.instance import open_imap

    return open_imap(settings, password, timeout)


def _keyring_secrets(instance: str) -> SecretStore:
    from native_host.adapters.keyring_secrets import KeyringSecrets

    return KeyringSecrets(instance)


def _split_fix(message: str) -> tuple[str, str]:
    """Our keyring messages end in "Fix: ..."; doctor shows the two parts apart."""
    head, sep, fix = message.partition(" Fix: ")
    return (head.rstrip(" ."), fix) if sep else (message, "")


@dataclass
class Doctor:
    """The checks, with everything they touch injectable (tests use a temporary HOME, a fake
    registry, an in-memory keyring)."""

    platform: Platform = field(default_factory=current_platform)
    home: Path = field(default_factory=Path.home)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: Path = Path("/")
    registry: WinReg | None = None
    state_home: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    secrets_for: SecretsFor = _keyring_secrets
    open_store: StoreOpener = _open_imap
    keyring_verdict: Callable[[], Any] | None = None

    def run(self) -> list[Check]:
        checks = [
            Check(
                "autocrypt-sma",
                "ok",
                f"version {__version__}, Python {sys.version.split()[0]} at {sys.executable}",
            )
        ]
        checks += self.manifest_checks()
        keyring_ok = True
        for check in self.keyring_checks():
            keyring_ok = keyring_ok and check.status == "ok"
            checks.append(check)
        checks += self.account_checks(keyring_ok)
        return checks

    # --- manifests and the launch ------------------------------------------------------------
    def find_manifest(self, app: App) -> tuple[Path | None, list[str]]:
        """The manifest `app` would use, and where it looked (in its order)."""
        if self.platform == "windows":
            looked = []
            registry = self.registry or real_winreg()
            for hive in ("HKEY_CURRENT_USER", "HKEY_LOCAL_MACHINE"):
                looked.append(f"{hive}\\{REGISTRY_KEY}")
                value = registry_read(registry, hive)
                if value:
                    return Path(value), looked
            return None, looked
        order = lookup_order(Scope(self.platform, False, self.home, self.env, self.root), app)
        for path in order:
            if path.is_file():
                return path, [str(p) for p in order]
        return None, [str(p) for p in order]

    def manifest_checks(self) -> list[Check]:
        checks: list[Check] = []
        launched: dict[tuple[Path, str], Check] = {}
        for app in APPS:
            title = APP_TITLES[app]
            path, looked = self.find_manifest(app)
            if path is None:
                if app == "thunderbird":
                    checks.append(
                        Check(
                            f"{title} manifest",
                            "problem",
                            "no native-messaging manifest found (looked in: "
                            + "; ".join(looked)
                            + ")",
                            INSTALL_FIX,
                        )
                    )
                else:
                    checks.append(
                        Check(
                            f"{title} manifest",
                            "skip",
                            "not set up; needed only to use the add-on in Firefox "
                            "(`autocrypt-sma install --app firefox`)",
                        )
                    )
                continue
            manifest_checks, launcher = self._check_manifest_file(title, path)
            checks += manifest_checks
            if launcher is None:
                continue
            key = (path, launcher)
            if key in launched:
                prior = launched[key]
                checks.append(
                    Check(f"{title} starts the host", prior.status, prior.detail, prior.fix)
                )
            else:
                launched[key] = self._launch(title, path, launcher)
                checks.append(launched[key])
        return checks

    def _check_manifest_file(self, title: str, path: Path) -> tuple[list[Check], str | None]:
        name = f"{title} manifest"
        if not path.is_file():
            return [
                Check(
                    name, "problem", f"the registry names {path}, which does not exist", INSTALL_FIX
                )
            ], None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return [
                Check(
                    name,
                    "problem",
                    f"{path} is not readable JSON ({exc})",
                    INSTALL_FIX + " --force",
                )
            ], None
        problems = check_manifest(manifest, path)
        if problems:
            return [
                Check(name, "problem", f"{path}: {problem}", fix) for problem, fix in problems
            ], None
        launcher: str = manifest["path"]
        checks = [Check(name, "ok", str(path))]
        launcher_path = Path(launcher)
        if not launcher_path.is_file():
            checks.append(
                Check(
                    f"{title} launcher",
                    "problem",
                    f"the manifest names {launcher}, which does not exist",
                    INSTALL_FIX,
                )
            )
            return checks, None
        if self.platform != "windows" and not os.access(launcher_path, os.X_OK):
            checks.append(
                Check(
                    f"{title} launcher",
                    "problem",
                    f"{launcher} is not executable",
                    f"`chmod 755 {launcher}`, or {INSTALL_FIX}",
                )
            )
            return checks, None
        if is_ours(launcher_path):
            python = pinned_python(launcher_path.read_text(encoding="utf-8", errors="replace"))
            if python is not None and not Path(python).exists():
                checks.append(
                    Check(
                        f"{title} launcher",
                        "problem",
                        f"{launcher} starts {python}, which no longer exists (a removed "
                        "virtualenv or Python upgrade?)",
                        f"{INSTALL_FIX} again with the Python that has autocrypt-sma installed",
                    )
                )
                return checks, None
        return checks, launcher

    def launch_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k in PASSED_TO_HOST}
        if self.platform == "windows":
            env["PATH"] = self.env.get("PATH", "")
        else:
            env["PATH"] = "/usr/bin:/bin"
        return env

    def _launch(self, title: str, manifest: Path, launcher: str) -> Check:
        name = f"{title} starts the host"
        with tempfile.TemporaryFile() as errors:
            started = time.monotonic()
            try:
                host = HostProcess(
                    [launcher],
                    manifest_path=str(manifest),
                    addon_id=ADDON_ID,
                    env=self.launch_env(),
                    stderr=errors,
                )
            except OSError as exc:
                return Check(name, "problem", f"{launcher} cannot be started: {exc}", INSTALL_FIX)
            try:
                result = host.call("ping", timeout=self.timeout)
                elapsed = (time.monotonic() - started) * 1000
            except (HostCallError, HostGone, TimeoutError, OSError) as exc:
                _stop(host)
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-3:]
                said = f"; its error output ends: {' | '.join(tail)}" if tail else ""
                return Check(
                    name,
                    "problem",
                    f"{launcher} did not answer ping ({exc}){said}",
                    f"run `{launcher}` in a terminal to see why, then {INSTALL_FIX} again",
                )
            _stop(host)
        version = result.get("host_version")
        detail = f"{launcher} answered ping (autocrypt-sma {version}, {elapsed:.0f} ms)"
        if version != __version__:
            detail += f"; this command is version {__version__}"
        return Check(name, "ok", detail)

    # --- the keyring -------------------------------------------------------------------------
    def keyring_checks(self) -> list[Check]:
        from native_host.adapters.keyring_secrets import current_verdict, fix_words

        verdict = (self.keyring_verdict or current_verdict)()
        if verdict.usable is None:
            return [
                Check(
                    "keyring",
                    "problem",
                    f"no usable OS keyring: {verdict.problem}",
                    fix_words(mention_doctor=False),
                )
            ]
        chosen = "chosen by you" if verdict.explicit else "chosen by keyring"
        try:
            self.secrets_for("doctor").get("probe")
        except SecretStoreUnavailable as exc:
            detail, fix = _split_fix(str(exc))
            return [
                Check(
                    "keyring",
                    "problem",
                    f"{verdict.usable_name}: {detail}",
                    fix or fix_words(mention_doctor=False),
                )
            ]
        return [Check("keyring", "ok", f"{verdict.usable_name} ({chosen}) answers")]

    # --- accounts ----------------------------------------------------------------------------
    def _state_home(self) -> Path:
        if self.state_home is not None:
            return self.state_home
        from native_host.session import state_home

        return state_home()

    def accounts(self) -> Iterator[tuple[str, AccountRecord]]:
        from native_host.service.accounts import AccountFiles

        instances = self._state_home() / "instances"
        if not instances.is_dir():
            return
        for directory in sorted(p for p in instances.iterdir() if p.is_dir()):
            for record in AccountFiles(directory).all():
                yield directory.name, record

    def account_checks(self, keyring_ok: bool) -> list[Check]:
        try:
            found = list(self.accounts())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return [
                Check(
                    "accounts",
                    "problem",
                    f"cannot read the account files under {self._state_home()}: {exc}",
                    "configure the accounts again in the add-on",
                )
            ]
        if not found:
            return [Check("accounts", "ok", "none configured yet (the add-on sets one up)")]
        return [self._login(instance, record, keyring_ok) for instance, record in found]

    def _login(self, instance: str, record: AccountRecord, keyring_ok: bool) -> Check:
        name = f"account {record.account} (instance {instance})"
        imap = record.imap
        where = f"{imap.host}:{imap.port}"
        if record.auth.kind == "oauth2-thunderbird":
            return self._thunderbird_oauth2(name, imap)
        if record.auth.kind == "oauth2-command":
            return self._command_oauth2(name, record)
        if not keyring_ok:
            return Check(name, "skip", "needs the keyring (see above)")
        try:
            password = self.secrets_for(instance).get(password_name(record.account))
        except SecretStoreUnavailable as exc:
            detail, fix = _split_fix(str(exc))
            return Check(name, "problem", detail, fix)
        if password is None:
            return Check(
                name,
                "problem",
                "its IMAP password is not in the keyring",
                "configure the account again in the add-on (it stores the password)",
            )
        try:
            store = self.open_store(imap, password, self.timeout)
            try:
                store.list_folders("")
            finally:
                store.close()
        except StoreAuthError:
            return Check(
                name,
                "problem",
                f"the IMAP server {where} refused the login of {imap.username}",
                "the password or user name changed: configure the account again in the add-on",
            )
        except StoreError as exc:
            return _unreachable(name, imap, exc)
        return Check(name, "ok", f"IMAP login to {where} as {imap.username} works")

    def _thunderbird_oauth2(self, name: str, imap: ImapSettings) -> Check:
        """Tokens live in Thunderbird (and the running host's memory): doctor cannot have one,
        so it says so and checks what it can, that the server takes OAuth2 tokens at all."""
        from native_host.adapters.imap_login import MechanismProbe, MechanismProbed

        where = f"{imap.host}:{imap.port}"
        probe = MechanismProbe()
        try:
            self.open_store(imap, probe, self.timeout).close()
        except MechanismProbed:
            pass
        except StoreError as exc:
            return _unreachable(name, imap, exc)
        if probe.mechanism is None:
            return Check(
                name,
                "problem",
                f"OAuth2 account, but {where} offers neither OAUTHBEARER nor XOAUTH2",
                "check the server settings in Thunderbird (Account Settings → Server Settings)",
            )
        return Check(
            name,
            "ok",
            f"OAuth2: Thunderbird supplies the tokens (the host asks it when it needs one); "
            f"{where} offers {probe.mechanism}",
        )

    def _command_oauth2(self, name: str, record: AccountRecord) -> Check:
        """Runs the token command and logs in with its token (never shown)."""
        from native_host.adapters.imap_login import TokenLogin
        from native_host.service.token_command import CommandTokens, TokenCommandError

        imap = record.imap
        where = f"{imap.host}:{imap.port}"
        program = os.path.basename(record.auth.command[0]) if record.auth.command else "?"
        source = CommandTokens(record.account, record.auth.command, time.time)
        try:
            source.token()  # its own failure first: clearer than a failed login
            store = self.open_store(imap, TokenLogin(source), self.timeout)
            try:
                store.list_folders("")
            finally:
                store.close()
        except TokenCommandError as exc:
            refused = "refused" in str(exc)
            return Check(
                name,
                "problem",
                str(exc)[:400],
                "sign in again with the token tool (its refresh token may be revoked)"
                if refused
                else f"run the token command ({program}) by hand and fix what it says",
            )
        except StoreAuthError as exc:
            return Check(name, "problem", str(exc)[:300], "check the user name and the server")
        except StoreError as exc:
            return _unreachable(name, imap, exc)
        return Check(
            name,
            "ok",
            f"OAuth2: the token command ({program}) gave a token; IMAP login to {where} "
            f"as {imap.username} works",
        )


def _unreachable(name: str, imap: ImapSettings, exc: StoreError) -> Check:
    return Check(
        name,
        "problem",
        f"cannot use the IMAP server {imap.host}:{imap.port} ({imap.security}): {str(exc)[:300]}",
        "check the network and the server settings (host, port, security)",
    )


def _stop(host: HostProcess) -> None:
    """Close like Thunderbird does; a host that already died makes closing its stdin fail."""
    try:
        host.close(timeout=2)
    except OSError:  # broken pipe: stdin is closed anyway, the process is gone or going
        host.proc.kill()
        host.proc.wait(timeout=2)


def summary(checks: list[Check]) -> str:
    problems = sum(1 for c in checks if c.status == "problem")
    if not problems:
        return "All checks passed."
    return f"{problems} problem{'s' if problems != 1 else ''} found."
