"""OAuth2 sign-in in a real headless Thunderbird (issue 18), the parts the one-click test leaves
out: the rig itself (Thunderbird, not the add-on, logs in to the OAuth2 Dovecot with a token it
got by refreshing the seeded refresh token), and a refresh token revoked at the provider: the
account waits for Thunderbird's sign-in, says so in the popup, and no access token is in any log,
file or the keyring.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.oauth2_rig import seed_oauth2_account, verify_logon
from tests.e2e.thunderbird import Thunderbird
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider


@pytest.fixture(autouse=True)
def host_logs_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host that Thunderbird starts logs at DEBUG (Thunderbird passes its environment on):
    the token scan then reads everything the host could ever write."""
    monkeypatch.setenv("SMA_LOG_LEVEL", "DEBUG")


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
