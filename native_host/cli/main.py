"""`autocrypt-sma`: the command line for people and scripts (it grows with the product)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from native_host import __version__


def _call(args: argparse.Namespace) -> int:
    from native_host.cli.client import HostCallError, HostGone, HostProcess

    try:
        params: Any = json.loads(args.params) if args.params is not None else None
    except json.JSONDecodeError as exc:
        print(f"autocrypt-sma: PARAMS is not JSON: {exc}", file=sys.stderr)
        return 2
    if params is not None and not isinstance(params, dict):
        print("autocrypt-sma: PARAMS must be a JSON object", file=sys.stderr)
        return 2
    with HostProcess() as host:
        try:
            if args.instance:
                host.call("hello", {"instance": args.instance}, timeout=args.timeout)
            response = host.request(args.method, params, timeout=args.timeout)
        except (HostCallError, HostGone, TimeoutError) as exc:
            print(f"autocrypt-sma: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(response.get("result", response), indent=2, ensure_ascii=False))
    return 1 if "error" in response else 0


def _prefer_encrypt(args: argparse.Namespace) -> int:
    """Show the account's prefer-encrypt setting, or set it (for every device of the account)."""
    from native_host.cli.client import HostCallError, HostGone, HostProcess

    account = {"account": args.account}
    try:
        with HostProcess() as host:
            host.call("hello", {"instance": args.instance})
            if args.value is None:
                result = host.call("account.key", account)
                value, set_at = result["prefer_encrypt"], result["prefer_encrypt_set_at"]
            else:
                result = host.call("account.set_prefer_encrypt", {**account, "value": args.value})
                value, set_at = result["prefer_encrypt"], result["set_at"]
    except (HostCallError, HostGone, TimeoutError) as exc:
        print(f"autocrypt-sma: {exc}", file=sys.stderr)
        return 1
    when = "never set (the default)" if set_at is None else f"set at {set_at} (UTC seconds)"
    print(f"prefer-encrypt: {value}, {when}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from native_host.cli.demo import run_demo

    return run_demo(keep=args.keep)


def _install_or_uninstall(args: argparse.Namespace) -> int:
    """`install` and `uninstall`: the work is in native_host.cli.install; here only what to print."""
    from native_host.cli.install import (
        InstallError,
        Scope,
        current_platform,
        describe_scope,
        next_steps,
        run_install,
        run_uninstall,
    )

    scope = Scope(args.platform or current_platform(), system=args.system)
    installing = args.command == "install"
    try:
        if installing:
            lines = run_install(scope, args.app, dry_run=args.dry_run, force=args.force)
        else:
            lines = run_uninstall(scope, args.app, dry_run=args.dry_run)
    except InstallError as exc:
        print(f"autocrypt-sma {args.command}: {exc}", file=sys.stderr)
        return 1
    dry = f" (dry run: nothing {'written' if installing else 'removed'})" if args.dry_run else ""
    print(f"autocrypt-sma: {describe_scope(scope)}{dry}")
    for line in lines:
        print("  " + line)
    if installing and not args.dry_run:
        for line in next_steps(scope):
            print(line)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """`doctor`: exit 0 when every check passed, 1 otherwise."""
    from dataclasses import asdict

    from native_host.cli.doctor import Doctor, summary

    checks = Doctor(timeout=args.timeout).run()
    failed = any(c.status == "problem" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            print(check.line())
        print(summary(checks))
    return 1 if failed else 0


def _add_install_commands(commands: Any) -> None:
    """install / uninstall / doctor: getting the host to where Thunderbird finds it."""
    for name, run, text in (
        (
            "install",
            _install_or_uninstall,
            "register the host where Thunderbird and Firefox look for it",
        ),
        ("uninstall", _install_or_uninstall, "remove what install wrote (and nothing else)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--app",
            choices=["thunderbird", "firefox", "all"],
            default="all",
            help="which application (default: all)",
        )
        sub.add_argument(
            "--system", action="store_true", help="for every user of this computer (needs root)"
        )
        sub.add_argument("--dry-run", action="store_true", help="show what would change")
        sub.add_argument(
            "--platform",
            choices=["linux", "darwin", "windows"],
            help="lay files out for this platform (default: this one)",
        )
        if name == "install":
            sub.add_argument(
                "--force", action="store_true", help="replace files install did not write"
            )
        sub.set_defaults(run=run)
    doctor = commands.add_parser(
        "doctor",
        help="check the installation, the keyring and every account; say how to fix problems",
        description="Exit status: 0 when every check passed, 1 otherwise.",
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per launch or login (default 10)"
    )
    doctor.set_defaults(run=_doctor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autocrypt-sma", description=__doc__)
    parser.add_argument("--version", action="version", version=f"autocrypt-sma {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    call = commands.add_parser(
        "call",
        help="start a host as Thunderbird does, send one request, print the answer",
        description="Exit status: 0 for a result, 1 for an error answer, 2 for bad arguments.",
    )
    call.add_argument("method", help="e.g. ping")
    call.add_argument("params", nargs="?", help='a JSON object, e.g. \'{"instance": "p1"}\'')
    call.add_argument("--instance", help="send hello with this instance first")
    call.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    call.set_defaults(run=_call)

    from native_host.cli.pairing import add_commands

    add_commands(commands)
    _add_install_commands(commands)

    text = "show or set the account's Autocrypt prefer-encrypt (all its devices follow)"
    prefer = commands.add_parser("prefer-encrypt", help=text, description=text)
    prefer.add_argument("value", nargs="?", choices=("mutual", "nopreference"))
    prefer.add_argument("--account", required=True, help="the account's e-mail address")
    prefer.add_argument(
        "--instance", default="cli", help="this device's instance id (default: cli)"
    )
    prefer.set_defaults(run=_prefer_encrypt)

    demo = commands.add_parser("demo", help="two devices join one SMA on a throwaway IMAP server")
    demo.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code
