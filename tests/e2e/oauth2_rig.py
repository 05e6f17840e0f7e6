"""The Thunderbird side of the OAuth2 test rig: the loopback provider registered in a headless
Thunderbird, an IMAP account on the OAuth2 Dovecot, a refresh token where Thunderbird looks for
it, and what a test reads back out of Thunderbird (its own IMAP login, its console, its sign-in
windows, its profile).

Checked against Thunderbird 153's own modules (omni.ja): `OAuth2Providers.registerProvider
(details, hostnames, scopes)` keeps a provider for this session only, `OAuth2Module` looks the
refresh token up in the login manager under origin `oauth://<issuer>`, realm = the scopes, the
server's user name; a provider registered without `useExternalBrowser` signs in in Thunderbird's
own window (`browserRequest.xhtml`), which is what a revoked refresh token opens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.thunderbird import Thunderbird
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider

ISSUER = "sma-e2e-issuer"
SCOPE = "mail"
SIGN_IN_WINDOW = (
    "chrome://messenger/content/browserRequest.xhtml"  # OAuth2.sys.mjs requestWindowURI
)


@dataclass(frozen=True)
class OAuth2Account:
    user: str
    address: str
    refresh_token: str


def seed_oauth2_account(
    tb: Thunderbird, provider: OAuth2Provider, dovecot: DovecotServer
) -> OAuth2Account:
    """A new Dovecot user that Thunderbird signs in with OAuth2 at `provider`, with nothing left
    for a person to do: the provider registered for the server's host name, a refresh token
    seeded, the IMAP account created (it fetches no mail by itself)."""
    user, _password = dovecot.new_account()
    refresh = provider.add_user(user)
    tb.add_oauth2_provider(
        issuer=ISSUER, hostnames=[dovecot.host], token_url=provider.token_url, scope=SCOPE
    )
    tb.save_refresh_token(issuer=ISSUER, user=user, scope=SCOPE, token=refresh)
    address = f"{user}@example.org"
    tb.add_imap_account(
        user=user,
        password=None,
        address=address,
        host=dovecot.host,
        port=dovecot.port,
        check_mail=False,
        oauth2=True,
    )
    return OAuth2Account(user=user, address=address, refresh_token=refresh)


def verify_logon(tb: Thunderbird, host: str, user: str, timeout: float = 60.0) -> int:
    """Thunderbird's own IMAP login for this server (what the account wizard's check does):
    the nsresult it ends with, 0 when the server took the login."""
    tb.client.timeout.script = timeout
    result: int = tb.client.execute_async_script(
        """
        const [host, user, resolve] = arguments;
        const { MailServices } = ChromeUtils.importESModule(
          "resource:///modules/MailServices.sys.mjs");
        const server = MailServices.accounts.findServer(user, host, "imap");
        server.verifyLogon({
          QueryInterface: ChromeUtils.generateQI(["nsIUrlListener"]),
          OnStartRunningUrl() {},
          OnStopRunningUrl(url, status) { resolve(status); },
        }, null);
        """,
        script_args=[host, user],
    )
    return result


def console_messages(tb: Thunderbird) -> list[str]:
    """Everything in Thunderbird's browser console: the console service (Thunderbird's own
    warnings and errors, every stderr line of the native host) and the console API's store
    (`console.*` of the add-on's pages and of Thunderbird's modules)."""
    messages: list[str] = tb.client.execute_script(
        """
        const out = Services.console.getMessageArray().map(m => m.message ?? String(m));
        const storage = Cc["@mozilla.org/consoleAPI-storage;1"]
          .getService(Ci.nsIConsoleAPIStorage);
        for (const event of storage.getEvents()) {
          out.push((event.arguments ?? []).map(a => {
            try { return typeof a === "string" ? a : JSON.stringify(a) ?? String(a); }
            catch { return String(a); }
          }).join(" "));
        }
        return out;
        """
    )
    return messages


def host_stderr(messages: list[str]) -> list[str]:
    """The native host's stderr lines, as Gecko's NativeMessaging.sys.mjs logs them."""
    prefix = "stderr output from native app org.autocrypt.sma: "
    return [m[len(prefix) :] for m in messages if m.startswith(prefix)]


def sign_in_windows(tb: Thunderbird) -> list[str]:
    """The page each open OAuth2 sign-in window of Thunderbird shows (its authorization URL)."""
    urls: list[str] = tb.client.execute_script(
        """
        const found = [];
        for (const win of Services.wm.getEnumerator(null)) {
          if (win.location.href !== arguments[0]) continue;
          found.push(win.arguments?.[0]?.wrappedJSObject?.url ?? win.location.href);
        }
        return found;
        """,
        script_args=[SIGN_IN_WINDOW],
    )
    return urls


def close_sign_in_windows(tb: Thunderbird) -> int:
    """Close the sign-in windows as a person who gives up does (Escape or the close button: the
    window's own cancelRequest, which tells the request; a bare close() would not); how many."""
    closed: int = tb.client.execute_script(
        """
        let n = 0;
        for (const win of [...Services.wm.getEnumerator(null)]) {
          if (win.location.href === arguments[0]) { win.cancelRequest(); n++; }
        }
        return n;
        """,
        script_args=[SIGN_IN_WINDOW],
    )
    return closed


def profile_dir(tb: Thunderbird) -> Path:
    """The profile this Thunderbird runs on (Marionette makes it in the system's temp dir)."""
    path: str = tb.client.execute_script('return Services.dirsvc.get("ProfD", Ci.nsIFile).path;')
    return Path(path)


def wait_for(what: str, probe: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll `probe()` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s still no {what} (last: {value!r})")
        time.sleep(interval)
