"""`autocrypt-sma doctor` in temporary homes: every problem it can see, each with its fix; the
launch is real (the installed launcher, started as Thunderbird starts it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backends import fail

from native_host.adapters.keyring_secrets import BackendVerdict, MemorySecrets
from native_host.cli import install
from native_host.cli import main as cli
from native_host.cli.doctor import Check, Doctor
from native_host.cli.install import Scope, run_install
from native_host.ports import StoreAuthError, StoreError
from native_host.service.accounts import AccountFiles, AccountRecord, ImapSettings, password_name
from tests.unit.test_install import FakeRegistry

PASSWORD = "correct horse battery staple"
GOOD_KEYRING = BackendVerdict("keyring.backends.SecretService.Keyring", False, object(), None)


class FakeStore:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.closed = False

    def list_folders(self, prefix: str) -> list[str]:
        if self.error:
            raise self.error
        return ["INBOX"]

    def close(self) -> None:
        self.closed = True


def make_doctor(tmp_path: Path, **kwargs: Any) -> Doctor:
    secrets: dict[str, MemorySecrets] = kwargs.pop("secrets", {})
    defaults: dict[str, Any] = {
        "platform": "linux",
        "home": tmp_path / "home",
        "env": {"HOME": str(tmp_path / "home")},
        "root": tmp_path / "root",
        "state_home": tmp_path / "sma",
        "timeout": 10.0,
        "keyring_verdict": lambda: GOOD_KEYRING,
        "secrets_for": lambda instance: secrets.setdefault(instance, MemorySecrets()),
    }
    return Doctor(**{**defaults, **kwargs})


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.check: c for c in checks}


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "problem"]


def installed(tmp_path: Path, platform: install.Platform = "linux") -> Scope:
    scope = Scope(platform, False, tmp_path / "home", {}, tmp_path / "root")
    run_install(scope, python=sys.executable)
    return scope


def test_nothing_installed_says_run_install(tmp_path: Path) -> None:
    checks = make_doctor(tmp_path).run()
    [problem] = problems(checks)
    assert problem.check == "Thunderbird manifest"
    assert ".mozilla/native-messaging-hosts/org.autocrypt.sma.json" in problem.detail
    assert "usr/lib/mozilla/native-messaging-hosts" in problem.detail  # then the system's
    assert problem.fix == "run `autocrypt-sma install`"
    assert by_name(checks)["Firefox manifest"].status == "skip"
    assert by_name(checks)["accounts"].status == "ok"  # works with no account
    assert problem.line().startswith("PROBLEM: Thunderbird manifest: ")
    assert " — fix: run `autocrypt-sma install`" in problem.line()


def test_an_installed_host_is_launched_and_answers_ping(tmp_path: Path) -> None:
    installed(tmp_path)
    checks = make_doctor(tmp_path).run()
    assert problems(checks) == [], checks
    started = by_name(checks)["Thunderbird starts the host"]
    assert "answered ping" in started.detail
    assert by_name(checks)["Firefox starts the host"].detail == started.detail  # one launch
    assert by_name(checks)["keyring"].status == "ok"


def test_a_system_manifest_is_found_after_the_users(tmp_path: Path) -> None:
    run_install(
        Scope("linux", True, tmp_path / "home", {}, tmp_path / "root"), python=sys.executable
    )
    checks = make_doctor(tmp_path).run()
    assert problems(checks) == []
    assert str(tmp_path / "root/usr/lib/mozilla") in by_name(checks)["Thunderbird manifest"].detail


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": "org.other"}, "its name is 'org.other'"),
        ({"type": "pkcs11"}, "its type is 'pkcs11'"),
        ({"path": "relative/launcher"}, "is not absolute"),
        ({"allowed_extensions": ["other@example.org"]}, "does not allow the add-on"),
        ({"path": "/nonexistent/launcher"}, "which does not exist"),
    ],
)
def test_a_broken_manifest_is_named_with_its_fix(
    tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    scope = installed(tmp_path)
    manifest = next(iter(scope.manifest_paths(["thunderbird"])))
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, **change}))
    found = problems(make_doctor(tmp_path).run())
    assert found
    assert all("autocrypt-sma install" in p.fix for p in found), found
    assert any(words in p.detail for p in found), found


def test_a_manifest_that_is_not_json(tmp_path: Path) -> None:
    scope = installed(tmp_path)
    next(iter(scope.manifest_paths(["thunderbird"]))).write_text("{oops")
    [problem, *_] = problems(make_doctor(tmp_path).run())
    assert "not readable JSON" in problem.detail
    assert "--force" in problem.fix


def test_a_launcher_that_is_not_executable(tmp_path: Path) -> None:
    scope = installed(tmp_path)
    scope.launcher_path().chmod(0o644)
    [problem, *_] = problems(make_doctor(tmp_path).run())
    assert "is not executable" in problem.detail
    assert "chmod 755" in problem.fix


def test_a_launcher_whose_python_is_gone(tmp_path: Path) -> None:
    scope = Scope("linux", False, tmp_path / "home", {}, tmp_path / "root")
    run_install(scope, python=str(tmp_path / "deleted-venv/bin/python"))
    [problem, *_] = problems(make_doctor(tmp_path).run())
    assert "no longer exists" in problem.detail
    assert "with the Python that has autocrypt-sma installed" in problem.fix


def test_a_host_that_dies_shows_its_last_words(tmp_path: Path) -> None:
    scope = installed(tmp_path)
    scope.launcher_path().write_text(
        "#!/bin/sh\necho 'ModuleNotFoundError: native_host' >&2\nexit 1\n"
    )
    [problem, *_] = problems(make_doctor(tmp_path).run())
    assert problem.check == "Thunderbird starts the host"
    assert "did not answer ping" in problem.detail
    assert "ModuleNotFoundError: native_host" in problem.detail
    assert "in a terminal" in problem.fix


def test_the_host_is_started_with_a_bare_environment(tmp_path: Path) -> None:
    doctor = make_doctor(
        tmp_path,
        env={"HOME": "/h", "PATH": "/venv/bin:/usr/bin", "VIRTUAL_ENV": "/venv", "SMA_HOME": "/s"},
    )
    assert doctor.launch_env() == {"HOME": "/h", "SMA_HOME": "/s", "PATH": "/usr/bin:/bin"}


def test_macos_layout(tmp_path: Path) -> None:
    installed(tmp_path, "darwin")
    checks = make_doctor(tmp_path, platform="darwin").run()
    assert problems(checks) == []
    assert "Library/Mozilla/NativeMessagingHosts" in by_name(checks)["Thunderbird manifest"].detail
    assert "Application Support/Mozilla" in by_name(checks)["Firefox manifest"].detail


def test_windows_layout_through_the_registry(tmp_path: Path) -> None:
    registry = FakeRegistry()
    local = tmp_path / "Local"
    scope = Scope("windows", False, tmp_path / "home", {"LOCALAPPDATA": str(local)}, tmp_path)
    run_install(scope, python=sys.executable, registry=registry)
    doctor = make_doctor(tmp_path, platform="windows", registry=registry)
    checks = doctor.run()
    # The .bat cannot run here; everything up to the launch must pass.
    manifest = by_name(checks)["Thunderbird manifest"]
    assert manifest.status == "ok"
    assert str(local) in manifest.detail
    registry.values.clear()
    [problem] = problems(doctor.run())
    assert "HKEY_CURRENT_USER" in problem.detail
    assert "HKEY_LOCAL_MACHINE" in problem.detail
    registry.values[(registry.HKEY_CURRENT_USER, install.REGISTRY_KEY)] = str(
        tmp_path / "gone.json"
    )
    found = problems(doctor.run())
    assert [p.check for p in found] == ["Thunderbird manifest", "Firefox manifest"]
    assert all("does not exist" in p.detail for p in found)


def test_no_usable_keyring_is_a_problem_and_accounts_wait_for_it(tmp_path: Path) -> None:
    save_account(tmp_path, "p1")
    refused = BackendVerdict("keyring.backends.fail.Keyring", False, None, "it cannot keep secrets")
    checks = make_doctor(tmp_path, keyring_verdict=lambda: refused).run()
    keyring_check = by_name(checks)["keyring"]
    assert keyring_check.status == "problem"
    assert "cannot keep secrets" in keyring_check.detail
    assert "PYTHON_KEYRING_BACKEND" in keyring_check.fix
    assert by_name(checks)["account alice@example.org (instance p1)"].status == "skip"


def save_account(tmp_path: Path, instance: str) -> None:
    settings = ImapSettings("imap.example.org", 993, "tls", "alice")
    AccountFiles(tmp_path / "sma" / "instances" / instance).save(
        AccountRecord("alice@example.org", settings)
    )


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (None, "ok", "IMAP login to imap.example.org:993 as alice works"),
        (StoreAuthError("NO [AUTHENTICATIONFAILED]"), "problem", "refused the login"),
        (StoreError("connection refused"), "problem", "connection refused"),
    ],
)
def test_each_account_is_logged_in_with_its_stored_password(
    tmp_path: Path, error: Exception | None, status: str, words: str
) -> None:
    save_account(tmp_path, "p1")
    secrets = {"p1": MemorySecrets()}
    secrets["p1"].set(password_name("alice@example.org"), PASSWORD)
    used: list[tuple[str, float]] = []
    stores: list[FakeStore] = []

    def open_store(settings: ImapSettings, password: str, timeout: float) -> FakeStore:
        used.append((password, timeout))
        stores.append(FakeStore(error))
        return stores[-1]

    checks = make_doctor(tmp_path, secrets=secrets, open_store=open_store, timeout=3.0).run()
    check = by_name(checks)["account alice@example.org (instance p1)"]
    assert (check.status, words in check.detail) == (status, True), check
    assert used == [(PASSWORD, 3.0)]
    assert stores[0].closed
    assert PASSWORD not in json.dumps([c.line() for c in checks])


def test_an_account_without_its_password(tmp_path: Path) -> None:
    save_account(tmp_path, "p1")
    check = by_name(make_doctor(tmp_path).run())["account alice@example.org (instance p1)"]
    assert check.status == "problem"
    assert "not in the keyring" in check.detail
    assert "configure the account again" in check.fix


def test_the_cli_prints_json_and_exits_1_on_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SMA_HOME", str(tmp_path / "sma"))
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        assert cli.main(["doctor", "--json", "--timeout", "5"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is False
        statuses = {c["check"]: c["status"] for c in report["checks"]}
        assert statuses["keyring"] == "problem"
        assert statuses["Thunderbird manifest"] == "problem"
        assert cli.main(["doctor"]) == 1
        out = capsys.readouterr().out
        assert "PROBLEM: keyring: no usable OS keyring" in out
        assert out.rstrip().endswith("2 problems found.")
    finally:
        keyring.set_keyring(before)
