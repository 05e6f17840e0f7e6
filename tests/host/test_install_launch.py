"""The installer for real on Linux, and where secrets live, inside a throwaway gnome-keyring.

Run inside a private D-Bus session with an unlocked throwaway keyring (scripts/test does this):
`dbus-run-session -- scripts/with-test-keyring .venv/bin/python -m pytest tests/host/test_install_launch.py`

- `autocrypt-sma install` writes into a temporary HOME; the manifest's launcher is started the way
  Thunderbird starts it (argv: launcher, manifest path, add-on id; cwd: the launcher's folder; a
  bare environment) and answers `ping`; `doctor` passes; `uninstall` leaves nothing.
- Two hosts configure an account on a real Dovecot, join and pair: every secret (the IMAP
  password, each device's keys, the account's secret key) is in the Secret Service and in no
  file under either `$SMA_HOME`, in no stderr log (at DEBUG level) and in no response or event.
- With no usable keyring, configuring an account answers `keyring_unavailable` and stores nothing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keyring
import pytest

from native_host.adapters.keyring_secrets import SERVICE_PREFIX
from native_host.cli.client import ADDON_ID, HOST_NAME, HostProcess
from native_host.cli.doctor import Doctor
from native_host.service.accounts import (
    account_key_name,
    device_key_name,
    next_key_name,
    old_keys_name,
    password_name,
)
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import paired

__all__ = ["dovecot", "mail"]

CLI = Path(sys.executable).with_name("autocrypt-sma")


def require_secret_service() -> None:
    backend = keyring.get_keyring()
    assert type(backend).__module__ == "keyring.backends.SecretService", (
        f"keyring's backend is {backend!r}, not the Secret Service: run these tests through "
        "scripts/test, or `dbus-run-session -- scripts/with-test-keyring ...` "
        "(apt-get install gnome-keyring dbus)"
    )


def user_env(home: Path, sma_home: Path) -> dict[str, str]:
    """What a user's terminal would have: their HOME, this installation's tools on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "PYTHON_KEYRING_BACKEND")
    }
    return {**env, "HOME": str(home), "SMA_HOME": str(sma_home)}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert CLI.is_file(), f"{CLI} is missing: install the package first (pip install -e .)"
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_install_then_launch_as_thunderbird_does_then_doctor_then_uninstall(
    tmp_path: Path,
) -> None:
    require_secret_service()
    home, sma_home = tmp_path / "home", tmp_path / "sma"
    home.mkdir()
    env = user_env(home, sma_home)
    installed = run_cli("install", env=env)
    assert installed.returncode == 0, installed.stderr
    assert "autocrypt-sma doctor" in installed.stdout

    manifest_path = home / ".mozilla" / "native-messaging-hosts" / f"{HOST_NAME}.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["name"] == HOST_NAME == manifest_path.stem
    assert manifest["type"] == "stdio"
    assert manifest["allowed_extensions"] == [ADDON_ID]
    launcher = Path(manifest["path"])
    assert launcher.is_absolute()
    assert os.access(launcher, os.X_OK)

    # Thunderbird's way: the manifest's path with [manifest, add-on id], in the launcher's
    # folder, with a GUI session's bare environment (no virtualenv, a minimal PATH).
    bare = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "SMA_HOME": str(sma_home),
        "DBUS_SESSION_BUS_ADDRESS": os.environ["DBUS_SESSION_BUS_ADDRESS"],
    }
    with tempfile.TemporaryFile() as stderr:
        host = HostProcess(
            [str(launcher)], manifest_path=str(manifest_path), env=bare, stderr=stderr
        )
        assert host.command == [str(launcher)]
        pong = host.call("ping", timeout=20)
        assert pong["protocol_version"] >= 1
        assert host.call("hello", {"instance": "profile-1"})["instance"] == "profile-1"
        assert host.call("account.list") == {"accounts": []}
        assert host.close() == 0

    doctor = run_cli("doctor", "--json", env=env)
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0, report
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "autocrypt-sma": "ok",
        "Thunderbird manifest": "ok",
        "Thunderbird starts the host": "ok",
        "Firefox manifest": "ok",
        "Firefox starts the host": "ok",
        "keyring": "ok",
        "accounts": "ok",
    }
    assert "SecretService" in next(c for c in report["checks"] if c["check"] == "keyring")["detail"]

    again = run_cli("install", env=env)
    assert again.returncode == 0
    assert all(line.strip().startswith("unchanged") for line in again.stdout.splitlines()[1:3]), (
        again.stdout
    )
    removed = run_cli("uninstall", env=env)
    assert removed.returncode == 0, removed.stderr
    assert not manifest_path.exists()
    assert not launcher.exists()
    assert run_cli("doctor", env=env).returncode == 1  # and it says to run install
    assert [p for p in home.rglob("*") if p.is_file()] == []


def secrets_of(instance: str, account: str) -> dict[str, str]:
    """Every secret an instance holds for the account, read straight from the keyring."""
    service = SERVICE_PREFIX + instance
    found = {}
    for name in (
        password_name(account),
        device_key_name(account),
        account_key_name(account),
        next_key_name(account),
        old_keys_name(account),
    ):
        value = keyring.get_password(service, name)
        if value is not None:
            found[name] = value
    return found


def needles(secrets: dict[str, str], public_armor: str, account: str) -> dict[str, bytes]:
    """Byte strings that must appear nowhere: each secret as stored, and its parts."""
    out: dict[str, bytes] = {}
    for name, value in secrets.items():
        out[name] = value.encode()
    device_keys = base64.b64decode(secrets[device_key_name(account)])
    assert len(device_keys) == 64
    for label, raw in (("device sign key", device_keys[:32]), ("device enc key", device_keys[32:])):
        out[label] = raw
        out[label + " (base64)"] = base64.b64encode(raw)
        out[label + " (hex)"] = raw.hex().encode()
    armor = secrets[account_key_name(account)]
    assert "PRIVATE KEY BLOCK" in armor
    public_lines = set(public_armor.splitlines())
    body = [
        line
        for line in armor.splitlines()
        if line and ":" not in line and not line.startswith(("-----", "="))
    ]
    out["account secret key body"] = "".join(body).encode()
    for i, line in enumerate(body):
        if line not in public_lines and len(line) >= 32:
            out[f"account secret key, armor line {i}"] = line.encode()
    return out


def secret_service_items(instance: str) -> set[str]:
    """Names of the items under the instance's service, asked of the Secret Service itself."""
    import secretstorage

    connection = secretstorage.dbus_init()
    try:
        collection = secretstorage.get_default_collection(connection)
        items = collection.search_items({"service": SERVICE_PREFIX + instance})
        return {item.get_attributes()["username"] for item in items}
    finally:
        connection.close()


def test_secrets_live_in_the_secret_service_and_nowhere_else(
    spawn: Callable[..., CheckedHost],
    mail: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_secret_service()
    monkeypatch.setenv("SMA_LOG_LEVEL", "DEBUG")  # the most the logs ever say
    account = mail["account"]
    laptop, phone = paired(spawn, mail)
    public = laptop.call("account.key", {"account": account})
    assert phone.call("account.key", {"account": account}) == public

    for host, instance in ((laptop, "laptop"), (phone, "phone")):
        held = secrets_of(instance, account)
        assert set(held) >= {
            password_name(account),
            device_key_name(account),
            account_key_name(account),
        }, set(held)
        assert held[password_name(account)] == mail["password"]
        assert set(held) <= secret_service_items(instance)

        home = host.stderr_path.parent  # the host's $SMA_HOME; its stderr log is in it too
        files = [p for p in home.rglob("*") if p.is_file()]
        assert any(p.suffix == ".json" for p in files)
        assert any(p.name == "host-stderr.log" for p in files)
        assert host.stderr_path.stat().st_size > 0  # DEBUG logging did say things
        messages = json.dumps(host.received).encode()
        for label, needle in needles(held, public["public_key"], account).items():
            for path in files:
                assert needle not in path.read_bytes(), f"{label} found in {path}"
            assert needle not in messages, f"{label} found in a message from the {instance} host"

    # doctor, given that state, logs in with the stored password, and prints no secret.
    doctor = Doctor(state_home=laptop.stderr_path.parent, timeout=10)
    checks = doctor.account_checks(keyring_ok=True)
    assert [(c.status, c.detail) for c in checks] == [
        (
            "ok",
            f"IMAP login to {mail['imap']['host']}:{mail['imap']['port']} as "
            f"{mail['imap']['username']} works",
        )
    ]
    assert mail["password"] not in json.dumps([c.line() for c in checks])


@pytest.mark.parametrize(
    "backend", ["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"]
)
def test_without_a_usable_keyring_nothing_is_stored_and_the_answer_says_how_to_fix_it(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], backend: str
) -> None:
    host = spawn(env={"PYTHON_KEYRING_BACKEND": backend})
    host.call("hello", {"instance": "nokeyring"})
    error = host.request("account.configure", mail)["error"]
    assert error["code"] == "keyring_unavailable"
    assert "Fix:" in error["message"]
    assert "PYTHON_KEYRING_BACKEND" in error["message"]
    assert mail["password"] not in error["message"]
    assert host.call("account.list") == {"accounts": []}
    assert (
        host.request("sma.join", {"account": mail["account"], "device_name": "X"})["error"]["code"]
        == "not_configured"
    )
    host.close()
    for path in host.stderr_path.parent.rglob("*"):
        assert not path.is_file() or mail["password"].encode() not in path.read_bytes(), path
    assert (
        keyring.get_password(SERVICE_PREFIX + "nokeyring", password_name(mail["account"])) is None
    )
