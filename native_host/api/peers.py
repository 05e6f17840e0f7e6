"""peers.ingest / get / list / recommend and autocrypt.header: the account's Autocrypt peers."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method
from native_host.errors import ErrorCode, HostError
from native_host.session import Context

# The service layer is imported inside the handlers (see api/sma.py for why).


def _book(context: Context, params: dict[str, Any]) -> Any:
    return context.service().runtime(params["account"]).peers


def ingest(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _book(context, params).ingest(
        params["message"], params.get("gossip"), params.get("received")
    )
    return result


def get(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"peer": _book(context, params).get(params["addr"])}


def list_peers(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _book(context, params).page(
        params.get("limit", 100), params.get("cursor")
    )
    return result


def recommend(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _book(context, params).recommend(
        params["recipients"], params.get("reply_to_encrypted", False)
    )
    return result


def _account_key(runtime: Any) -> Any:
    from native_host.adapters.pgp import load_secret

    armored = runtime.trust.account_key_armored() if runtime.record.device else None
    if armored is None:
        raise HostError(
            ErrorCode.NOT_JOINED,
            "this device holds no account key yet: join the SMA and pair with a device that does",
        )
    return load_secret(armored)


def header(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = context.service().runtime(params["account"])
    key = _account_key(runtime)
    prefer, _at = runtime.peers.prefer_encrypt()
    value = key.autocrypt_header_value(runtime.account, prefer_encrypt=prefer == "mutual")
    return {
        "header": f"Autocrypt: {value}",
        "value": value,
        "fingerprint": key.fingerprint,
        "prefer_encrypt": prefer,
    }


def set_prefer_encrypt(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = context.service().runtime(params["account"])
    key = _account_key(runtime)  # the own row carries the account key (core/autocrypt.py)
    result: dict[str, Any] = runtime.peers.set_prefer_encrypt(params["value"], key.keydata())
    return result


METHODS = [
    Method("peers.ingest", ingest),
    Method("peers.get", get),
    Method("peers.list", list_peers),
    Method("peers.recommend", recommend),
    Method("autocrypt.header", header),
    Method("account.set_prefer_encrypt", set_prefer_encrypt),
]
