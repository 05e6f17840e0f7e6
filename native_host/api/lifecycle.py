"""device.remove / device.rename / sma.leave / devices.expire: a device's life after pairing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from native_host.api.dispatch import Method
from native_host.errors import ErrorCode, HostError, StoreError
from native_host.session import Context

# The service layer is imported inside the handlers (see api/sma.py for why).
T = TypeVar("T")


def _runtime(context: Context, params: dict[str, Any]) -> Any:
    runtime = context.service().joined_runtime(params["account"])
    if not runtime.trust.is_paired():
        raise HostError(ErrorCode.NOT_PAIRED, "this device is not a paired member of the SMA")
    return runtime


def _io(action: Callable[[], T]) -> T:
    try:
        return action()
    except StoreError as exc:
        from native_host.service.instance import store_error

        raise store_error(exc) from None


def remove(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    device_id = params["device_id"]
    if device_id == runtime.trust.me:
        raise HostError(
            ErrorCode.INVALID_PARAMS, "params.device_id: this device; use sma.leave to leave"
        )
    fingerprint = _io(lambda: runtime.remove_device(device_id))
    return {"removed": device_id, "account_key": fingerprint}


def rename(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    _io(lambda: runtime.rename_device(params["device_id"], params["name"]))
    return {"devices": runtime.devices()}


def leave(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    me = runtime.trust.me
    _io(runtime.leave)
    return {"left": me}


def expire(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    return {"removed": _io(lambda: runtime.expire(params.get("older_than_days", 90)))}


METHODS = [
    Method("device.remove", remove),
    Method("device.rename", rename),
    Method("sma.leave", leave),
    Method("devices.expire", expire),
]


def policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    runtime.set_expiry_policy(params["expire_after_days"])
    return {"expire_after_days": runtime.record.expire_after_days}


METHODS.append(Method("devices.expire_policy", policy))
