"""SIGKILL the hosts at random moments while key sync runs, over a real Dovecot, and start them
again from what they saved: every acknowledged ingest arrives, both tables end equal, and the
inboxes drain. Seeds are in the test ids; SMA_KILL_RUNS raises the number of runs."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from native_host.adapters.pgp import generate_account_key
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import T0, correspondent_mail, paired
from tests.host.test_pairing_kills import restart

__all__ = ["dovecot", "mail"]
RUNS = int(os.environ.get("SMA_KILL_RUNS", "3"))
MAILS = 120


@pytest.fixture(scope="module")
def pool() -> dict[str, bytes]:
    """A key for each correspondent, naming it (a header's key must)."""
    return {
        f"c{i}@example.net": generate_account_key(f"c{i}@example.net", T0).keydata()
        for i in range(MAILS)
    }


def everything(host: CheckedHost, account: dict[str, Any]) -> dict[str, Any]:
    peers: dict[str, Any] = {}
    cursor = None
    while True:
        page = host.call("peers.list", {**account, "limit": 500, "cursor": cursor})
        peers.update({p["addr"]: p for p in page["peers"]})
        cursor = page["cursor"]
        if cursor is None:
            return peers


@pytest.mark.parametrize("seed", range(RUNS))
def test_killed_hosts_lose_nothing_and_converge(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any], pool: dict[str, bytes], seed: int
) -> None:
    rng = random.Random(seed)
    account = {"account": mail["account"]}
    laptop, phone = paired(spawn, mail)
    kills = sorted(rng.sample(range(1, MAILS), 4))
    hosts: list[CheckedHost] = [laptop, phone]
    for i in range(MAILS):
        message = correspondent_mail(f"c{i}@example.net", pool[f"c{i}@example.net"], T0 + i)
        assert laptop.call("peers.ingest", {**account, "message": message})["updated"]
        if kills and i == kills[0]:
            kills.pop(0)
            time.sleep(rng.random() * 0.6)  # somewhere in a debounce, a send or a receive
            if rng.random() < 0.5:
                laptop = restart(spawn, laptop, "laptop")
                hosts.append(laptop)
            else:
                phone = restart(spawn, phone, "phone")
                hosts.append(phone)
    t_ingested = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if phone.call("peers.list", {**account, "limit": 1})["total"] == MAILS:
            break
        time.sleep(0.2)
    print(f"converged {time.monotonic() - t_ingested:.1f} s after the last ingest")
    on_laptop, on_phone = everything(laptop, account), everything(phone, account)
    assert len(on_laptop) == MAILS
    assert on_phone == on_laptop
    for host in hosts:
        assert host.problems() == []
