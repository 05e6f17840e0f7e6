"""pairing.invite / join / list / cancel and account.key: bringing a new device in."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method
from native_host.errors import ErrorCode, HostError, StoreError
from native_host.session import Context

# The service layer is imported inside the handlers (see api/sma.py for why).


def _runtime(context: Context, params: dict[str, Any]) -> Any:
    return context.service().joined_runtime(params["account"])


def _store_error(exc: StoreError) -> HostError:
    from native_host.service.instance import store_error

    return store_error(exc)


def invite(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    try:
        pairing = runtime.with_store(lambda store: runtime.trust.invite(store))
    except StoreError as exc:
        raise _store_error(exc) from None
    return {"pairing": runtime.trust.view(pairing)}


def join(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    try:
        pairing_id = runtime.with_store(lambda store: runtime.trust.join(store, params["code"]))
    except StoreError as exc:
        raise _store_error(exc) from None
    return {"pairing_id": pairing_id}


def list_pairings(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    trust = _runtime(context, params).trust
    pairings = sorted(trust.pairings(), key=lambda p: p.expires_at, reverse=True)
    return {
        "pairings": [trust.view(p) for p in pairings[:100]],
        "unsolicited_requests": trust.record.unsolicited_pairing,
    }


def cancel(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    runtime = _runtime(context, params)
    try:
        result = runtime.with_store(lambda store: runtime.trust.cancel(store, params["pairing_id"]))
    except StoreError as exc:
        raise _store_error(exc) from None
    return {"pairing": runtime.trust.view(result)}


def account_key(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    from native_host.adapters.pgp import load_secret

    armored = _runtime(context, params).trust.account_key_armored()
    if armored is None:
        raise HostError(
            ErrorCode.NOT_JOINED,
            "this device holds no account key yet: pair it with a device that does",
        )
    key = load_secret(armored)
    prefer, set_at = _runtime(context, params).peers.prefer_encrypt()
    return {
        "fingerprint": key.fingerprint,
        "public_key": key.public_armored,
        "prefer_encrypt": prefer,
        "prefer_encrypt_set_at": set_at,
    }


def account_secret_key(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Only for Thunderbird's own OpenPGP store: the add-on's background imports the answer and
    keeps no copy. Earlier keys come too, so mail encrypted before a key roll stays readable."""
    from native_host.adapters.pgp import BadAccountKey, load_secret

    runtime = _runtime(context, params)
    armored = runtime.trust.account_key_armored()
    if armored is None:
        raise HostError(
            ErrorCode.NOT_JOINED,
            "this device holds no account key yet: pair it with a device that does",
        )
    key = load_secret(armored)
    previous: list[dict[str, str]] = []
    for old in runtime.lifecycle.old_keys():
        try:
            earlier = load_secret(old)
        except BadAccountKey:
            continue  # unreadable leftovers are not worth failing the current key over
        if earlier.fingerprint != key.fingerprint:
            previous.append(
                {"fingerprint": earlier.fingerprint, "secret_key": earlier.secret_armored}
            )
    return {"fingerprint": key.fingerprint, "secret_key": key.secret_armored, "previous": previous}


METHODS = [
    Method("pairing.invite", invite),
    Method("pairing.join", join),
    Method("pairing.list", list_pairings),
    Method("pairing.cancel", cancel),
    Method("account.key", account_key),
    Method("account.secret_key", account_secret_key),
]
