"""OAuth2 sign-in in a real headless Thunderbird (issue 18), the parts the one-click test leaves
out: the rig itself (Thunderbird, not the add-on, logs in to the OAuth2 Dovecot with a token it
got by refreshing the seeded refresh token), and a refresh token revoked at the provider: the
account waits for Thunderbird's sign-in, says so in the popup, a closed sign-in window does not
come back by itself (only from "Sign in again"), and no access token is in any log, file or the
keyring.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.oauth2_rig import (
    close_sign_in_windows,
    console_messages,
    host_stderr,
    profile_dir,
    seed_oauth2_account,
    sign_in_windows,
    verify_logon,
    wait_for,
)
from tests.e2e.options_page import join_as_first_device, use_thunderbird_account
from tests.e2e.thunderbird import Thunderbird
from tests.host.test_oauth2_imap import assert_no_token_anywhere
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider

# The host that Thunderbird starts logs at DEBUG: the token scan reads all it could ever write.
pytestmark = pytest.mark.usefixtures("host_logs_everything")

# Longer than the host's interval between two token_needed events (30 s): it asked again in it.
NO_WINDOW_FOR_S = 40
HELD = "not asking Thunderbird to sign in again for"


def test_thunderbird_logs_in_to_imap_with_a_token_it_got_by_refreshing(
    provider: OAuth2Provider, oauth_dovecot: DovecotServer, host_thunderbird: Thunderbird
) -> None:
    tb = host_thunderbird
    account = seed_oauth2_account(tb, provider, oauth_dovecot)
    assert provider.requests["/token"] == 0

    status = verify_logon(tb, oauth_dovecot.host, account.user)

    assert status == 0, f"Thunderbird's IMAP login failed: nsresult {status:#x}"
    # One refresh grant, no window: the seeded refresh token was found where Thunderbird looks.
    assert provider.requests["/token"] == 1, provider.requests
    access = [t for t in provider.issued if t.startswith("at-")]
    assert len(access) == 1, "Thunderbird got exactly one access token"
    # Dovecot checked that very token at the provider and took it.
    assert (access[0], True) in provider.introspected, provider.introspected
    log = oauth_dovecot.log_path.read_text(errors="replace")
    logins = re.findall(rf"Login: user=<{re.escape(account.user)}>, method=(\S+?),", log)
    assert logins, log[-2000:]
    assert set(logins) <= {"XOAUTH2", "OAUTHBEARER"}, logins


def account_sync(tb: Thunderbird, address: str) -> dict[str, Any]:
    """The background's sync state of the account (what the popup renders)."""
    overview = tb.send({"type": "overview"})
    [state] = [a["sync"] for a in overview["accounts"] if a["account"] == address]
    return dict(state)


def popup_text(tb: Thunderbird, *wanted: str, timeout: float = 60.0) -> str:
    """The popup's text once it shows every one of `wanted`."""
    text: str = tb.read_page(
        tb.addon_page("popup/popup.html"),
        f"""
        const text = doc.body.innerText;
        return {json.dumps(list(wanted))}.every(w => text.includes(w)) ? text : null;""",
        timeout,
    )
    return text


def test_a_revoked_refresh_token_leaves_the_account_waiting_with_a_clear_message(
    tmp_path: Path,
    provider: OAuth2Provider,
    oauth_dovecot: DovecotServer,
    host_thunderbird: Thunderbird,
) -> None:
    tb = host_thunderbird
    account = seed_oauth2_account(tb, provider, oauth_dovecot)
    tb.install_addon()
    use_thunderbird_account(tb)
    join_as_first_device(tb)
    wait_for("sync online", lambda: account_sync(tb, account.address).get("online"), 60)
    # The host logged in with Thunderbird's token: the server asked the provider and took it.
    access = [t for t in provider.issued if t.startswith("at-")]
    assert access, "Thunderbird got no access token"
    assert {t for t, active in provider.introspected if active} <= set(access)
    assert any(active for _t, active in provider.introspected)

    # The user revoked Thunderbird's access at the provider (its access tokens die with it), and
    # the server ends the host's sessions: the host must log in again, and the token is refused.
    grants = provider.requests["/token"]
    provider.revoke(account.refresh_token)
    oauth_dovecot.kick(account.user)

    # Thunderbird's refresh is refused (invalid_grant) and it opens its own sign-in window at
    # the provider, for this user; the host waits for it instead of failing in a loop.
    [window] = wait_for("Thunderbird sign-in window", lambda: sign_in_windows(tb), 90)
    assert window.startswith(provider.url + "/authorize?"), window
    assert f"login_hint={account.user}" in window, window
    state = wait_for(
        "waiting for a token",
        lambda: (s := account_sync(tb, account.address)).get("waiting") == "token" and s,
        60,
    )
    assert state["online"] is False, state
    assert popup_text(tb, "Waiting for Thunderbird to sign in")
    assert provider.requests["/token"] == grants + 1, "one refused refresh, no retry loop"

    # The user closes the window: the popup says why there is no token, and still waits.
    assert close_sign_in_windows(tb) == 1
    text = popup_text(tb, "Waiting for Thunderbird to sign in", "Thunderbird gave no sign-in token")
    assert f"could not sign in to {oauth_dovecot.host} with OAuth2" in text, text
    assert "Sign in again" in text, text
    assert account_sync(tb, account.address).get("waiting") == "token"

    # The host keeps asking (every 30 s); the add-on does not ask Thunderbird, so no new window.
    deadline = time.monotonic() + NO_WINDOW_FOR_S
    while time.monotonic() < deadline:
        assert sign_in_windows(tb) == [], "a sign-in window came back without the user"
        time.sleep(1)
    assert any(HELD in m for m in console_messages(tb)), "the host asked no second time"
    assert provider.requests["/token"] == grants + 1

    # "Sign in again" in the popup: Thunderbird's window once more, for the same user.
    tb.read_page(
        tb.addon_page("popup/popup.html"),
        """const b = doc.querySelector('[data-action="sign-in-again"]:not([hidden])');
        if (!b) return null;
        b.click();
        return true;""",
    )
    [again] = wait_for("a second sign-in window", lambda: sign_in_windows(tb), 30)
    assert f"login_hint={account.user}" in again, again
    assert close_sign_in_windows(tb) == 1
    assert "Sign in again" in popup_text(tb, "Thunderbird gave no sign-in token", "Sign in again")

    # No token anywhere: host stderr, Thunderbird's console and output, the SMA home (HOME), the
    # profile (its encrypted login store holds the refresh token unreadably), the keyring.
    messages = console_messages(tb)
    stderr = host_stderr(messages)
    assert any("connecting to IMAP server" in line for line in stderr), stderr[-20:]
    assert any("refused a token from Thunderbird" in line for line in stderr), stderr[-20:]
    assert any("no OAuth2 token for" in m for m in messages), "the add-on's console is not read"
    gecko_log = (tmp_path / "gecko.log").read_text(errors="replace")
    scanned = assert_no_token_anywhere(
        provider, [tmp_path, profile_dir(tb)], [gecko_log, "\n".join(messages)]
    )
    print(f"scanned {scanned}, {len(provider.issued)} tokens issued, {len(stderr)} host lines")
    assert scanned["keyring_items"] > 0, "the scan saw no keyring item (the account key is one)"
