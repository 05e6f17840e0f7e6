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
from pathlib import Path

import pytest

from tests.e2e.oauth2_rig import console_messages, profile_dir, seed_oauth2_account
from tests.e2e.options_page import join_as_first_device, use_thunderbird_account
from tests.e2e.thunderbird import Thunderbird
from tests.host.test_oauth2_imap import assert_no_token_anywhere
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider

# The host logs at DEBUG: the token scan reads all it could ever write.
pytestmark = pytest.mark.usefixtures("host_logs_everything")
LIFETIME = (
    50  # s: the host asks again 25 s in; Thunderbird treats it as expired 30 s before the end
)


def test_oauth2_account_from_thunderbird_joins_and_keeps_its_token_fresh(
    tmp_path: Path,
    provider: OAuth2Provider,
    oauth_dovecot: DovecotServer,
    host_thunderbird: Thunderbird,
) -> None:
    tb, dovecot = host_thunderbird, oauth_dovecot
    provider.lifetime = LIFETIME
    address = seed_oauth2_account(tb, provider, dovecot).address
    tb.install_addon()

    _text, asked = use_thunderbird_account(tb)
    granted_by = time.monotonic()  # every token the provider granted so far is dead LIFETIME on
    assert asked is False, "an OAuth2 account asks nothing (no consent, no password)"
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
    # Until the earlier tokens are dead: only the refreshed one works then.
    time.sleep(max(0.0, granted_by + LIFETIME + 1 - time.monotonic()))
    tb.call_host("sync", {"account": address}, timeout=60)
    overview = tb.send({"type": "overview"})
    [state] = [a["sync"] for a in overview["accounts"] if a["account"] == address]
    assert state.get("waiting") is None, state
    assert state["online"] is True, state

    # Every token of the run (several: the refresh went through Thunderbird) in no log (host
    # stderr and the add-on's console are in Thunderbird's console), no file (HOME, profile),
    # not the keyring.
    gecko_log = (tmp_path / "gecko.log").read_text(errors="replace")
    console = "\n".join(console_messages(tb))
    assert "stderr output from native app" in console, "the host's stderr is not read"
    scanned = assert_no_token_anywhere(provider, [tmp_path, profile_dir(tb)], [gecko_log, console])
    assert scanned["files"] > 0
