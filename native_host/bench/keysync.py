"""Key-sync figures for scripts/bench: 10,000 peer updates from one device to another over a real
Dovecot, and the ingest rate of raw messages. Measuring code, not product code.

Two paired devices run in this process (their real runtimes, background sync and push threads,
SQLite state on disk; secrets in memory so no keyring is needed). Every correspondent has its own
key naming its address: keys from a shared pool named other addresses, so the policy refused
every one and the figures measured rows without keys (found 2026-12-03).
"""

from __future__ import annotations

import base64
import email.utils
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from native_host.adapters.keyring_secrets import MemorySecrets
from native_host.adapters.pgp import generate_account_key
from native_host.adapters.sqlite_peers import SqlitePeerRepo
from native_host.core import layout
from native_host.service.accounts import ImapSettings
from native_host.service.instance import InstanceService
from native_host.service.peers import PeerBook
from native_host.service.runtime import AccountRuntime


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(0.02)


def messages(count: int, now: float) -> list[str]:
    """`count` mails from distinct correspondents, each with an Autocrypt header, base64."""
    date = email.utils.formatdate(now - 60)
    out = []
    for i in range(count):
        addr = f"correspondent{i}@example.net"
        keydata = base64.b64encode(generate_account_key(addr, now).keydata()).decode()
        value = f"addr={addr}; keydata={keydata}"
        folded = "\r\n ".join(value[j : j + 76] for j in range(0, len(value), 76))
        raw = (
            f"From: <{addr}>\r\nTo: <me@example.org>\r\nSubject: mail {i}\r\nDate: {date}\r\n"
            f"Message-ID: <{i}@example.net>\r\nAutocrypt: {folded}\r\n\r\n"
        ).encode()
        out.append(base64.b64encode(raw).decode())
    return out


def _state(runtime: AccountRuntime, pairing_id: str) -> str:
    return str(runtime.trust.record.pairings.get(pairing_id, {}).get("state"))


def paired(
    root: Path,
    account: str,
    settings: ImapSettings,
    password: str,
    timings: dict[str, float] | None = None,
) -> list[Any]:
    """Two joined devices, B paired by A; `timings["pairing_s"]`: "Add a device" on A to completed
    on both (the "user" types A's code on B at once)."""
    services = []
    runtimes = []
    for name in ("a", "b"):
        service = InstanceService(root / name, MemorySecrets(), lambda e, d: None)
        service.configure(account, settings, password)
        runtime = service.runtime(account)
        runtime.join(f"device {name}")
        services.append(service)
        runtimes.append(runtime)
    a, b = runtimes
    started = time.perf_counter()
    invitation = a.with_store(lambda store: a.trust.invite(store))
    code = str(invitation.code)
    joined = b.with_store(lambda store: b.trust.join(store, code))
    wait_for(
        lambda: _state(a, invitation.pairing_id) == "completed", 20, "the pairing (old device)"
    )
    wait_for(lambda: _state(b, joined) == "completed", 20, "the pairing (new device)")
    if timings is not None:
        timings["pairing_s"] = time.perf_counter() - started
    return [*services, a, b]


def ingest_rate(raw: list[str]) -> float:
    """Raw messages per second through PeerBook.ingest into SQLite, no sync running."""
    with tempfile.TemporaryDirectory(prefix="sma-bench-ingest-") as tmp:
        repo = SqlitePeerRepo(Path(tmp) / "peers.sqlite3")
        book = PeerBook(
            repo, "me@example.org", lambda e, d: None, lambda: None, clock=time.time,
            random=__import__("os").urandom,
        )  # fmt: skip
        book.ingest(raw[0])  # warm: imports, first key checks
        started = time.perf_counter()
        for message in raw:
            book.ingest(message)
        rate = len(raw) / (time.perf_counter() - started)
        stored = repo.get("correspondent0@example.net")
        repo.close()
    if stored is None or stored.state.public_key is None:
        raise RuntimeError("the bench's keys were refused: it would measure rows without keys")
    return rate


def storage(runtime: AccountRuntime) -> dict[str, int]:
    """Messages and bytes in the SMA folders, as the server holds them now."""

    def action(store: Any) -> dict[str, int]:
        total = {"messages": 0, "bytes": 0, "inbox_messages": 0}
        for folder in store.list_folders(layout.ANNOUNCE_FOLDER):
            batch = store.fetch(folder, None, limit=10_000, max_size=0)
            total["messages"] += len(batch.messages)
            total["bytes"] += sum(m.size for m in batch.messages)
            if folder != layout.ANNOUNCE_FOLDER:
                total["inbox_messages"] += len(batch.messages)
        return total

    return runtime.with_store(action)


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(host: str, port: int, username: str, password: str, count: int) -> dict[str, Any]:
    account = f"{username}@example.org"
    settings = ImapSettings(host, port, "none", username)
    raw = messages(count, time.time())
    figures: dict[str, Any] = {"ingest_per_second": ingest_rate(raw)}
    with tempfile.TemporaryDirectory(prefix="sma-bench-keysync-") as tmp:
        timings: dict[str, float] = {}
        service_a, service_b, a, b = paired(Path(tmp), account, settings, password, timings)
        figures["pairing_s"] = timings["pairing_s"]
        try:
            wait_for(lambda: storage(a)["inbox_messages"] == 0, 30, "inboxes to drain")
            before = storage(a)
            appended = a.peers.appended + b.peers.appended
            started = time.perf_counter()
            for message in raw:
                a.peers.ingest(message)
            ingested = time.perf_counter() - started
            wait_for(lambda: b.peers.repo.count() >= count, 120, "B to hold every peer")
            arrived = time.perf_counter() - started
            wait_for(lambda: storage(a)["inbox_messages"] == 0, 60, "inboxes to drain again")
            after = storage(a)
            same = a.peers.repo.snapshot() == b.peers.repo.snapshot()
            figures.update(
                {
                    "propagate_updates": count,
                    "propagate_ingest_s": ingested,
                    "propagate_wall_s": arrived,
                    "propagate_after_last_ingest_s": arrived - ingested,
                    "propagate_sma_messages": a.peers.appended + b.peers.appended - appended,
                    "propagate_converged": same,
                    "server_sma_messages_before": before["messages"],
                    "server_sma_messages_after": after["messages"],
                    "server_sma_bytes_after": after["bytes"],
                    "server_inbox_messages_after": after["inbox_messages"],
                    # Both devices live in this process: an upper bound for one host.
                    "peak_rss_mb_both_devices": _peak_rss_mb(),
                }
            )
        finally:
            service_a.stop()
            service_b.stop()
    return figures


def main() -> None:
    """Run alone: `python -m native_host.bench.keysync` (starts its own Dovecot)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.servers.dovecot_server import DovecotServer

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with DovecotServer() as server:
        user, password = server.new_account()
        for name, value in measure(server.host, server.port, user, password, count).items():
            print(f"{name:<34} {value}")


if __name__ == "__main__":
    main()
