"""The demo: the product's main job so far, on an embedded throwaway IMAP server, no configuration.

Two devices of one person (say a laptop's and a desktop's Thunderbird) join the account's SMA over
real IMAP, each on its own connection, and each finds the other. The native-messaging host is
started the way Thunderbird starts it and answers `hello` and `ping`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from native_host.adapters.imap_store import ImapStore
from native_host.client import HostProcess
from native_host.core import layout
from native_host.core.directory import Announcement, Directory
from native_host.core.join import Device, join, refresh
from native_host.throwaway_imap import ThrowawayImap

ACCOUNT = "alice@example.org"


def say(text: str = "") -> None:
    print(text, flush=True)


def show(title: str, devices: list[Announcement], me: str) -> None:
    say(f"  {title}")
    for device in sorted(devices, key=lambda d: d.joined):
        mark = " (this device)" if device.device_id == me else ""
        seen = time.strftime("%H:%M:%S", time.localtime(device.last_seen))
        say(f"    - {device.name:<18} id {device.device_id}  last seen {seen}{mark}")


def run_demo(keep: bool = False) -> int:
    home = Path(tempfile.mkdtemp(prefix="sma-demo-"))
    say("autocrypt-sma demo: one Autocrypt identity, several mail clients\n")
    with ThrowawayImap(ACCOUNT) as server:
        say(
            f"1. Started a throwaway IMAP server (pymap) on {server.host}:{server.port}, account {ACCOUNT}."
        )
        env = {**os.environ, "SMA_HOME": str(home)}
        with HostProcess(env=env) as host:
            hello = host.call("hello", {"instance": "laptop-profile"})
            say(
                f"2. Started the native-messaging host as Thunderbird would: hello -> instance "
                f"{hello['instance']!r}, host {hello['host_version']}, protocol {hello['protocol_version']}."
            )
        stores = [
            ImapStore(server.host, server.port, server.username, server.password, security="none")
            for _ in range(2)
        ]
        try:
            now = time.time()
            laptop = Device(
                layout.new_device_id(os.urandom), "Laptop Thunderbird", ACCOUNT, int(now)
            )
            desktop = Device(
                layout.new_device_id(os.urandom), "Desktop Thunderbird", ACCOUNT, int(now)
            )

            first = join(stores[0], Directory(), laptop, clock=time.time, random=os.urandom)
            say(
                f"3. The laptop joins: no SMA yet, so it creates {layout.ANNOUNCE_FOLDER!r} and its inbox "
                f"{layout.inbox_folder(laptop.device_id)!r}, and announces itself (first device: {first.first_device})."
            )
            second = join(stores[1], Directory(), desktop, clock=time.time, random=os.urandom)
            say(
                "4. The desktop joins on its own connection: it finds the SMA, reads the announcements, "
                f"creates its inbox and announces itself (first device: {second.first_device})."
            )
            show("The desktop now lists:", list(second.devices), desktop.device_id)
            directory = Directory()
            refresh(stores[0], directory)
            show(
                "The laptop, refreshing its view, lists:",
                list(directory.devices.values()),
                laptop.device_id,
            )
            folders = stores[0].list_folders(layout.ANNOUNCE_FOLDER)
            subscribed = [f for f in folders if stores[0].is_subscribed(f)]
            say(f"5. SMA folders on the server: {', '.join(folders)}")
            say(f"   subscribed (shown in mail clients): {subscribed or 'none'}")
            ok = (
                {laptop.device_id, desktop.device_id}
                == set(directory.devices)
                == {d.device_id for d in second.devices}
            )
        finally:
            for store in stores:
                store.close()
    if not keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    else:
        say(f"\nState kept in {home}")
    say("\nDone: both devices see each other." if ok else "\nFAILED: the devices disagree.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())
