"""`autocrypt-sma install` / `uninstall`: register the native host where Thunderbird and Firefox
look for it, on Linux, macOS and Windows.

Two things are written per scope (the user's, or with `--system` the machine's):

- a launcher that pins the absolute interpreter of this installation, because the mail client
  starts the host with a bare environment (no shell profile, no virtualenv on PATH);
- the native-messaging manifest naming that launcher, in each application's directory (on
  Windows: next to the launcher, plus a registry key whose default value is its path).

Every file is written atomically (a temporary file, then `os.replace`) and only when its content
changes, so running install twice is harmless. Files carry the marker "installed by autocrypt-sma
install" (the manifest in its `description`, which Gecko shows nowhere and does not interpret);
install refuses to replace a file without it unless `--force`, and uninstall removes only files
with it. The file templates live in `manifests/`; the copies here are checked against them by
tests/unit/test_install.py (a wheel does not carry `manifests/`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from native_host.cli.client import ADDON_ID, HOST_NAME

Platform = Literal["linux", "darwin", "windows"]
App = Literal["thunderbird", "firefox"]
APPS: tuple[App, ...] = ("thunderbird", "firefox")
PLATFORMS: tuple[Platform, ...] = ("linux", "darwin", "windows")
APP_TITLES: dict[App, str] = {"thunderbird": "Thunderbird", "firefox": "Firefox"}

MARKER = "installed by autocrypt-sma install"
NAME_RULE = re.compile(r"\w+(\.\w+)*")  # Gecko's rule for a host name (and the file stem)
REGISTRY_KEY = "Software\\Mozilla\\NativeMessagingHosts\\" + HOST_NAME
MANIFEST_FILE = f"{HOST_NAME}.json"
POSIX_LAUNCHER = "autocrypt-sma-launcher"
WINDOWS_LAUNCHER = "autocrypt-sma-launcher.bat"

# Copies of manifests/*.template (a test keeps them equal).
MANIFEST_TEMPLATE = """{
  "name": "org.autocrypt.sma",
  "description": "autocrypt-sma native host: one Autocrypt identity across your mail clients (installed by autocrypt-sma install)",
  "path": "{launcher_path}",
  "type": "stdio",
  "allowed_extensions": ["autocrypt-sma@autocrypt.org"]
}
"""
POSIX_LAUNCHER_TEMPLATE = """#!/bin/sh
# org.autocrypt.sma launcher (installed by autocrypt-sma install).
# Thunderbird and Firefox start the host named in the manifest with a bare environment (no
# shell profile, no virtualenv), so this pins the Python of the installation that wrote it.
exec {python} -P -m native_host "$@"
"""
WINDOWS_LAUNCHER_TEMPLATE = """@echo off
rem org.autocrypt.sma launcher (installed by autocrypt-sma install).
rem Thunderbird and Firefox start the host named in the manifest with a bare environment, so
rem this pins the Python of the installation that wrote it.
"{python}" -P -m native_host %*
"""


class InstallError(Exception):
    """Install or uninstall cannot go ahead; the message says why and what to do."""


def current_platform() -> Platform:
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform.startswith("win"):
        return "windows"
    return "linux"


# --- where things go --------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """Whose installation: a user's (home, environment) or the machine's (`system`).

    `root` prefixes the fixed system paths, so tests can lay out a system install in a
    temporary directory; it is "/" in real use.
    """

    platform: Platform
    system: bool = False
    home: Path = field(default_factory=Path.home)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: Path = Path("/")

    def _sys(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _windows_base(self) -> Path:
        if self.system:
            return Path(
                self.env.get("ProgramData") or self.env.get("PROGRAMDATA") or "C:\\ProgramData"
            )
        # Local, not roaming: the launcher pins this machine's interpreter.
        local = self.env.get("LOCALAPPDATA") or self.env.get("APPDATA")
        return Path(local) if local else self.home / "AppData" / "Local"

    def launcher_dir(self) -> Path:
        if self.platform == "windows":
            return self._windows_base() / "autocrypt-sma" / "native-host"
        if self.platform == "darwin":
            base = self._sys("/Library") if self.system else self.home / "Library"
            return base / "Application Support" / "autocrypt-sma" / "native-host"
        if self.system:
            return self._sys("/usr/local/lib/autocrypt-sma")
        data = self.env.get("XDG_DATA_HOME") or str(self.home / ".local" / "share")
        return Path(data) / "autocrypt-sma" / "native-host"

    def launcher_path(self) -> Path:
        name = WINDOWS_LAUNCHER if self.platform == "windows" else POSIX_LAUNCHER
        return self.launcher_dir() / name

    def manifest_dirs(self, app: App) -> list[Path]:
        """Where `app` reads manifests in this scope, in the order it looks."""
        if self.platform == "windows":
            return [self.launcher_dir()]  # any folder: the registry key points at the file
        if self.platform == "darwin":
            if self.system:
                return [self._sys("/Library/Application Support/Mozilla/NativeMessagingHosts")]
            if app == "thunderbird":
                return [self.home / "Library" / "Mozilla" / "NativeMessagingHosts"]
            return [
                self.home / "Library" / "Application Support" / "Mozilla" / "NativeMessagingHosts"
            ]
        if self.system:
            dirs = [self._sys("/usr/lib/mozilla/native-messaging-hosts")]
            if self._sys("/usr/lib64").is_dir():
                dirs.append(self._sys("/usr/lib64/mozilla/native-messaging-hosts"))
            return dirs
        return [self.home / ".mozilla" / "native-messaging-hosts"]

    def manifest_paths(self, apps: Iterable[App]) -> dict[Path, list[App]]:
        """Each manifest file to write, with the applications that read it."""
        paths: dict[Path, list[App]] = {}
        for app in apps:
            for directory in self.manifest_dirs(app):
                paths.setdefault(directory / MANIFEST_FILE, []).append(app)
        return paths

    @property
    def hive(self) -> str:
        return "HKEY_LOCAL_MACHINE" if self.system else "HKEY_CURRENT_USER"


def lookup_order(scope_user: Scope, app: App) -> list[Path]:
    """The manifest files `app` tries on Linux or macOS, in order; the first one found wins.

    The user's directory comes first, then the system's (on Linux both /usr/lib and /usr/lib64,
    whichever exists).
    """
    system = Scope(scope_user.platform, True, scope_user.home, scope_user.env, scope_user.root)
    dirs = scope_user.manifest_dirs(app) + system.manifest_dirs(app)
    if scope_user.platform == "linux":
        lib64 = system.root / "usr/lib64/mozilla/native-messaging-hosts"
        dirs = [*dirs, lib64] if lib64 not in dirs else dirs
    return [d / MANIFEST_FILE for d in dirs]


# --- the Windows registry, behind the few winreg calls we make ---------------------------------
class WinReg(Protocol):
    """The part of the `winreg` module the installer uses; tests pass a fake."""

    HKEY_CURRENT_USER: int
    HKEY_LOCAL_MACHINE: int
    REG_SZ: int
    KEY_READ: int
    KEY_WRITE: int
    KEY_WOW64_64KEY: int

    def CreateKeyEx(
        self, key: Any, sub_key: str, reserved: int = ..., access: int = ...
    ) -> Any: ...

    def OpenKey(self, key: Any, sub_key: str, reserved: int = ..., access: int = ...) -> Any: ...

    def SetValueEx(
        self, key: Any, value_name: str | None, reserved: int, type: int, value: str
    ) -> None: ...

    def QueryValueEx(self, key: Any, value_name: str | None) -> tuple[Any, int]: ...

    def DeleteKeyEx(
        self, key: Any, sub_key: str, access: int = ..., reserved: int = ...
    ) -> None: ...

    def CloseKey(self, hkey: Any) -> None: ...


def real_winreg() -> WinReg:
    """The `winreg` module (Windows only), imported so that mypy on Linux accepts it."""
    try:
        return cast(WinReg, importlib.import_module("winreg"))
    except ImportError:
        raise InstallError(
            "the Windows registry is reachable only on Windows: use --dry-run to see the plan"
        ) from None


def _hive(reg: WinReg, hive: str) -> Any:
    return reg.HKEY_LOCAL_MACHINE if hive == "HKEY_LOCAL_MACHINE" else reg.HKEY_CURRENT_USER


def registry_read(reg: WinReg, hive: str, key: str = REGISTRY_KEY) -> str | None:
    """The key's default value, as Gecko reads it (the 64-bit view), or None."""
    try:
        handle = reg.OpenKey(_hive(reg, hive), key, 0, reg.KEY_READ | reg.KEY_WOW64_64KEY)
    except OSError:
        return None
    try:
        value, _kind = reg.QueryValueEx(handle, None)
    except OSError:
        return None
    finally:
        reg.CloseKey(handle)
    return value if isinstance(value, str) else None


def registry_write(reg: WinReg, hive: str, value: str, key: str = REGISTRY_KEY) -> None:
    handle = reg.CreateKeyEx(_hive(reg, hive), key, 0, reg.KEY_WRITE | reg.KEY_WOW64_64KEY)
    try:
        reg.SetValueEx(handle, None, 0, reg.REG_SZ, value)
    finally:
        reg.CloseKey(handle)


def registry_delete(reg: WinReg, hive: str, key: str = REGISTRY_KEY) -> None:
    with contextlib.suppress(FileNotFoundError):
        reg.DeleteKeyEx(_hive(reg, hive), key, reg.KEY_WOW64_64KEY, 0)


# --- file contents ------------------------------------------------------------------------------
def render_manifest(launcher: Path | str) -> bytes:
    """The manifest text: the template with the launcher's absolute path filled in (JSON-escaped)."""
    text = MANIFEST_TEMPLATE.replace('"{launcher_path}"', json.dumps(str(launcher)))
    return text.encode()


def render_launcher(platform: Platform, python: str) -> bytes:
    if platform == "windows":
        # In a .bat file `%` starts a variable, even inside quotes.
        text = WINDOWS_LAUNCHER_TEMPLATE.replace("{python}", python.replace("%", "%%"))
        return text.replace("\n", "\r\n").encode()
    return POSIX_LAUNCHER_TEMPLATE.replace("{python}", shlex.quote(python)).encode()


def pinned_python(launcher_text: str) -> str | None:
    """The interpreter a launcher of ours starts (doctor checks it still exists)."""
    for line in launcher_text.splitlines():
        line = line.strip()
        if line.startswith("exec ") and line.endswith('-P -m native_host "$@"'):
            words = shlex.split(line)
            return words[1] if len(words) > 1 else None
        if line.startswith('"') and line.endswith("-P -m native_host %*"):
            return line[1:].split('"', 1)[0].replace("%%", "%")
    return None


def is_ours(path: Path) -> bool:
    """A file this installer wrote: it carries the marker (manifests: in `description`)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix == ".json":
        try:
            manifest = json.loads(data)
        except ValueError:
            return False
        return isinstance(manifest, dict) and MARKER in str(manifest.get("description", ""))
    return MARKER.encode() in data


def write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Replace `path` with `content` in one step: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- plans ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One change: write or remove a file, set or delete the registry key."""

    action: Literal["write", "unchanged", "remove", "registry-set", "registry-delete", "keep"]
    target: str
    note: str = ""
    content: bytes | None = None
    mode: int = 0o644

    def describe(self, dry_run: bool) -> str:
        verbs = {
            "write": ("would write", "wrote"),
            "unchanged": ("unchanged", "unchanged"),
            "remove": ("would remove", "removed"),
            "registry-set": ("would set", "set"),
            "registry-delete": ("would delete", "deleted"),
            "keep": ("would keep", "kept"),
        }
        verb = verbs[self.action][0 if dry_run else 1]
        return f"{verb:<12} {self.target}" + (f"  ({self.note})" if self.note else "")


@dataclass
class Plan:
    scope: Scope
    steps: list[Step] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def apply(self, registry: WinReg | None) -> None:
        for step in self.steps:
            if step.action == "write":
                assert step.content is not None
                write_atomic(Path(step.target), step.content, step.mode)
            elif step.action == "remove":
                Path(step.target).unlink(missing_ok=True)
                _remove_empty_dir(Path(step.target).parent)
            elif step.action in ("registry-set", "registry-delete"):
                reg = registry or real_winreg()
                if step.action == "registry-set":
                    assert step.content is not None
                    registry_write(reg, self.scope.hive, step.content.decode())
                else:
                    registry_delete(reg, self.scope.hive)

    def lines(self, dry_run: bool) -> list[str]:
        return [step.describe(dry_run) for step in self.steps]


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # only if empty


def _file_step(path: Path, content: bytes, mode: int, note: str, force: bool, plan: Plan) -> None:
    if path.exists() or path.is_symlink():
        try:
            same = path.read_bytes() == content and (
                os.name == "nt" or (path.stat().st_mode & 0o777) == mode
            )
        except OSError:
            same = False
        if same:
            plan.steps.append(Step("unchanged", str(path), note))
            return
        if not is_ours(path) and not force:
            plan.conflicts.append(
                f"{path} exists and was not written by autocrypt-sma install; "
                "look at it, then run again with --force to replace it"
            )
            return
    plan.steps.append(Step("write", str(path), note, content, mode))


def _apps(app: str) -> tuple[App, ...]:
    if app == "all":
        return APPS
    if app not in APPS:
        raise InstallError(f"unknown application {app!r}: thunderbird, firefox or all")
    return (app,)


def plan_install(
    scope: Scope,
    app: str = "all",
    *,
    python: str | None = None,
    force: bool = False,
    registry: WinReg | None = None,
) -> Plan:
    """What install would change; nothing is touched yet."""
    python = python or sys.executable
    if not python or not _is_absolute(python):
        raise InstallError(
            "cannot tell which Python runs autocrypt-sma (sys.executable is not an absolute path)"
        )
    plan = Plan(scope)
    launcher = scope.launcher_path()
    _file_step(
        launcher, render_launcher(scope.platform, python), 0o755, f"launcher: {python}", force, plan
    )
    manifest_bytes = render_manifest(launcher)
    for path, apps in scope.manifest_paths(_apps(app)).items():
        note = "manifest for " + ", ".join(APP_TITLES[a] for a in apps)
        if scope.platform == "windows":
            note = "manifest; Thunderbird and Firefox find it through the registry key"
        _file_step(path, manifest_bytes, 0o644, note, force, plan)
        if scope.platform == "windows":
            key = f"{scope.hive}\\{REGISTRY_KEY}"
            current = registry_read(registry, scope.hive) if registry is not None else None
            if current == str(path):
                plan.steps.append(Step("unchanged", key, f"= {path}"))
            elif current is not None and not force and not is_ours(Path(current)):
                plan.conflicts.append(
                    f"{key} points to {current}, which autocrypt-sma install did not write; "
                    "run again with --force to point it at this installation"
                )
            else:
                plan.steps.append(Step("registry-set", key, f"= {path}", str(path).encode()))
    return plan


def plan_uninstall(scope: Scope, app: str = "all", *, registry: WinReg | None = None) -> Plan:
    """What uninstall would remove: only files (and the key) that install wrote."""
    plan = Plan(scope)
    removed: set[Path] = set()
    for path, apps in scope.manifest_paths(_apps(app)).items():
        if not path.exists():
            continue
        if not is_ours(path):
            plan.steps.append(Step("keep", str(path), "not written by autocrypt-sma install"))
            continue
        shared = scope.manifest_paths(APPS)[path]
        note = ""
        if set(shared) - set(apps):
            note = "also read by " + ", ".join(APP_TITLES[a] for a in shared if a not in apps)
        plan.steps.append(Step("remove", str(path), note))
        removed.add(path)
    if scope.platform == "windows":
        current = registry_read(registry, scope.hive) if registry is not None else None
        if (current is not None and Path(current) in removed) or (registry is None and removed):
            plan.steps.append(Step("registry-delete", f"{scope.hive}\\{REGISTRY_KEY}"))
    launcher = scope.launcher_path()
    remaining = [
        p for p in scope.manifest_paths(APPS) if p not in removed and p.exists() and is_ours(p)
    ]
    if launcher.exists() and is_ours(launcher) and not remaining:
        plan.steps.append(Step("remove", str(launcher), "launcher"))
    return plan


def next_steps(scope: Scope) -> list[str]:
    """What the user does after a successful install."""
    return [
        "Next: install the add-on (the .xpi) in Thunderbird (Add-ons and Themes, gear menu,",
        "      Install Add-on From File), then run `autocrypt-sma doctor` to check everything.",
    ]


def run_install(
    scope: Scope,
    app: str = "all",
    *,
    dry_run: bool = False,
    force: bool = False,
    python: str | None = None,
    registry: WinReg | None = None,
) -> list[str]:
    """Install (or with dry_run, describe); the lines to print. InstallError if it cannot."""
    registry = _registry_for(scope, registry, dry_run)
    plan = plan_install(scope, app, python=python, force=force, registry=registry)
    if plan.conflicts:
        raise InstallError("nothing was changed:\n  " + "\n  ".join(plan.conflicts))
    if not dry_run:
        _apply(plan, registry)
    return plan.lines(dry_run)


def run_uninstall(
    scope: Scope, app: str = "all", *, dry_run: bool = False, registry: WinReg | None = None
) -> list[str]:
    registry = _registry_for(scope, registry, dry_run)
    plan = plan_uninstall(scope, app, registry=registry)
    if not dry_run:
        _apply(plan, registry)
    return plan.lines(dry_run) or ["nothing to remove: autocrypt-sma is not installed here"]


def _registry_for(scope: Scope, registry: WinReg | None, dry_run: bool) -> WinReg | None:
    """The registry to use: the one given, else the real one; a dry run of a Windows layout on
    another system goes ahead without it (the key is then shown as to be set)."""
    if registry is not None or scope.platform != "windows":
        return registry
    try:
        return real_winreg()
    except InstallError:
        if dry_run:
            return None
        raise


def _apply(plan: Plan, registry: WinReg | None) -> None:
    try:
        plan.apply(registry)
    except PermissionError as exc:
        where = "as an administrator" if plan.scope.platform == "windows" else "with sudo"
        hint = f"; a --system install needs to run {where}" if plan.scope.system else ""
        raise InstallError(f"permission denied: {exc.filename or exc}{hint}") from None


def describe_scope(scope: Scope) -> str:
    return f"{'system' if scope.system else 'user'} install for {scope.platform}"


def check_manifest(manifest: Any, path: Path) -> list[tuple[str, str]]:
    """Gecko's checks on a manifest it found at `path`: (problem, fix) pairs, none when fine."""
    fix = "run `autocrypt-sma install` (add --force to replace a file it did not write)"
    if not isinstance(manifest, dict):
        return [("the manifest is not a JSON object", fix)]
    problems: list[tuple[str, str]] = []
    name = manifest.get("name")
    if name != HOST_NAME or not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        problems.append((f"its name is {name!r}, not {HOST_NAME!r}", fix))
    if path.name != f"{HOST_NAME}.json" and path.suffix == ".json":
        problems.append((f"the file is named {path.name}, not {HOST_NAME}.json", fix))
    if manifest.get("type") != "stdio":
        problems.append((f"its type is {manifest.get('type')!r}, not 'stdio'", fix))
    allowed = manifest.get("allowed_extensions")
    if not isinstance(allowed, list) or ADDON_ID not in allowed:
        problems.append((f"it does not allow the add-on {ADDON_ID}", fix))
    launcher = manifest.get("path")
    if not isinstance(launcher, str) or not launcher:
        problems.append(("it names no program (path)", fix))
    elif not _is_absolute(launcher):
        problems.append((f"its path {launcher!r} is not absolute", fix))
    return problems


def _is_absolute(path: str) -> bool:
    return os.path.isabs(path) or bool(re.match(r"^[A-Za-z]:[\\/]", path))
