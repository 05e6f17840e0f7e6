"""SIGKILL a host at each step of a pairing and start it again from what it saved: the pairing
still completes, and no device ever holds the account key without the log admitting it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_pairing_imap import joined

__all__ = ["dovecot", "mail"]
STEPS = ["old-after-invite", "new-after-join", "old-after-join", "new-after-old-completes"]


def restart(spawn: Callable[..., CheckedHost], old: CheckedHost, instance: str) -> CheckedHost:
    old.proc.send_signal(signal.SIGKILL)
    old.wait_exit(timeout=5)
    again = CheckedHost(Path(old.stderr_path).parent)  # same SMA_HOME, same keyring entries
    again.call("hello", {"instance": instance})
    return again


def wait_states(host: CheckedHost, account: dict[str, Any], wanted: list[str]) -> list[str]:
    for _ in range(150):
        states = [p["state"] for p in host.call("pairing.list", account)["pairings"]]
        if states == wanted:
            break
        time.sleep(0.1)
    return states


@pytest.mark.parametrize("step", STEPS)
def test_a_killed_host_resumes_the_pairing(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], step: str
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    extra: list[CheckedHost] = []
    try:
        code = laptop.call("pairing.invite", account)["pairing"]["code"]
        if step == "old-after-invite":  # the invitation (and its code) survives the kill
            laptop = restart(spawn, laptop, "laptop")
            extra.append(laptop)
            [shown] = laptop.call("pairing.list", account)["pairings"]
            assert shown["code"] == code
        phone.call("pairing.join", {**account, "code": code})
        if step == "new-after-join":
            phone = restart(spawn, phone, "phone")
            extra.append(phone)
        if step == "old-after-join":
            laptop = restart(spawn, laptop, "laptop")
            extra.append(laptop)
        if step == "new-after-old-completes":
            assert wait_states(laptop, account, ["completed"]) == ["completed"]
            phone = restart(spawn, phone, "phone")
            extra.append(phone)
        for host in (laptop, phone):
            assert wait_states(host, account, ["completed"]) == ["completed"], step
        assert laptop.call("account.key", account) == phone.call("account.key", account)
        for host in (laptop, phone):
            assert [d["paired"] for d in host.call("devices.list", account)["devices"]] == [
                True,
                True,
            ]
    finally:
        for host in extra:
            host.close()
            assert host.problems() == []
