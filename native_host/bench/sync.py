"""Sync figures for scripts/bench: IMAP round trips per idle sync by device count, idle sync time,
and push latency, on a real Dovecot the caller started. Measuring code, not product code."""

from __future__ import annotations

import imaplib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from native_host.adapters.keyring_secrets import MemorySecrets
from native_host.core import layout
from native_host.core.join import Device, announcement
from native_host.service.accounts import ImapSettings
from native_host.service.instance import InstanceService

_count = threading.local()


@contextmanager
def counting_commands() -> Iterator[Callable[[], int]]:
    """Count IMAP commands sent by this thread (each one is a round trip)."""
    original = getattr(imaplib.IMAP4, "_command")  # noqa: B009 (private, untyped)

    def counted(self: imaplib.IMAP4, name: str, *args: Any) -> Any:
        _count.value = getattr(_count, "value", 0) + 1
        return original(self, name, *args)

    setattr(imaplib.IMAP4, "_command", counted)  # noqa: B010
    try:
        yield lambda: getattr(_count, "value", 0)
    finally:
        setattr(imaplib.IMAP4, "_command", original)  # noqa: B010


def measure(
    host: str, port: int, username: str, password: str, counts: tuple[int, ...], pushes: int
) -> dict[str, Any]:
    account = f"{username}@example.org"
    settings = ImapSettings(host, port, "none", username)
    root = Path(tempfile.mkdtemp(prefix="sma-bench-sync-"))
    services: list[InstanceService] = []
    figures: dict[str, Any] = {"round_trips_per_idle_sync": {}, "idle_sync_ms": {}}
    with counting_commands() as commands:
        for count in counts:
            while len(services) < count:
                service = InstanceService(
                    root / str(len(services)), MemorySecrets(), lambda e, d: None
                )
                service.configure(account, settings, password)
                service.runtime(account).join(f"device {len(services)}")
                service.stop()  # no background threads: they would add their own commands
                services.append(service)
            runtime = services[0].runtime(account)
            runtime.sync()
            before = commands()
            runtime.sync()
            figures["round_trips_per_idle_sync"][count] = commands() - before
            times = []
            for _ in range(20):
                started = time.perf_counter()
                runtime.sync()
                times.append(time.perf_counter() - started)
            figures["idle_sync_ms"][count] = statistics.median(times) * 1e3
            services[0].stop()
    figures["push_latency_ms"] = push_latency(root, account, settings, password, pushes)
    return figures


def push_latency(
    root: Path, account: str, settings: ImapSettings, password: str, pushes: int
) -> dict[str, float]:
    heard = threading.Event()
    listener = InstanceService(
        root / "listener",
        MemorySecrets(),
        lambda e, d: heard.set() if e == "devices.changed" else None,
    )
    listener.configure(account, settings, password)
    listener.runtime(account).join("listener")
    time.sleep(1.0)  # let IDLE settle
    sender = InstanceService(root / "sender", MemorySecrets(), lambda e, d: None)
    sender.configure(account, settings, password)
    runtime = sender.runtime(account)
    runtime.join("sender")
    sender.stop()
    time.sleep(1.0)
    store = sender._store_for(runtime.record)
    assert runtime.record.device is not None
    me = runtime.record.device
    samples = []
    try:
        for n in range(pushes):
            heard.clear()
            device = Device(me.device_id, f"sender {n}", account, me.joined)
            raw = announcement(device, now=time.time() + n + 1, random=os.urandom)
            started = time.perf_counter()
            store.append(layout.ANNOUNCE_FOLDER, raw)
            if heard.wait(10):
                samples.append(time.perf_counter() - started)
            time.sleep(0.2)
    finally:
        store.close()
        listener.stop()
    return {
        "median": statistics.median(samples) * 1e3 if samples else float("nan"),
        "max": max(samples) * 1e3 if samples else float("nan"),
        "heard": len(samples),
        "sent": pushes,
    }
