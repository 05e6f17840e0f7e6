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
STEPS = ["after-request", "after-code-shown", "after-old-approves", "after-new-confirms"]


def restart(spawn: Callable[..., CheckedHost], old: CheckedHost, instance: str) -> CheckedHost:
    old.proc.send_signal(signal.SIGKILL)
    old.wait_exit(timeout=5)
    again = CheckedHost(Path(old.stderr_path).parent)  # same SMA_HOME, same keyring entries
    again.call("hello", {"instance": instance})
    return again


def pairing(
    host: CheckedHost, account: dict[str, Any], pairing_id: str, timeout: float = 15
) -> dict[str, Any]:
    """Wait until the host reports the pairing showing a code (or further)."""
    for _ in range(int(timeout * 10)):
        for p in host.call("pairing.list", account)["pairings"]:
            if p["pairing_id"] == pairing_id and (
                p["sas"] or p["state"] in ("completed", "failed")
            ):
                return dict(p)
        time.sleep(0.1)
    raise AssertionError(f"pairing {pairing_id} never showed a code")


@pytest.mark.parametrize("step", STEPS)
def test_a_killed_host_resumes_the_pairing(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], step: str
) -> None:
    account = {"account": mail["account"]}
    laptop = joined(spawn, mail, "laptop", "Laptop")
    phone = joined(spawn, mail, "phone", "Phone")
    extra: list[CheckedHost] = []
    try:
        pairing_id = phone.call("pairing.request", account)["pairing_id"]
        if step == "after-request":
            phone = restart(spawn, phone, "phone")
            extra.append(phone)
        old_view = pairing(laptop, account, pairing_id)
        new_view = pairing(phone, account, pairing_id)
        assert old_view["sas"] == new_view["sas"]
        if step == "after-code-shown":
            laptop = restart(spawn, laptop, "laptop")
            extra.append(laptop)
        laptop.call("pairing.approve", {**account, "pairing_id": pairing_id})
        if step == "after-old-approves":
            laptop = restart(spawn, laptop, "laptop")
            extra.append(laptop)
        phone.call("pairing.approve", {**account, "pairing_id": pairing_id})
        if step == "after-new-confirms":
            phone = restart(spawn, phone, "phone")
            extra.append(phone)
        for host in (laptop, phone):
            for _ in range(150):
                states = [p["state"] for p in host.call("pairing.list", account)["pairings"]]
                if states == ["completed"]:
                    break
                time.sleep(0.1)
            assert states == ["completed"], (step, states)
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
