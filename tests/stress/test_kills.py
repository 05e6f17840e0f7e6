"""SIGKILL hosts at random moments through a device's whole life over a real Dovecot (join,
pairing, key sync, removal with the account-key roll), start them again from what they saved
(same SMA_HOME, same keyring), and check that the system converges, loses nothing and applies
nothing twice.

Runs: SMA_KILL_RUNS (default 3; the dedicated run uses 50), seeds 1000, 1001, ... in the test
ids; SMA_KILL_SEED=<n> runs that one seed. A seed fixes the schedule (which call or pause, which
host, which delay); the interleaving with the hosts' own threads still varies a little.

A call whose reply the kill swallowed is retried after the restart as the add-on would
(it retries on reconnect), after looking at the host's state where a blind retry would do
something twice: an ingest and a join are simply sent again (both are idempotent); a pairing
request is sent again only if the restarted host has no pairing under way (else the test
adopts that one); an approval is sent again while the pairing still shows its code (an answer
`pairing_state` means the first one was kept); a removal is sent again while the device is
still paired (`invalid_params`, not a member, means the first one went through).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.adapters.pgp import generate_account_key
from native_host.cli.client import HostCallError
from native_host.core import devicelog, layout
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail
from tests.host.test_keysync_imap import T0, correspondent_mail, imap
from tests.host.test_keysync_kills import everything

__all__ = ["dovecot", "imap", "mail"]

RUNS = int(os.environ.get("SMA_KILL_RUNS", "3"))
SEEDS = (
    [int(os.environ["SMA_KILL_SEED"])]
    if os.environ.get("SMA_KILL_SEED")
    else [1000 + i for i in range(RUNS)]
)
NAMES = {"laptop": "Laptop", "phone": "Phone", "tablet": "Tablet"}
MAILS_PER_DEVICE = 4
CORRESPONDENTS = 8
# How likely a call is cut by a kill of its host: high where a cut is interesting.
KILL_IN_CALL = {
    "account.configure": 0.1,
    "sma.join": 0.3,
    "pairing.invite": 0.35,
    "pairing.join": 0.35,
    "peers.ingest": 0.08,
    "device.remove": 0.5,
}
KILL_BETWEEN = 0.5  # at each pause between steps: a kill of a random host
CONVERGE = 45.0  # seconds for anything that should settle


@pytest.fixture(scope="module")
def pool() -> dict[str, list[bytes]]:
    """Three keys for each correspondent, each naming the correspondent (a header's key must)."""
    return {
        f"c{c}@example.net": [
            generate_account_key(f"c{c}@example.net", T0).keydata() for _ in range(3)
        ]
        for c in range(CORRESPONDENTS)
    }


class Fleet:
    """The devices of one run, each a host process that the run may kill and start again."""

    def __init__(self, root: Path, mail: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.mail = mail
        self.account = {"account": mail["account"]}
        self.rng = rng
        self.hosts: dict[str, CheckedHost] = {}
        self.every: list[CheckedHost] = []  # every process, for the frame checks at the end
        self.schedule: list[str] = []
        self.started = time.monotonic()

    def note(self, what: str) -> None:
        self.schedule.append(f"{time.monotonic() - self.started:6.2f}s {what}")

    def start(self, instance: str) -> CheckedHost:
        home = self.root / instance
        home.mkdir(exist_ok=True)
        host = CheckedHost(home)  # same SMA_HOME (and instance, so keyring entries) each time
        self.every.append(host)
        host.call("hello", {"instance": instance})
        self.hosts[instance] = host
        return host

    def kill(self, instance: str) -> None:
        old = self.hosts[instance]
        old.proc.send_signal(signal.SIGKILL)
        old.wait_exit(timeout=5)
        old.close()
        kept = old.stderr_path.with_name(f"host-stderr.{len(self.every)}.log")
        old.stderr_path = old.stderr_path.rename(kept)  # the next process starts a new log
        self.note(f"SIGKILL {instance}, restart")
        self.start(instance)

    def pause(self, step: str, among: list[str]) -> None:
        """A moment between steps, while the hosts work in the background: maybe kill one."""
        if self.rng.random() < KILL_BETWEEN:
            victim = self.rng.choice(among)
            delay = self.rng.uniform(0, 0.6)
            self.note(f"{step}: in {delay:.2f}s kill {victim}")
            time.sleep(delay)
            self.kill(victim)

    def call(
        self,
        instance: str,
        method: str,
        params: dict[str, Any],
        retry: Callable[[CheckedHost], bool] = lambda _host: True,
    ) -> dict[str, Any]:
        """A call that a kill may cut; `retry` says, after the restart, whether to send it again
        (False: the host shows that the first one was taken, and the answer is not needed)."""
        host = self.hosts[instance]
        if self.rng.random() >= KILL_IN_CALL.get(method, 0):
            return host.call(method, params, timeout=CONVERGE)
        delay = self.rng.uniform(0, 0.5)
        request_id = f"cut-{len(self.schedule)}"
        host.send_message({"id": request_id, "method": method, "params": params})
        time.sleep(delay)
        with host._lock:
            answered = host._responses.get(request_id)
        self.note(f"{method} on {instance}: kill after {delay:.2f}s (answered: {bool(answered)})")
        self.kill(instance)
        if answered is not None:
            if "error" in answered:
                raise HostCallError(answered["error"]["code"], answered["error"]["message"])
            return dict(answered["result"])
        if not retry(self.hosts[instance]):
            self.note(f"{method} on {instance}: not sent again (the host has it)")
            return {}
        self.note(f"{method} on {instance}: sent again")
        return self.hosts[instance].call(method, params, timeout=CONVERGE)

    def sync_all(self, instances: list[str]) -> None:
        for instance in instances:
            try:
                self.hosts[instance].call("sync", self.account, timeout=CONVERGE)
            except HostCallError as exc:
                if exc.code != "not_joined":  # (a removed device)
                    raise

    def until(self, what: str, instances: list[str], done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + CONVERGE
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {CONVERGE} s waiting for {what}")
            time.sleep(0.2)
            self.sync_all(instances)

    def close(self) -> None:
        for host in self.every:
            host.close()


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(mail: dict[str, Any], rng: random.Random) -> Fleet:
        fleets.append(Fleet(tmp_path, mail, rng))
        return fleets[-1]

    yield make
    for fleet in fleets:
        fleet.close()


def my_id(host: CheckedHost, account: dict[str, str]) -> str:
    devices = host.call("devices.list", account)["devices"]
    return str(next(d["device_id"] for d in devices if d["self"]))


def record_of(fleet: Fleet, instance: str) -> dict[str, Any]:
    digest = hashlib.sha256(fleet.account["account"].lower().encode()).hexdigest()[:32]
    path = fleet.root / instance / "instances" / instance / "accounts" / f"{digest}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --- the phases -----------------------------------------------------------------------------
def join(fleet: Fleet, instance: str) -> str:
    fleet.start(instance)
    fleet.call(instance, "account.configure", fleet.mail)
    params = {**fleet.account, "device_name": NAMES[instance]}
    return str(fleet.call(instance, "sma.join", params)["device_id"])


def pair(fleet: Fleet, new: str, old: str) -> list[str]:
    """ "Add a device" on `old`, its code typed on `new`; kills may cut either call. Returns both
    sides' pairing ids."""
    account = fleet.account

    def under_way(host: CheckedHost) -> list[dict[str, Any]]:
        return [
            p
            for p in host.call("pairing.list", account)["pairings"]
            if p["state"] not in ("rejected", "expired", "failed", "completed")
        ]

    def again(host: CheckedHost) -> bool:
        return not under_way(host)  # the cut call was not saved: send it again

    fleet.call(old, "pairing.invite", account, retry=again)
    [invitation] = under_way(fleet.hosts[old])  # the one invitation, saved before any answer
    fleet.pause("invited", [new, old])
    [invitation] = [
        p
        for p in fleet.hosts[old].call("pairing.list", account)["pairings"]
        if p["pairing_id"] == invitation["pairing_id"]
    ]
    fleet.call(new, "pairing.join", {**account, "code": invitation["code"]}, retry=again)
    [joined] = [
        p
        for p in fleet.hosts[new].call("pairing.list", account)["pairings"]
        if p["role"] == "joiner"
    ]
    ids = {old: invitation["pairing_id"], new: joined["pairing_id"]}
    fleet.note(f"pairing {ids[new][:8]}: {new} with {old}")

    def state(instance: str) -> str | None:
        for p in fleet.hosts[instance].call("pairing.list", account)["pairings"]:
            if p["pairing_id"] == ids[instance]:
                return str(p["state"])
        return None

    fleet.pause("code typed", [new, old])
    fleet.until(
        f"pairing {ids[new][:8]} to complete on both sides",
        [new, old],
        lambda: state(new) == state(old) == "completed",
    )
    return [ids[old], ids[new]]


def ingest(
    fleet: Fleet,
    members: list[str],
    pool: dict[str, list[bytes]],
    expected: dict[str, tuple[int, bytes]],
) -> None:
    """Mails on every member, each with a distinct date (no ties), correspondents shared."""
    dates = fleet.rng.sample(range(1, 100_000), MAILS_PER_DEVICE * len(members))
    for n, date in enumerate(dates):
        instance = members[n % len(members)]
        addr = f"c{fleet.rng.randrange(CORRESPONDENTS)}@example.net"
        key = fleet.rng.choice(pool[addr])
        message = correspondent_mail(addr, key, T0 + date)
        result = fleet.call(instance, "peers.ingest", {**fleet.account, "message": message})
        assert result["addr"] == addr
        if addr not in expected or expected[addr][0] < T0 + date:
            expected[addr] = (T0 + date, key)
        if fleet.rng.random() < 0.15:
            fleet.pause("ingesting", members)


def peers_match(fleet: Fleet, instance: str, expected: dict[str, tuple[int, bytes]]) -> list[str]:
    """What differs between the host's peer table and the latest ingested values."""
    table = everything(fleet.hosts[instance], fleet.account)
    wrong = [f"{instance}: unexpected {a}" for a in table if a not in expected]
    for addr, (date, key) in expected.items():
        peer = table.get(addr)
        if peer is None:
            wrong.append(f"{instance}: {addr} missing")
        elif (peer["last_seen"], peer["autocrypt_timestamp"]) != (date, date) or base64.b64decode(
            peer["public_key"]
        ) != key:
            wrong.append(f"{instance}: {addr} is {peer['last_seen']}, want {date}")
    return wrong


def remove(fleet: Fleet, remover: str, target_id: str, others: list[str]) -> None:
    def still_paired(host: CheckedHost) -> bool:
        devices = host.call("devices.list", fleet.account)["devices"]
        return any(d["device_id"] == target_id and d["paired"] for d in devices)

    params = {**fleet.account, "device_id": target_id}
    try:
        fleet.call(remover, "device.remove", params, retry=still_paired)
    except HostCallError as exc:
        if exc.code != "invalid_params":  # a retry that found it done
            raise
    fleet.pause("removed", others)


# --- the run --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_kills_during_join_pairing_keysync_and_removal(
    fleet_factory: Callable[..., Fleet],
    mail: dict[str, Any],
    imap: ImapStore,
    pool: dict[str, list[bytes]],
    seed: int,
) -> None:
    fleet = fleet_factory(mail, random.Random(seed))
    try:
        scenario(fleet, imap, pool)
    except BaseException as exc:
        schedule = "\n  ".join(fleet.schedule)
        raise AssertionError(
            f"seed {seed} failed (SMA_KILL_SEED={seed} runs it again): {exc!r}\n"
            f"schedule:\n  {schedule}"
        ) from exc
    finally:
        fleet.close()
    print(f"seed {seed}: {len(fleet.schedule)} steps, {time.monotonic() - fleet.started:.1f} s")
    for host in fleet.every:
        assert host.problems() == [], host.stderr_path
        log = host.stderr_path.read_text(errors="replace")
        assert "Traceback" not in log, log


def scenario(fleet: Fleet, imap: ImapStore, pool: dict[str, list[bytes]]) -> None:
    account = fleet.account
    rng = fleet.rng
    # Join: the first device, then two more.
    ids = {instance: join(fleet, instance) for instance in NAMES}
    all3 = list(NAMES)
    fleet.pause("joined", all3)
    for instance in all3:  # a join the kill cut and the retry finished is still one device
        assert my_id(fleet.hosts[instance], account) == ids[instance]
    # Pairing: the phone with the laptop, then the tablet with either.
    pairings = pair(fleet, "phone", "laptop")
    helper = rng.choice(["laptop", "phone"])
    pairings.extend(pair(fleet, "tablet", helper))
    # Key sync: mail on every device, converging everywhere.
    expected: dict[str, tuple[int, bytes]] = {}
    ingest(fleet, all3, pool, expected)
    fleet.pause("ingested", all3)
    fleet.until(
        "key sync to converge on three devices",
        all3,
        lambda: not any(peers_match(fleet, i, expected) for i in all3),
    )
    before = fleet.hosts["laptop"].call("account.key", account)["fingerprint"]
    # Removal: one member removes another; the key rolls.
    remover, target = rng.sample(all3, 2)
    remaining = [i for i in all3 if i != target]
    fleet.note(f"{remover} removes {target}")
    remove(fleet, remover, ids[target], all3)

    def members(instance: str) -> set[str]:
        devices = fleet.hosts[instance].call("devices.list", account)["devices"]
        return {d["device_id"] for d in devices if d["paired"]}

    def key(instance: str) -> str:
        return str(fleet.hosts[instance].call("account.key", account)["fingerprint"])

    def removed_forgot() -> bool:
        """Both answers say so (a kill in the middle of forgetting leaves one saying it until
        the restarted host's first sync finishes the job)."""
        host = fleet.hosts[target]
        answers = [host.request(m, account) for m in ("account.key", "devices.list")]
        return all(a.get("error", {}).get("code") == "not_joined" for a in answers)

    want = {ids[i] for i in remaining}
    fleet.until(
        "the removal and the roll to settle",
        all3,
        lambda: (
            all(members(i) == want for i in remaining)
            and len({key(i) for i in remaining}) == 1
            and key(remaining[0]) != before
            and removed_forgot()
        ),
    )
    # Nothing lost, nothing twice.
    for instance in remaining:
        assert peers_match(fleet, instance, expected) == []
        listed = [
            d["device_id"] for d in fleet.hosts[instance].call("devices.list", account)["devices"]
        ]
        assert len(listed) == len(set(listed)), listed
        views = fleet.hosts[instance].call("pairing.list", account)["pairings"]
        assert len({p["pairing_id"] for p in views}) == len(views)
        for p in views:
            assert p["pairing_id"] in pairings, p
            assert p["state"] == "completed", p
        entries = record_of(fleet, instance)["announce"]["log"]
        hashes = [devicelog.entry_hash(e) for e in entries]
        assert len(hashes) == len(set(hashes)), "a log entry twice"
        ops = [(e["op"], e["device_id"]) for e in entries]
        for device_id in (ids["phone"], ids["tablet"]):
            assert ops.count(("add", device_id)) == 1, ops
        assert ops.count(("remove", ids[target])) == 1, ops
        # One entry removes and rolls (format 2): it names the new key; no separate roll.
        [removal] = [e for e in entries if e["op"] == "remove"]
        assert removal["account_key"] is not None, removal
        assert [op for op, _ in ops].count("roll") == 0, ops
    # The server: inboxes drain, the removed device's inbox is gone, announcements bounded.
    inboxes = {layout.inbox_folder(ids[i]) for i in remaining}
    fleet.until(
        "the SMA inboxes to drain",
        remaining,
        lambda: all(imap.status(f).messages == 0 for f in inboxes),
    )
    folders = set(imap.list_folders(layout.ANNOUNCE_FOLDER))
    assert folders == {layout.ANNOUNCE_FOLDER, *inboxes}, folders
    log_entries = len(record_of(fleet, remaining[0])["announce"]["log"])
    announced = imap.status(layout.ANNOUNCE_FOLDER).messages
    assert announced <= len(remaining) + 2 * log_entries, (announced, log_entries)
