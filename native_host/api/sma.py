"""sma.join, devices.list and sync: this device in the account's SMA."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method
from native_host.errors import StoreError
from native_host.session import Context

# The service layer is imported inside the handlers: the method table is built at start-up, and
# a cold host must answer `ping` without loading the protocol core.


def join(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = context.service().runtime(params["account"])
    try:
        result = runtime.join(params["device_name"], params.get("first_device"))
    except StoreError as exc:
        from native_host.service.instance import store_error

        raise store_error(exc) from None
    assert runtime.record.device is not None
    return {
        "device_id": runtime.record.device.device_id,
        "first_device": result.founded,
        "identity_found": result.identity_found,
        "devices": runtime.devices(),
    }


def devices(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = context.service().joined_runtime(params["account"])
    return {"devices": runtime.devices(params.get("stale_after_days", 90))}


def sync(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = context.service().joined_runtime(params["account"])
    try:
        return runtime.sync().to_json()
    except StoreError as exc:
        from native_host.service.instance import store_error

        raise store_error(exc) from None


METHODS = [
    Method("sma.join", join),
    Method("devices.list", devices),
    Method("sync", sync),
]
