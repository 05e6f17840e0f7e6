"""The native-messaging API: schemas, envelope, dispatch, and one module per method group."""

from __future__ import annotations

from native_host.api.dispatch import Method


def all_methods() -> dict[str, Method]:
    from native_host.api import account, sma, system

    return {m.name: m for m in [*system.METHODS, *account.METHODS, *sma.METHODS]}
