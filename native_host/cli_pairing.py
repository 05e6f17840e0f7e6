"""`autocrypt-sma pair` and `autocrypt-sma approve`: pairing from a terminal, so a mail client on a
server (or a script) can be a device. They drive a host exactly as the add-on does."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from native_host.client import HostCallError, HostGone, HostProcess

WAIT = 600.0  # a pairing lives ten minutes


def _wait_code(host: HostProcess, pairing_id: str | None, deadline: float) -> dict[str, Any]:
    """The pairing once its code can be compared (for the responder: the first request)."""
    while True:
        event = host.next_event(timeout=max(0.1, deadline - time.monotonic()))
        if event["event"] not in ("pairing.requested", "pairing.updated"):
            continue
        pairing: dict[str, Any] = event["data"]["pairing"]
        if pairing_id is not None and pairing["pairing_id"] != pairing_id:
            continue
        if pairing["state"] in ("rejected", "expired", "failed"):
            raise HostCallError(
                "pairing_" + pairing["state"], pairing.get("reason") or pairing["state"]
            )
        if pairing["sas"]:
            return pairing


def _wait_done(host: HostProcess, pairing_id: str, deadline: float) -> None:
    while True:
        event = host.next_event(timeout=max(0.1, deadline - time.monotonic()))
        pairing = event["data"].get("pairing") or {}
        if pairing.get("pairing_id") != pairing_id:
            continue
        if event["event"] == "pairing.completed":
            return
        if pairing.get("state") in ("rejected", "expired", "failed"):
            raise HostCallError(
                "pairing_" + pairing["state"], pairing.get("reason") or pairing["state"]
            )


def _agree(code: str, yes: bool) -> bool:
    print(f"\n    Code: {code}\n", flush=True)
    if yes:
        return True
    answer = input("Does the other device show exactly this code? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, initiator: bool) -> int:
    deadline = time.monotonic() + args.timeout
    account = {"account": args.account}
    try:
        with HostProcess() as host:
            host.call("hello", {"instance": args.instance})
            if initiator:
                params = {**account, **({"device_id": args.device} if args.device else {})}
                pairing_id = host.call("pairing.request", params)["pairing_id"]
                print(
                    "Asked to pair; approve on a paired device when it shows the code.", flush=True
                )
                pairing = _wait_code(host, pairing_id, deadline)
            else:
                showing = [
                    p
                    for p in host.call("pairing.list", account)["pairings"]
                    if p["state"] == "showing"
                ]
                if showing:
                    pairing = showing[0]
                else:
                    print("Waiting for a pairing request from a new device...", flush=True)
                    pairing = _wait_code(host, None, deadline)
                pairing_id = pairing["pairing_id"]
                print(
                    f"Device {pairing['peer_name']!r} ({pairing['peer_device_id']}) asks to pair."
                )
            decision = "pairing.approve" if _agree(pairing["sas"], args.yes) else "pairing.reject"
            host.call(decision, {**account, "pairing_id": pairing_id})
            if decision == "pairing.reject":
                print("Rejected: nothing was transferred.")
                return 1
            _wait_done(host, pairing_id, deadline)
            key = host.call("account.key", account)
            print(f"Paired. Account key {key['fingerprint']}")
            return 0
    except (HostCallError, HostGone, TimeoutError) as exc:
        print(f"autocrypt-sma: {exc}", file=sys.stderr)
        return 1


def add_commands(commands: Any) -> None:
    for name, initiator, text in (
        ("pair", True, "on a new device: ask a paired device to let this one in"),
        ("approve", False, "on a paired device: let a new device in after comparing the code"),
    ):
        cmd = commands.add_parser(name, help=text, description=text)
        cmd.add_argument("--account", required=True, help="the account's e-mail address")
        cmd.add_argument(
            "--instance", default="cli", help="this device's instance id (default: cli)"
        )
        if initiator:
            cmd.add_argument("--device", help="the device id to ask (default: any paired device)")
        cmd.add_argument(
            "--yes", action="store_true", help="accept the code without asking (scripts)"
        )
        cmd.add_argument(
            "--timeout", type=float, default=WAIT, help="seconds to wait (default 600)"
        )
        cmd.set_defaults(run=lambda a, i=initiator: run(a, i))
