"""The installer on all three platform layouts, in temporary homes (Windows through a fake
`winreg`), and its templates against manifests/."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from native_host.cli import install
from native_host.cli import main as cli
from native_host.cli.client import ADDON_ID, HOST_NAME
from native_host.cli.install import InstallError, Scope, plan_install, run_install, run_uninstall

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/opt/py env/bin/python3"  # a space, to prove the launcher quotes it


@dataclass(frozen=True)
class Handle:
    hive: int
    key: str
    access: int


class FakeRegistry:
    """Records keys and default values like winreg, and checks the calls are made as Gecko
    needs them (64-bit view, string values, handles closed)."""

    HKEY_CURRENT_USER = 0x80000001
    HKEY_LOCAL_MACHINE = 0x80000002
    REG_SZ = 1
    KEY_READ = 0x20019
    KEY_WRITE = 0x20006
    KEY_WOW64_64KEY = 0x0100

    def __init__(self) -> None:
        self.values: dict[tuple[int, str], str | None] = {}
        self.open = 0

    def _handle(self, hive: int, key: str, access: int) -> Handle:
        assert access & self.KEY_WOW64_64KEY, "Gecko reads the 64-bit registry view"
        self.open += 1
        return Handle(hive, key, access)

    def CreateKeyEx(self, key: int, sub_key: str, reserved: int = 0, access: int = 0) -> Handle:
        self.values.setdefault((key, sub_key), None)
        return self._handle(key, sub_key, access)

    def OpenKey(self, key: int, sub_key: str, reserved: int = 0, access: int = 0) -> Handle:
        if (key, sub_key) not in self.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self._handle(key, sub_key, access)

    def SetValueEx(
        self, key: Handle, value_name: str | None, reserved: int, type: int, value: str
    ) -> None:
        assert value_name is None
        assert type == self.REG_SZ
        assert isinstance(value, str)
        assert key.access & self.KEY_WRITE
        self.values[(key.hive, key.key)] = value

    def QueryValueEx(self, key: Handle, value_name: str | None) -> tuple[Any, int]:
        value = self.values.get((key.hive, key.key))
        if value is None:
            raise FileNotFoundError(2, "no default value")
        return value, self.REG_SZ

    def DeleteKeyEx(self, key: int, sub_key: str, access: int = 0, reserved: int = 0) -> None:
        assert access & self.KEY_WOW64_64KEY
        if self.values.pop((key, sub_key), "missing") == "missing":
            raise FileNotFoundError(2, "no such key")

    def CloseKey(self, hkey: Handle) -> None:
        self.open -= 1


def user(tmp_path: Path, platform: install.Platform, **env: str) -> Scope:
    return Scope(platform, False, tmp_path / "home", env, tmp_path / "root")


def system(tmp_path: Path, platform: install.Platform, **env: str) -> Scope:
    return Scope(platform, True, tmp_path / "home", env, tmp_path / "root")


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def assert_gecko_accepts(manifest_path: Path) -> dict[str, Any]:
    manifest = json.loads(manifest_path.read_text())
    assert manifest["name"] == HOST_NAME == manifest_path.stem
    assert re.fullmatch(r"\w+(\.\w+)*", manifest["name"])
    assert manifest["type"] == "stdio"
    assert manifest["allowed_extensions"] == [ADDON_ID]
    assert os.path.isabs(manifest["path"])
    assert install.MARKER in manifest["description"]
    assert install.check_manifest(manifest, manifest_path) == []
    return manifest


# --- templates ------------------------------------------------------------------------------
def test_the_installers_templates_are_the_ones_in_manifests() -> None:
    folder = ROOT / "manifests"
    assert (folder / f"{HOST_NAME}.json.template").read_text() == install.MANIFEST_TEMPLATE
    assert (folder / "launcher.sh.template").read_text() == install.POSIX_LAUNCHER_TEMPLATE
    assert (folder / "launcher.bat.template").read_text() == install.WINDOWS_LAUNCHER_TEMPLATE


def test_launchers_pin_the_interpreter_and_pass_the_arguments_on() -> None:
    posix = install.render_launcher("linux", PYTHON).decode()
    assert posix.startswith("#!/bin/sh\n")
    assert "exec '/opt/py env/bin/python3' -P -m native_host \"$@\"\n" in posix
    assert install.pinned_python(posix) == PYTHON
    bat = install.render_launcher("windows", r"C:\Py 100%\python.exe").decode()
    assert bat.startswith("@echo off\r\n")
    assert '"C:\\Py 100%%\\python.exe" -P -m native_host %*\r\n' in bat
    assert "\n" not in bat.replace("\r\n", "")
    assert install.pinned_python(bat) == r"C:\Py 100%\python.exe"
    assert install.MARKER in posix
    assert install.MARKER in bat


def test_a_windows_path_is_escaped_in_the_manifest() -> None:
    text = install.render_manifest(r"C:\Users\A\x.bat")
    assert json.loads(text)["path"] == r"C:\Users\A\x.bat"


# --- Linux ----------------------------------------------------------------------------------
def test_linux_user_install_writes_one_manifest_for_both_apps_and_a_launcher(
    tmp_path: Path,
) -> None:
    scope = user(tmp_path, "linux")
    lines = run_install(scope, python=PYTHON)
    home = tmp_path / "home"
    manifest = home / ".mozilla/native-messaging-hosts/org.autocrypt.sma.json"
    launcher = home / ".local/share/autocrypt-sma/native-host/autocrypt-sma-launcher"
    assert files_under(home) == {
        str(manifest.relative_to(home)),
        str(launcher.relative_to(home)),
    }
    assert assert_gecko_accepts(manifest)["path"] == str(launcher)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o644
    assert install.pinned_python(launcher.read_text()) == PYTHON
    assert any("Thunderbird, Firefox" in line for line in lines)
    assert not (tmp_path / "root").exists()  # a user install touches no system path


def test_xdg_data_home_moves_the_launcher(tmp_path: Path) -> None:
    scope = user(tmp_path, "linux", XDG_DATA_HOME=str(tmp_path / "data"))
    run_install(scope, python=PYTHON)
    assert (tmp_path / "data/autocrypt-sma/native-host/autocrypt-sma-launcher").is_file()


def test_install_is_idempotent_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    scope = user(tmp_path, "linux")
    run_install(scope, python=PYTHON)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*") if p.is_file()}
    again = run_install(scope, python=PYTHON)
    assert all(line.startswith("unchanged") for line in again), again
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*") if p.is_file()}
    assert before == after
    # A new interpreter rewrites the launcher only.
    moved = run_install(scope, python="/usr/bin/python3")
    assert [line.split()[0] for line in moved] == ["wrote", "unchanged"]


def test_a_write_that_fails_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = user(tmp_path, "linux")
    run_install(scope, python=PYTHON)
    launcher = scope.launcher_path()
    old = launcher.read_bytes()

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(install.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        run_install(scope, python="/usr/bin/python3")
    assert launcher.read_bytes() == old
    assert sorted(p.name for p in launcher.parent.iterdir()) == [launcher.name]


def test_linux_system_install_covers_lib_and_lib64(tmp_path: Path) -> None:
    (tmp_path / "root/usr/lib64").mkdir(parents=True)
    run_install(system(tmp_path, "linux"), python=PYTHON)
    root = tmp_path / "root"
    assert files_under(root) == {
        "usr/lib/mozilla/native-messaging-hosts/org.autocrypt.sma.json",
        "usr/lib64/mozilla/native-messaging-hosts/org.autocrypt.sma.json",
        "usr/local/lib/autocrypt-sma/autocrypt-sma-launcher",
    }
    for manifest in root.rglob("*.json"):
        assert assert_gecko_accepts(manifest)["path"] == str(
            root / "usr/local/lib/autocrypt-sma/autocrypt-sma-launcher"
        )
    assert not (tmp_path / "home").exists()


def test_linux_system_install_without_lib64(tmp_path: Path) -> None:
    run_install(system(tmp_path, "linux"), python=PYTHON)
    assert not (tmp_path / "root/usr/lib64").exists()


def test_a_foreign_manifest_is_refused_without_force_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    scope = user(tmp_path, "linux")
    manifest = tmp_path / "home/.mozilla/native-messaging-hosts/org.autocrypt.sma.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"name": "org.autocrypt.sma", "description": "someone else"}')
    with pytest.raises(InstallError, match="was not written by autocrypt-sma install") as caught:
        run_install(scope, python=PYTHON)
    assert "--force" in str(caught.value)
    assert "someone else" in manifest.read_text()
    assert not scope.launcher_path().exists()  # all or nothing
    run_install(scope, python=PYTHON, force=True)
    assert_gecko_accepts(manifest)


def test_a_foreign_launcher_is_refused_too(tmp_path: Path) -> None:
    scope = user(tmp_path, "linux")
    scope.launcher_path().parent.mkdir(parents=True)
    scope.launcher_path().write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(InstallError):
        run_install(scope, python=PYTHON)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    lines = run_install(user(tmp_path, "linux"), python=PYTHON, dry_run=True)
    assert [line.split()[:2] for line in lines] == [["would", "write"], ["would", "write"]]
    assert not (tmp_path / "home").exists()


def test_uninstall_removes_what_install_wrote_and_nothing_else(tmp_path: Path) -> None:
    scope = user(tmp_path, "linux")
    run_install(scope, python=PYTHON)
    other = tmp_path / "home/.mozilla/native-messaging-hosts/org.example.other.json"
    other.write_text("{}")
    assert len(run_uninstall(scope, dry_run=True)) == 2
    assert scope.launcher_path().exists()
    lines = run_uninstall(scope)
    assert [line.split()[0] for line in lines] == ["removed", "removed"]
    assert files_under(tmp_path / "home") == {str(other.relative_to(tmp_path / "home"))}
    assert run_uninstall(scope) == ["nothing to remove: autocrypt-sma is not installed here"]


def test_uninstall_keeps_a_manifest_someone_else_wrote(tmp_path: Path) -> None:
    scope = user(tmp_path, "linux")
    run_install(scope, python=PYTHON)
    manifest = next(iter(scope.manifest_paths(install.APPS)))
    manifest.write_text('{"description": "replaced by hand"}')
    lines = run_uninstall(scope)
    assert manifest.exists()
    assert any(line.startswith("kept") for line in lines)
    assert not scope.launcher_path().exists()  # no manifest of ours names it any more


def test_uninstall_of_one_app_on_linux_says_the_other_reads_the_same_file(
    tmp_path: Path,
) -> None:
    scope = user(tmp_path, "linux")
    run_install(scope, python=PYTHON)
    lines = run_uninstall(scope, "firefox")
    assert "also read by Thunderbird" in lines[0]


def test_a_permission_error_says_how_to_get_the_rights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path, content: bytes, mode: int) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(install, "write_atomic", denied)
    with pytest.raises(InstallError, match="with sudo"):
        run_install(system(tmp_path, "linux"), python=PYTHON)


def test_a_relative_interpreter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="absolute"):
        run_install(user(tmp_path, "linux"), python="python3")


# --- macOS ----------------------------------------------------------------------------------
def test_macos_user_install_uses_each_apps_own_folder(tmp_path: Path) -> None:
    scope = user(tmp_path, "darwin")
    run_install(scope, python=PYTHON)
    home = tmp_path / "home"
    assert files_under(home) == {
        "Library/Mozilla/NativeMessagingHosts/org.autocrypt.sma.json",
        "Library/Application Support/Mozilla/NativeMessagingHosts/org.autocrypt.sma.json",
        "Library/Application Support/autocrypt-sma/native-host/autocrypt-sma-launcher",
    }
    for manifest in home.rglob("*.json"):
        assert_gecko_accepts(manifest)
    # Removing Firefox's keeps Thunderbird's, and the launcher it names.
    run_uninstall(scope, "firefox")
    assert files_under(home) == {
        "Library/Mozilla/NativeMessagingHosts/org.autocrypt.sma.json",
        "Library/Application Support/autocrypt-sma/native-host/autocrypt-sma-launcher",
    }
    run_uninstall(scope, "thunderbird")
    assert files_under(home) == set()


def test_macos_thunderbird_only(tmp_path: Path) -> None:
    run_install(user(tmp_path, "darwin"), "thunderbird", python=PYTHON)
    assert not (tmp_path / "home/Library/Application Support/Mozilla").exists()
    assert (tmp_path / "home/Library/Mozilla/NativeMessagingHosts/org.autocrypt.sma.json").exists()


def test_macos_system_install(tmp_path: Path) -> None:
    run_install(system(tmp_path, "darwin"), python=PYTHON)
    assert files_under(tmp_path / "root") == {
        "Library/Application Support/Mozilla/NativeMessagingHosts/org.autocrypt.sma.json",
        "Library/Application Support/autocrypt-sma/native-host/autocrypt-sma-launcher",
    }


# --- Windows --------------------------------------------------------------------------------
KEY = r"Software\Mozilla\NativeMessagingHosts\org.autocrypt.sma"


def test_windows_user_install_writes_manifest_bat_and_the_hkcu_key(tmp_path: Path) -> None:
    registry = FakeRegistry()
    local = tmp_path / "Local"
    scope = user(tmp_path, "windows", LOCALAPPDATA=str(local), APPDATA=str(tmp_path / "Roam"))
    python = r"C:\Python311\python.exe"
    lines = run_install(scope, python=python, registry=registry)
    folder = local / "autocrypt-sma" / "native-host"
    manifest = folder / "org.autocrypt.sma.json"
    bat = folder / "autocrypt-sma-launcher.bat"
    assert files_under(tmp_path) == {
        str(manifest.relative_to(tmp_path)),
        str(bat.relative_to(tmp_path)),
    }
    assert assert_gecko_accepts(manifest)["path"] == str(bat)
    assert install.pinned_python(bat.read_text()) == python
    assert registry.values == {(registry.HKEY_CURRENT_USER, KEY): str(manifest)}
    assert registry.open == 0
    assert any("HKEY_CURRENT_USER" in line for line in lines)
    again = run_install(scope, python=python, registry=registry)
    assert all(line.startswith("unchanged") for line in again), again
    run_uninstall(scope, registry=registry)
    assert registry.values == {}
    assert files_under(tmp_path) == set()
    assert registry.open == 0


def test_windows_system_install_uses_hklm_and_programdata(tmp_path: Path) -> None:
    registry = FakeRegistry()
    scope = system(tmp_path, "windows", ProgramData=str(tmp_path / "ProgramData"))
    run_install(scope, python=r"C:\Python311\python.exe", registry=registry)
    manifest = tmp_path / "ProgramData/autocrypt-sma/native-host/org.autocrypt.sma.json"
    assert registry.values == {(registry.HKEY_LOCAL_MACHINE, KEY): str(manifest)}
    assert_gecko_accepts(manifest)


def test_windows_key_pointing_elsewhere_needs_force(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.values[(registry.HKEY_CURRENT_USER, KEY)] = r"C:\Other\org.autocrypt.sma.json"
    scope = user(tmp_path, "windows", LOCALAPPDATA=str(tmp_path / "Local"))
    with pytest.raises(InstallError, match="points to"):
        run_install(scope, python=r"C:\P\python.exe", registry=registry)
    assert not (tmp_path / "Local").exists()
    run_install(scope, python=r"C:\P\python.exe", registry=registry, force=True)
    assert registry.values[(registry.HKEY_CURRENT_USER, KEY)].startswith(str(tmp_path))
    # Uninstall of a key that points elsewhere again leaves it alone.
    registry.values[(registry.HKEY_CURRENT_USER, KEY)] = r"C:\Other\org.autocrypt.sma.json"
    run_uninstall(scope, registry=registry)
    assert registry.values == {
        (registry.HKEY_CURRENT_USER, KEY): r"C:\Other\org.autocrypt.sma.json"
    }


def test_windows_dry_run_without_a_registry_still_shows_the_plan(tmp_path: Path) -> None:
    scope = user(tmp_path, "windows", LOCALAPPDATA=str(tmp_path / "Local"))
    lines = run_install(scope, python=r"C:\P\python.exe", dry_run=True)
    assert any(line.startswith("would set") and "HKEY_CURRENT_USER" in line for line in lines)
    with pytest.raises(InstallError, match="only on Windows"):
        run_install(scope, python=r"C:\P\python.exe")
    assert not (tmp_path / "Local").exists()


def test_plans_for_every_platform_put_the_manifest_next_to_nothing_foreign(
    tmp_path: Path,
) -> None:
    for platform in install.PLATFORMS:
        for scope in (user(tmp_path, platform), system(tmp_path, platform)):
            plan = plan_install(scope, python=PYTHON, registry=FakeRegistry())
            targets = [s.target for s in plan.steps if s.action == "write"]
            assert any(t.endswith("org.autocrypt.sma.json") for t in targets), (platform, targets)
            assert plan.conflicts == []


# --- the command line -----------------------------------------------------------------------
def test_the_cli_installs_and_uninstalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert cli.main(["install", "--platform", "linux", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert not (tmp_path / ".mozilla").exists()
    assert cli.main(["install", "--platform", "linux", "--app", "thunderbird"]) == 0
    out = capsys.readouterr().out
    assert "autocrypt-sma doctor" in out
    manifest = tmp_path / ".mozilla/native-messaging-hosts/org.autocrypt.sma.json"
    launcher = Path(assert_gecko_accepts(manifest)["path"])
    assert install.pinned_python(launcher.read_text()) == install.sys.executable
    manifest.write_text("{}")
    assert cli.main(["install", "--platform", "linux"]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli.main(["install", "--platform", "linux", "--force"]) == 0
    assert cli.main(["uninstall", "--platform", "linux"]) == 0
    assert not manifest.exists()
