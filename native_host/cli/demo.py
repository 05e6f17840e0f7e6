"""The demo: the product's main job so far, on an embedded throwaway IMAP server, no configuration.

Two devices of one person (a laptop's and a desktop's Thunderbird profile) each start the
native-messaging host the way Thunderbird does, configure the account (the password goes to the
OS keyring), and join its SMA over real IMAP; the laptop hears of the desktop by push. The
desktop pairs with the laptop (a code the laptop shows is typed on the desktop, the account key
moves), and a key the laptop learns from a correspondent's mail reaches the desktop by key sync.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from native_host.adapters.imap_store import ImapStore
from native_host.cli.client import HostCallError, HostProcess
from native_host.cli.throwaway_imap import ThrowawayImap
from native_host.core import layout

ACCOUNT = "alice@example.org"
CORRESPONDENT = "bob@example.net"


def say(text: str = "") -> None:
    print(text, flush=True)


def show(title: str, devices: list[dict[str, Any]]) -> None:
    say(f"  {title}")
    for device in devices:
        mark = " (this device)" if device["self"] else ""
        seen = time.strftime("%H:%M:%S", time.localtime(device["last_seen"]))
        say(f"    - {device['name']:<20} id {device['device_id']}  last seen {seen}{mark}")


def pair(laptop: HostProcess, desktop: HostProcess) -> bool:
    """The laptop's user chooses "Add a device" and reads the code; the desktop's user types it;
    the two hosts prove the code to each other (SPAKE2) and the key moves."""
    account = {"account": ACCOUNT}
    say("8. The desktop has no account key yet; the laptop made one when it founded the SMA.")
    started = time.monotonic()
    invitation = laptop.call("pairing.invite", account)["pairing"]
    say(f"   On the laptop, 'Add a device' shows a one-time code:  {invitation['code']}")
    say("   The user types it on the desktop. Nothing secret moves until the desktop proves it.")
    desktop.call("pairing.join", {**account, "code": invitation["code"]})
    desktop.wait_event("pairing.completed", 15)
    laptop.wait_event("pairing.completed", 15)
    took = time.monotonic() - started
    keys = [host.call("account.key", account)["fingerprint"] for host in (laptop, desktop)]
    say(f"9. {took:.2f} s after the code was typed the desktop holds the account key:")
    say(f"     laptop  {keys[0]}")
    say(f"     desktop {keys[1]}")
    paired = [d["paired"] for d in desktop.call("devices.list", account)["devices"]]
    say(f"   The device log now admits both devices: paired = {paired}")
    return keys[0] == keys[1] and all(paired)


def correspondent_message(now: float) -> tuple[str, str]:
    """A mail from Bob with an Autocrypt header, as the laptop's Thunderbird receives it."""
    import base64
    import email.utils

    from native_host.adapters.pgp import generate_account_key

    bob = generate_account_key(CORRESPONDENT, now)
    value = bob.autocrypt_header_value(CORRESPONDENT, prefer_encrypt=True)
    folded = "\r\n ".join(value[i : i + 76] for i in range(0, len(value), 76))
    raw = (
        f"From: Bob <{CORRESPONDENT}>\r\nTo: <{ACCOUNT}>\r\nSubject: hello\r\n"
        f"Date: {email.utils.formatdate(now)}\r\nAutocrypt: {folded}\r\n"
        "Content-Type: text/plain\r\n\r\nHi Alice!\r\n"
    ).encode()
    return base64.b64encode(raw).decode(), bob.fingerprint


def key_sync(laptop: HostProcess, desktop: HostProcess) -> bool:
    """Mail from a correspondent arrives on the laptop; the desktop knows the key a moment later."""
    account = {"account": ACCOUNT}
    message, fingerprint = correspondent_message(time.time())
    started = time.monotonic()
    result = laptop.call("peers.ingest", {**account, "message": message})
    say(
        f"10. Mail from {CORRESPONDENT} arrives on the laptop with an Autocrypt header: "
        f"peer state updated = {result['updated']}."
    )
    desktop.wait_event("peers.updated", 15, check=lambda d: CORRESPONDENT in d["addrs"])
    took = time.monotonic() - started
    peer = desktop.call("peers.get", {**account, "addr": CORRESPONDENT})["peer"]
    say(
        f"11. {took:.2f} s later the desktop knows Bob's key, signed and encrypted device to device "
        "through the SMA:"
    )
    say(f"     key {peer['public_key_fingerprint']}, prefer-encrypt {peer['prefer_encrypt']}")
    advice = desktop.call("peers.recommend", {**account, "recipients": [CORRESPONDENT]})
    say(f"   Writing to Bob from the desktop, Autocrypt recommends: {advice['recommendation']}")
    return peer is not None and peer["public_key_fingerprint"] == fingerprint


def run_demo(keep: bool = False) -> int:
    home = Path(tempfile.mkdtemp(prefix="sma-demo-"))
    env = {**os.environ, "SMA_HOME": str(home)}
    say("autocrypt-sma demo: one Autocrypt identity, several mail clients\n")
    try:
        with (
            ThrowawayImap(ACCOUNT) as server,
            HostProcess(env=env) as laptop,
            HostProcess(env=env) as desktop,
        ):
            say(
                f"1. A throwaway IMAP server (pymap) runs on {server.host}:{server.port} for {ACCOUNT}."
            )
            for host, instance in ((laptop, "demo-laptop"), (desktop, "demo-desktop")):
                hello = host.call("hello", {"instance": instance})
            say(
                "2. Two native hosts started as Thunderbird starts them, one per profile "
                f"(host {hello['host_version']}, protocol {hello['protocol_version']})."
            )
            settings = {
                "account": ACCOUNT,
                "imap": {
                    "host": server.host,
                    "port": server.port,
                    "security": "none",
                    "username": server.username,
                },
                "password": server.password,
            }
            for host in (laptop, desktop):
                host.call("account.configure", settings)
            say(
                "3. Both configured the account: login checked, password stored in the OS keyring only."
            )
            first = laptop.call(
                "sma.join", {"account": ACCOUNT, "device_name": "Laptop Thunderbird"}
            )
            say(
                f"4. The laptop joins: no SMA yet, so it creates {layout.ANNOUNCE_FOLDER!r} and its inbox "
                f"'{layout.INBOX_PREFIX}{first['device_id']}', and announces itself "
                f"(first device: {first['first_device']})."
            )
            started = time.monotonic()
            second = desktop.call(
                "sma.join", {"account": ACCOUNT, "device_name": "Desktop Thunderbird"}
            )
            say(
                "5. The desktop joins: it finds the SMA, reads the announcements, creates its inbox and "
                f"announces itself (first device: {second['first_device']})."
            )
            show("The desktop lists:", second["devices"])
            pushed = laptop.wait_event("devices.changed", timeout=10)
            say(
                f"6. The laptop was told by push (IMAP IDLE), {time.monotonic() - started:.2f} s after the desktop joined:"
            )
            show("The laptop lists:", pushed["devices"])
            with ImapStore(
                server.host, server.port, server.username, server.password, security="none"
            ) as store:
                folders = store.list_folders(layout.ANNOUNCE_FOLDER)
                subscribed = [f for f in folders if store.is_subscribed(f)]
            say(f"7. SMA folders on the server: {', '.join(folders)}")
            say(f"   subscribed, so shown in mail clients: {subscribed or 'none'}")
            ok = (
                {d["device_id"] for d in pushed["devices"]}
                == {d["device_id"] for d in second["devices"]}
                == {
                    first["device_id"],
                    second["device_id"],
                }
            )
            ok = pair(laptop, desktop) and ok
            ok = ok and key_sync(laptop, desktop)
            for host in (laptop, desktop):
                host.call("account.remove", {"account": ACCOUNT})  # leaves nothing in the keyring
    except (HostCallError, TimeoutError, RuntimeError) as exc:
        say(f"\nFAILED: {exc}")
        return 1
    finally:
        if keep:
            say(f"\nState kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    say("\nDone: two devices, one Autocrypt identity." if ok else "\nFAILED: the devices disagree.")
    return 0 if ok else 1
