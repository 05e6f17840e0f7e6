"""`autocrypt-sma pair` and `approve`: two terminal devices pair over real Dovecot and the keyring."""

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
    approver = cli(
        env,
        "approve",
        "--account",
        mail["account"],
        "--instance",
        "server-a",
        "--yes",
        "--timeout",
        "60",
    )
    pairer = cli(
        env,
        "pair",
        "--account",
        mail["account"],
        "--instance",
        "server-b",
        "--yes",
        "--timeout",
        "60",
    )
    out_b, err_b = pairer.communicate(timeout=90)
    out_a, err_a = approver.communicate(timeout=90)
    assert pairer.returncode == 0, err_b
    assert approver.returncode == 0, err_a
    code_a = out_a.split("Code: ")[1].splitlines()[0]
    code_b = out_b.split("Code: ")[1].splitlines()[0]
    assert code_a == code_b
    assert out_a.split("Account key ")[1] == out_b.split("Account key ")[1]
