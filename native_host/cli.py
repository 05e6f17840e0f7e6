"""`autocrypt-sma`: the command line for people and scripts (it grows with the product)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from native_host import __version__


def _call(args: argparse.Namespace) -> int:
    from native_host.client import HostCallError, HostGone, HostProcess

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


def _demo(args: argparse.Namespace) -> int:
    from native_host.demo import run_demo

    return run_demo(keep=args.keep)


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

    from native_host.cli_pairing import add_commands

    add_commands(commands)

    demo = commands.add_parser("demo", help="two devices join one SMA on a throwaway IMAP server")
    demo.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code
