"""Load figures for scripts/bench and tests/stress/test_load.py: several devices (real host
processes) on one account ingest mail and sync at once, one more joins midway and one is removed.
Measuring code, not product code.

The scenario: `devices - 1` devices join and pair one after another (each approved by the device
before it); then each ingests correspondents' mail from its own thread (a few per second, from a
shared set of addresses with random dates and keys, so the same address arrives with different
dates and keys on different devices and merges conflict) and calls `sync` now and then. At 30 %
of the run the last device joins, starts ingesting at once and pairs; at 50 % one of the first
devices stops, and once another member holds what it learned, that member removes it (a key
roll). At the end every remaining device must hold exactly the expected merge (for each address,
the newest-dated mail wins), agree on members and account key, and the inboxes must drain. A
separate IMAP connection samples the SMA folders every two seconds.
"""

from __future__ import annotations

import base64
import email.utils
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.errors
from keyring.compat import properties

from native_host.cli.client import HostCallError, HostProcess

T0 = 1_760_000_000  # mail dates fall in [T0, T0 + DATE_SPAN): in the past, so they count as sent
DATE_SPAN = 1_000_000
KEY_POOL = 2  # keys per correspondent (dates pick one, so the same address arrives with both)
ADDRESSES = 100  # correspondents shared by all devices: every address is ingested on several
PLAIN_SHARE = 0.1  # mails without an Autocrypt header (they only move last_seen)
SYNC_SHARE = 0.1  # after this share of ingests the device also calls `sync`
SAMPLE_INTERVAL = 2.0
JOIN_AT, REMOVE_AT = 0.3, 0.5  # of the run
STEP_TIMEOUT = 60.0  # one pairing, one hand-over, the convergence after the load


class ProcessKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives as long as its host process: for benchmark hosts only, named through
    PYTHON_KEYRING_BACKEND so that no Secret Service is needed (each host keeps its own)."""

    @properties.classproperty
    def priority(cls) -> float:
        # Viable only where named: merely importing this module (as pytest's collection does)
        # must not put it next to the Secret Service, which would make keyring chain the two.
        if os.environ.get("PYTHON_KEYRING_BACKEND", "").endswith(".ProcessKeyring"):
            return 1
        raise RuntimeError("ProcessKeyring is used only where PYTHON_KEYRING_BACKEND names it")

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._stored: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._stored.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._stored[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self._stored.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@dataclass(frozen=True)
class Ingest:
    """One mail a device's `peers.ingest` accepted."""

    device: int
    addr: str
    date: int
    header: bool


def key_of(date: int, keys: list[str]) -> tuple[str, str]:
    """The key and preference a header dated `date` carries: a function of the date, so that two
    mails with one date never disagree (the merge's tie-break then never decides)."""
    return keys[date % len(keys)], "mutual" if (date // len(keys)) % 2 else "nopreference"


def raw_mail(ingest: Ingest, keys: dict[str, list[str]]) -> str:
    """The received message for `ingest`, base64 as peers.ingest takes it."""
    lines = [
        f"From: <{ingest.addr}>",
        "To: <me@example.org>",
        f"Date: {email.utils.formatdate(ingest.date)}",
        f"Subject: load {ingest.device}",
    ]
    if ingest.header:
        keydata, prefer = key_of(ingest.date, keys[ingest.addr])
        value = f"addr={ingest.addr}; " + ("prefer-encrypt=mutual; " if prefer == "mutual" else "")
        value += f"keydata={keydata}"
        lines.append(
            "Autocrypt: " + "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
        )
    return base64.b64encode(("\r\n".join(lines) + "\r\n\r\nhi\r\n").encode()).decode()


def expected_table(ingests: list[Ingest], keys: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The documented merge of everything ingested: last_seen is the newest date; the Autocrypt
    part (timestamp, key, preference) comes whole from the newest mail with a header."""
    table: dict[str, dict[str, Any]] = {}
    for done in ingests:
        row = table.setdefault(
            done.addr,
            dict.fromkeys(
                ("last_seen", "autocrypt_timestamp", "public_key", "gossip_timestamp", "gossip_key")
            )
            | {"addr": done.addr, "prefer_encrypt": "nopreference"},
        )
        row["last_seen"] = max(row["last_seen"] or 0, done.date)
        if done.header and done.date > (row["autocrypt_timestamp"] or -1):
            keydata, prefer = key_of(done.date, keys[done.addr])
            row.update(autocrypt_timestamp=done.date, public_key=keydata, prefer_encrypt=prefer)
    return table


def peer_table(host: HostProcess, account: str) -> dict[str, dict[str, Any]]:
    """A device's whole peer table, page by page."""
    rows: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"account": account, "limit": 500, "cursor": cursor}
        answer = host.call("peers.list", params)
        rows |= {row["addr"]: row for row in answer["peers"]}
        cursor = answer["cursor"]
        if cursor is None:
            return rows


def paired_members(host: HostProcess, account: str) -> set[str]:
    return {
        d["device_id"]
        for d in host.call("devices.list", {"account": account})["devices"]
        if d["paired"]
    }


def peak_rss_mb(host: HostProcess) -> float:
    """The host process's peak resident set (VmHWM), in MB."""
    status = Path(f"/proc/{host.proc.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def settle(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held; TimeoutError after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.25)
    return time.monotonic() - started


class Sampler:
    """Counts the SMA folders' messages and bytes every few seconds, over its own connection."""

    def __init__(self, imap: dict[str, Any], password: str) -> None:
        from native_host.adapters.imap_store import ImapStore

        self._store = ImapStore(
            imap["host"], imap["port"], imap["username"], password, security=imap["security"],
            verify_tls=imap.get("verify_tls", True), timeout=15.0,
        )  # fmt: skip
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sma-sampler", daemon=True)

    def take(self) -> dict[str, Any]:
        from native_host.core import layout
        from native_host.ports import FolderMissing

        counts: dict[str, int] = {}
        size = 0
        for folder in self._store.list_folders(layout.ANNOUNCE_FOLDER):
            try:
                batch = self._store.fetch(folder, None, limit=100_000, max_size=0)
            except FolderMissing:  # a removed device's inbox, deleted since the LIST
                continue
            counts[folder] = len(batch.messages)
            size += sum(m.size for m in batch.messages)
        sample = {
            "at": time.monotonic(),
            "announce": counts.pop(layout.ANNOUNCE_FOLDER, 0),
            "inboxes": counts,
            "bytes": size,
        }
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.take()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._store.close()


@dataclass
class Device:
    index: int
    host: HostProcess
    device_id: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass
class LoadRun:
    """What a run produced: the figures, and what the test asserts on."""

    figures: dict[str, float]
    expected: dict[str, dict[str, Any]]
    tables: dict[str, dict[str, dict[str, Any]]]  # per remaining device id
    members: dict[str, set[str]]  # paired devices as each remaining device lists them
    account_keys: dict[str, str]  # fingerprint per remaining device
    remaining: set[str]
    removed: str
    removed_event: dict[str, Any]
    removed_key_error: str
    rolled_key: str
    first_key: str
    samples: list[dict[str, Any]]
    final: dict[str, Any]  # the last sample, after the drain
    failures: list[str]
    log_entries: (
        int  # genesis, adds, remove, roll: what the announcement folder holds besides announcements
    )


class Load:
    def __init__(
        self, start_host: Callable[[], HostProcess], mail: dict[str, Any], seed: int, rate: float
    ) -> None:
        from native_host.adapters.pgp import generate_account_key

        self._start_host = start_host
        self.mail = mail
        self.account = str(mail["account"])
        self._seed = seed
        self._rate = rate
        # Keys per correspondent, each naming it (a header's key must name its sender).
        self.keys = {
            f"c{c}@example.net": [
                base64.b64encode(generate_account_key(f"c{c}@example.net", T0).keydata()).decode()
                for _ in range(KEY_POOL)
            ]
            for c in range(ADDRESSES)
        }
        self.ingests: list[Ingest] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def call(self, device: Device, method: str, **params: Any) -> dict[str, Any]:
        return device.host.call(method, {"account": self.account, **params})

    def join(self, index: int) -> Device:
        device = Device(index, self._start_host())
        device.host.call("hello", {"instance": f"device{index}"})
        device.host.call("account.configure", self.mail)
        joined = self.call(device, "sma.join", device_name=f"Device {index}")
        device.device_id = joined["device_id"]
        return device

    def pair(self, new: Device, approver: Device) -> None:
        """The way the user does it: "Add a device" on the member, its code typed on the new one."""
        invitation = self.call(approver, "pairing.invite")["pairing"]
        pairing_id = self.call(new, "pairing.join", code=invitation["code"])["pairing_id"]
        new.host.wait_event(
            "pairing.completed",
            STEP_TIMEOUT,
            check=lambda d: bool(d["pairing"]["pairing_id"] == pairing_id),
        )
        approver.host.wait_event(
            "pairing.completed",
            STEP_TIMEOUT,
            check=lambda d: bool(d["pairing"]["pairing_id"] == invitation["pairing_id"]),
        )

    def agree_on_members(self, devices: list[Device]) -> float:
        ids = {d.device_id for d in devices}
        return settle(
            lambda: all(paired_members(d.host, self.account) == ids for d in devices),
            STEP_TIMEOUT,
            "every device lists the same paired members",
        )

    def start_load(self, device: Device) -> None:
        device.thread = threading.Thread(
            target=self._ingest_loop, args=(device,), name=f"load-{device.index}", daemon=True
        )
        device.thread.start()

    def stop_load(self, device: Device) -> None:
        device.stop.set()
        if device.thread is not None:
            device.thread.join()

    def _ingest_loop(self, device: Device) -> None:
        rng = random.Random(self._seed * 1000 + device.index)
        while not device.stop.is_set():
            mail = Ingest(
                device.index,
                f"c{rng.randrange(ADDRESSES)}@example.net",
                T0 + rng.randrange(DATE_SPAN),
                rng.random() >= PLAIN_SHARE,
            )
            try:
                self.call(device, "peers.ingest", message=raw_mail(mail, self.keys))
                with self._lock:
                    self.ingests.append(mail)
                if rng.random() < SYNC_SHARE:
                    self.call(device, "sync")
            except (HostCallError, TimeoutError) as exc:
                with self._lock:
                    self.failures.append(f"device {device.index}: {exc}")
            device.stop.wait(rng.expovariate(self._rate))

    def holds_all_of(self, holder: Device, source: Device) -> bool:
        """`holder` knows at least what `source` does (last_seen and the Autocrypt part)."""
        mine, theirs = peer_table(holder.host, self.account), peer_table(source.host, self.account)
        return all(
            addr in mine
            and (mine[addr]["last_seen"] or 0) >= (row["last_seen"] or 0)
            and (mine[addr]["autocrypt_timestamp"] or 0) >= (row["autocrypt_timestamp"] or 0)
            for addr, row in theirs.items()
        )


def run(
    start_host: Callable[[], HostProcess],
    mail: dict[str, Any],
    *,
    seconds: float,
    devices: int = 5,
    rate: float = 4.0,
    seed: int = 0,
) -> LoadRun:
    """The scenario of the module's docstring; the caller starts (and closes) the hosts."""
    if devices < 4:
        raise ValueError("the scenario needs at least 4 devices (3 stay, 1 joins, 1 is removed)")
    load = Load(start_host, mail, seed, rate)
    started_setup = time.monotonic()
    members = [load.join(0)]
    for index in range(1, devices - 1):
        new = load.join(index)
        load.pair(new, members[-1])
        members.append(new)
    load.agree_on_members(members)
    first_key = load.call(members[0], "account.key")["fingerprint"]
    setup_s = time.monotonic() - started_setup

    sampler = Sampler(mail["imap"], mail["password"])
    sampler.take()
    sampler.start()
    started = time.monotonic()
    for device in members:
        load.start_load(device)

    time.sleep(max(0.0, started + JOIN_AT * seconds - time.monotonic()))
    t_join = time.monotonic()
    late = load.join(devices - 1)
    load.start_load(late)  # it learns before it is paired; pairing then shares that too
    t_pair = time.monotonic()
    load.pair(late, members[0])
    pair_s = time.monotonic() - t_pair
    members.append(late)
    load.agree_on_members(members)
    join_s = time.monotonic() - t_join

    time.sleep(max(0.0, started + REMOVE_AT * seconds - time.monotonic()))
    victim, remover = members[1], members[2]
    load.stop_load(victim)
    handover_s = settle(
        lambda: load.holds_all_of(remover, victim),
        STEP_TIMEOUT,
        "the remover holds what the removed device learned",
    )
    t_remove = time.monotonic()
    rolled = load.call(remover, "device.remove", device_id=victim.device_id)["account_key"]
    remove_s = time.monotonic() - t_remove
    members.remove(victim)

    time.sleep(max(0.0, started + seconds - time.monotonic()))
    for device in members:
        load.stop_load(device)
    load_s = time.monotonic() - started

    expected = expected_table(load.ingests, load.keys)
    tables: dict[str, dict[str, dict[str, Any]]] = {}

    def converged() -> bool:
        tables.update({d.device_id: peer_table(d.host, load.account) for d in members})
        return all(table == expected for table in tables.values())

    try:
        converge_s = settle(converged, STEP_TIMEOUT, "every device holds the expected merge")
    except TimeoutError as exc:
        load.failures.append(str(exc))
        converge_s = float("nan")
    try:
        removed_event = victim.host.wait_event("device.removed", STEP_TIMEOUT)
    except Exception as exc:  # queue.Empty: reported, asserted by the caller
        load.failures.append(f"the removed device was not told: {exc!r}")
        removed_event = {}
    removed_key = victim.host.request("account.key", {"account": load.account})

    def drained() -> bool:
        return not any(sampler.take()["inboxes"].values())

    try:
        drain_s = settle(drained, STEP_TIMEOUT, "every SMA inbox is empty")
    except TimeoutError as exc:
        load.failures.append(str(exc))
        drain_s = float("nan")
    sampler.stop()
    final = sampler.samples[-1]
    rss = [peak_rss_mb(d.host) for d in [*members, victim]]
    inbox_peaks = [max(s["inboxes"].values(), default=0) for s in sampler.samples]
    figures = {
        "load_devices": float(devices),
        "load_seconds": load_s,
        "load_setup_s": setup_s,
        "load_ingests": float(len(load.ingests)),
        "load_ingests_per_second": len(load.ingests) / load_s,
        "load_join_pair_s": join_s,  # host start to every member listing it as paired
        "load_pair_s": pair_s,  # pairing.invite to completed on both sides
        "load_handover_s": handover_s,
        "load_remove_s": remove_s,
        "load_converge_s": converge_s,
        "load_drain_s": drain_s,
        "load_max_sma_messages": float(
            max(s["announce"] + sum(s["inboxes"].values()) for s in sampler.samples)
        ),
        "load_max_sma_bytes": float(max(s["bytes"] for s in sampler.samples)),
        "load_max_announce_messages": float(max(s["announce"] for s in sampler.samples)),
        "load_max_inbox_messages": float(max(inbox_peaks)),
        "load_samples": float(len(sampler.samples)),
        "load_peak_rss_mb_max": max(rss),
        "load_peak_rss_mb_mean": sum(rss) / len(rss),
    }
    return LoadRun(
        figures=figures,
        expected=expected,
        tables=tables,
        members={d.device_id: paired_members(d.host, load.account) for d in members},
        account_keys={d.device_id: load.call(d, "account.key")["fingerprint"] for d in members},
        remaining={d.device_id for d in members},
        removed=victim.device_id,
        removed_event=removed_event,
        removed_key_error=removed_key.get("error", {}).get("code", ""),
        rolled_key=rolled,
        first_key=first_key,
        samples=sampler.samples,
        final=final,
        failures=load.failures,
        log_entries=1 + (devices - 1) + 1,  # genesis, the adds, one remove that rolls
    )


def measure(
    host: str, port: int, username: str, password: str, seconds: float = 60.0, devices: int = 5
) -> dict[str, float]:
    """The figures of one run over a Dovecot account; each host keeps its secrets in its own
    process (ProcessKeyring), so no Secret Service is needed."""
    mail = {
        "account": f"{username}@example.org",
        "imap": {"host": host, "port": port, "security": "none", "username": username},
        "password": password,
    }
    hosts: list[HostProcess] = []
    logs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="sma-bench-load-") as tmp:

        def start() -> HostProcess:
            home = Path(tmp) / f"home{len(hosts)}"
            home.mkdir()
            env = {
                **os.environ,
                "SMA_HOME": str(home),
                "PYTHON_KEYRING_BACKEND": "native_host.bench.load.ProcessKeyring",
            }
            logs.append((home / "stderr.log").open("wb"))
            hosts.append(HostProcess(env=env, stderr=logs[-1]))
            return hosts[-1]

        try:
            result = run(start, mail, seconds=seconds, devices=devices)
        finally:
            for started in hosts:
                started.close()
            for file in logs:
                file.close()
    if result.failures:
        raise RuntimeError("load run failed: " + "; ".join(result.failures[:5]))
    return result.figures


def main() -> None:
    """Run alone: `python -m native_host.bench.load [seconds] [devices]` (starts its own Dovecot)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.servers.dovecot_server import DovecotServer

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    devices = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with DovecotServer() as server:
        user, password = server.new_account()
        for name, value in measure(
            server.host, server.port, user, password, seconds, devices
        ).items():
            print(f"{name:<30} {value:.3f}")


if __name__ == "__main__":
    main()
