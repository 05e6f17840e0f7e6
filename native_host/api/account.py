"""account.configure, account.list, account.remove, account.token: IMAP settings and how the
account logs in (password in the keyring, or OAuth2 tokens in memory)."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method
from native_host.session import Context


def configure(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    from native_host.service.accounts import AuthSettings, ImapSettings

    imap = params["imap"]
    settings = ImapSettings(
        host=imap["host"],
        port=imap["port"],
        security=imap["security"],
        username=imap["username"],
        verify_tls=imap.get("verify_tls", True),
    )
    oauth2 = params.get("oauth2")
    if oauth2 is None:
        context.service().configure(params["account"], settings, params["password"])
    elif oauth2["source"] == "thunderbird":
        context.service().configure(
            params["account"],
            settings,
            auth=AuthSettings("oauth2-thunderbird"),
            token=oauth2["token"],
        )
    else:
        context.service().configure(
            params["account"],
            settings,
            auth=AuthSettings("oauth2-command", tuple(oauth2["command"])),
        )
    return {"account": params["account"]}


def token(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    context.service().token(params["account"], params["token"], params.get("expires_in"))
    return {}


def list_accounts(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"accounts": context.service().accounts()}


def remove(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    context.service().remove(params["account"])
    return {"account": params["account"]}


METHODS = [
    Method("account.configure", configure),
    Method("account.list", list_accounts, parameterless=True),
    Method("account.remove", remove),
    Method("account.token", token, inline=True),  # cheap, and a waiting login needs it now
]
