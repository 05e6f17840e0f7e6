"""`autocrypt-sma invite` and `pair --code`: two terminal devices pair over real Dovecot and the
keyring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.host.test_accounts_imap import dovecot, mail

__all__ = ["dovecot", "mail"]
CLI = str(Path(sys.executable).with_name("autocrypt-sma"))


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def setup(env: dict[str, str], mail: dict[str, Any], instance: str, name: str) -> None:
    for method, params in (
        ("account.configure", mail),
        ("sma.join", {"account": mail["account"], "device_name": name}),
    ):
        done = subprocess.run(
            [CLI, "call", method, json.dumps(params), "--instance", instance],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


def test_two_terminal_devices_pair(mail: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "SMA_HOME": str(tmp_path)}
    setup(env, mail, "server-a", "Server A")
    setup(env, mail, "server-b", "Server B")
    account = ["--account", mail["account"], "--timeout", "60"]
    inviter = cli(env, "invite", *account, "--instance", "server-a")
    assert inviter.stdout is not None
    shown = ""
    while "Code: " not in shown:
        line = inviter.stdout.readline()
        assert line, inviter.stderr.read() if inviter.stderr else "no output"
        shown += line
    code = shown.split("Code: ")[1].split()[0]
    joiner = cli(env, "pair", *account, "--instance", "server-b", "--code", code)
    out_b, err_b = joiner.communicate(timeout=90)
    out_a, err_a = inviter.communicate(timeout=90)
    assert joiner.returncode == 0, err_b
    assert inviter.returncode == 0, err_a
    assert "Paired with 'Server A'" in out_b
    assert "Paired with 'Server B'" in out_a
    assert out_a.split("Account key ")[1] == out_b.split("Account key ")[1]


def test_a_mistyped_code_ends_both_commands_with_an_error(
    mail: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "SMA_HOME": str(tmp_path)}
    setup(env, mail, "server-a", "Server A")
    setup(env, mail, "server-b", "Server B")
    account = ["--account", mail["account"], "--timeout", "60"]
    inviter = cli(env, "invite", *account, "--instance", "server-a")
    assert inviter.stdout is not None
    line = inviter.stdout.readline()
    while "Code: " not in line:
        line = inviter.stdout.readline()
        assert line
    code = line.split("Code: ")[1].strip()
    typo = code[:-1] + str((int(code[-1]) + 1) % 10)
    joiner = cli(env, "pair", *account, "--instance", "server-b", "--code", typo)
    _, err_b = joiner.communicate(timeout=90)
    _, err_a = inviter.communicate(timeout=90)
    assert joiner.returncode == inviter.returncode == 1
    assert "pairing_failed" in err_b
    assert "pairing_failed" in err_a
