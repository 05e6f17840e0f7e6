"""OAuth2 end to end with a real headless Thunderbird (issue 18): Dovecot with an oauth2 passdb
that checks every token at a small OAuth2 provider on loopback; that provider registered in
Thunderbird as a custom provider (Thunderbird 140 and later) with a refresh token seeded in its
login manager, so no sign-in window is needed. "Use with Autocrypt SMA" on the options page sets
the account up with Thunderbird's token (nothing typed, no consent: nothing is stored outside
Thunderbird), it joins, the host logs in with Thunderbird's token; a token that expires mid-run is
replaced through Thunderbird without the user; no token is in any file, log or the keyring.

Needs the host side of issue 18 (SASL, account.token, tests/servers/oauth2_provider.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.options_page import join_as_first_device, page
from tests.e2e.thunderbird import Thunderbird
from tests.host.test_oauth2_imap import assert_no_token_anywhere
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider

ISSUER = "sma-e2e-issuer"
SCOPE = "mail"
LIFETIME = 50  # s: the host asks again 25 s in; Thunderbird treats it as expired 30 s before the end


@pytest.fixture
def provider() -> Iterator[OAuth2Provider]:
    with OAuth2Provider() as running:
        yield running


@pytest.fixture
def oauth_dovecot(provider: OAuth2Provider) -> Iterator[DovecotServer]:
    with DovecotServer(oauth2_introspection=provider.introspection_url) as server:
        yield server


def test_oauth2_account_from_thunderbird_joins_and_keeps_its_token_fresh(
    tmp_path: Path,
    provider: OAuth2Provider,
    oauth_dovecot: DovecotServer,
    host_thunderbird: Thunderbird,
) -> None:
    tb, dovecot = host_thunderbird, oauth_dovecot
    user, _password = dovecot.new_account()
    address = f"{user}@example.org"
    provider.lifetime = LIFETIME
    refresh = provider.add_user(user)
    tb.add_oauth2_provider(
        issuer=ISSUER, hostnames=[dovecot.host], token_url=provider.token_url, scope=SCOPE
    )
    tb.save_refresh_token(issuer=ISSUER, user=user, scope=SCOPE, token=refresh)
    tb.add_imap_account(
        user=user, password=None, address=address, host=dovecot.host, port=dovecot.port,
        check_mail=False, oauth2=True,
    )
    tb.install_addon()

    use = '#tb-accounts li[data-state="new"] button.use'
    page(
        tb,
        f"""
        if (doc.getElementById("status").dataset.state !== "connected") return null;
        const button = doc.querySelector('{use}');
        if (!button || button.disabled) return null;
        button.click(); return true;""",
        60,
    )
    done = page(
        tb,
        """
        const r = doc.getElementById("tb-result");
        if (r.className === "error") return ["error", r.textContent];
        if (r.className !== "ok" || doc.getElementById("join-section").hidden) return null;
        return ["ok", r.textContent, Boolean(doc.querySelector("#tb-accounts .step"))];""",
        60,
    )
    assert done[0] == "ok", f"one-click OAuth2 set-up: {done[1]}"
    assert done[2] is False, "an OAuth2 account asks nothing (no consent, no password)"
    [entry] = tb.call_host("account.list", {})["accounts"]
    assert entry["account"] == address
    assert entry["auth"] == "oauth2-thunderbird"
    grants_after_setup = provider.requests["/token"]
    assert grants_after_setup >= 1, "Thunderbird did not refresh its token at the provider"

    join_as_first_device(tb)
    # The server checked Thunderbird's tokens at the provider, and took them.
    assert any(active for _token, active in provider.introspected), provider.introspected

    # The token expires mid-run: the host asks, Thunderbird refreshes it, the user sees nothing.
    deadline = time.monotonic() + LIFETIME + 30
    while provider.requests["/token"] <= grants_after_setup and time.monotonic() < deadline:
        time.sleep(1)
    assert provider.requests["/token"] > grants_after_setup, "no refresh through Thunderbird"
    time.sleep(LIFETIME)  # the first token is dead by now: only the refreshed one works
    tb.call_host("sync", {"account": address}, timeout=60)
    overview = tb.send({"type": "overview"})
    [state] = [a["sync"] for a in overview["accounts"] if a["account"] == address]
    assert state.get("waiting") is None, state
    assert state["online"] is True, state

    gecko_log = (tmp_path / "gecko.log").read_text(errors="replace")
    scanned = assert_no_token_anywhere(provider, [tmp_path], [gecko_log])
    assert scanned["files"] > 0
