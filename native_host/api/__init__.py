"""The native-messaging API: schemas, envelope, dispatch, and one module per method group."""

from __future__ import annotations

from native_host.api.dispatch import Method


def all_methods() -> dict[str, Method]:
    from native_host.api import account, lifecycle, pairing, peers, sma, system

    groups = [
        system.METHODS,
        account.METHODS,
        sma.METHODS,
        pairing.METHODS,
        peers.METHODS,
        lifecycle.METHODS,
    ]
    return {m.name: m for group in groups for m in group}
