"""`autocrypt-sma invite` and `autocrypt-sma pair`: pairing from a terminal, so a mail client on a
server (or a script) can be a device. They drive a host exactly as the add-on does.

On a paired device `invite` prints a one-time code and waits; on the new device `pair --code`
(or `pair`, which asks for the code) joins with it. Nothing secret moves until the new device
has proven that it knows the code."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from native_host.cli.client import HostCallError, HostGone, HostProcess

WAIT = 600.0  # a pairing lives ten minutes
_ENDED = ("rejected", "expired", "failed")


def _wait_done(host: HostProcess, pairing_id: str, deadline: float) -> dict[str, Any]:
    while True:
        event = host.next_event(timeout=max(0.1, deadline - time.monotonic()))
        pairing: dict[str, Any] = event["data"].get("pairing") or {}
        if pairing.get("pairing_id") != pairing_id:
            continue
        if event["event"] == "pairing.completed":
            return pairing
        if pairing.get("state") in _ENDED:
            raise HostCallError(
                "pairing_" + pairing["state"], pairing.get("reason") or pairing["state"]
            )


def _finish(host: HostProcess, account: dict[str, str], pairing_id: str, deadline: float) -> int:
    done = _wait_done(host, pairing_id, deadline)
    key = host.call("account.key", account)
    print(f"Paired with {done.get('peer_name') or done.get('peer_device_id')!r}.")
    print(f"Account key {key['fingerprint']}")
    return 0


def run_invite(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    account = {"account": args.account}
    try:
        with HostProcess() as host:
            host.call("hello", {"instance": args.instance})
            pairing = host.call("pairing.invite", account)["pairing"]
            print(
                "On the new device, type this code (it works once, for ten minutes):\n"
                f"\n    Code: {pairing['code']}\n",
                flush=True,
            )
            return _finish(host, account, pairing["pairing_id"], deadline)
    except (HostCallError, HostGone, TimeoutError) as exc:
        print(f"autocrypt-sma: {exc}", file=sys.stderr)
        return 1


def run_pair(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    account = {"account": args.account}
    code = args.code or input("Code shown by 'Add a device' on a paired device: ")
    try:
        with HostProcess() as host:
            host.call("hello", {"instance": args.instance})
            pairing_id = host.call("pairing.join", {**account, "code": code.strip()})["pairing_id"]
            print("Code sent; waiting for the other device...", flush=True)
            return _finish(host, account, pairing_id, deadline)
    except (HostCallError, HostGone, TimeoutError) as exc:
        print(f"autocrypt-sma: {exc}", file=sys.stderr)
        return 1


def add_commands(commands: Any) -> None:
    for name, text in (
        ("invite", "on a paired device: add a device; prints the code to type on the new one"),
        ("pair", "on a new device: join with the code a paired device shows"),
    ):
        cmd = commands.add_parser(name, help=text, description=text)
        cmd.add_argument("--account", required=True, help="the account's e-mail address")
        cmd.add_argument(
            "--instance", default="cli", help="this device's instance id (default: cli)"
        )
        if name == "pair":
            cmd.add_argument("--code", help="the code (asked for when left out)")
        cmd.add_argument(
            "--timeout", type=float, default=WAIT, help="seconds to wait (default 600)"
        )
        cmd.set_defaults(run=run_pair if name == "pair" else run_invite)
