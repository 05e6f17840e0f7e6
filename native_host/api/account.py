"""account.configure, account.list, account.remove: IMAP settings, with the password in the keyring."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method
from native_host.session import Context


def configure(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    from native_host.service.accounts import ImapSettings

    imap = params["imap"]
    settings = ImapSettings(
        host=imap["host"],
        port=imap["port"],
        security=imap["security"],
        username=imap["username"],
        verify_tls=imap.get("verify_tls", True),
    )
    context.service().configure(params["account"], settings, params["password"])
    return {"account": params["account"]}


def list_accounts(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"accounts": context.service().accounts()}


def remove(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    context.service().remove(params["account"])
    return {"account": params["account"]}


METHODS = [
    Method("account.configure", configure),
    Method("account.list", list_accounts, parameterless=True),
    Method("account.remove", remove),
]
