"""Methods about the host itself: ping and hello."""

from __future__ import annotations

from typing import Any

from native_host import PROTOCOL_VERSION, __version__
from native_host.api.dispatch import Method
from native_host.session import Context
from native_host.threads import start_daemon


def ping(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"host_version": __version__, "protocol_version": PROTOCOL_VERSION}


def hello(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    # The host loop has bound the connection to params["instance"] before calling this.
    # The add-on is here: resume background sync (and push) for this instance's accounts, off the
    # reader thread, so the answer does not wait for the service layer to load.
    start_daemon(lambda: context.service().start_background(), "resume")
    return {"instance": context.instance, **ping(context, params)}


METHODS = [
    Method("ping", ping, inline=True, parameterless=True),
    Method("hello", hello, inline=True),
]
