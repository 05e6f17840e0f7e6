"""How an ImapStore authenticates: one small strategy per kind of credential (password or token).

The store calls `prepare()` before it opens a connection and `login(client, username)` once the
connection is up. A token strategy fetches its token in `prepare()`, so an account waiting for
Thunderbird to hand one over never touches the server (no needless connections while it waits).

SASL mechanism by CAPABILITY (read before login, after STARTTLS): OAUTHBEARER (RFC 7628) where
the server offers it, else XOAUTH2 (Google's and Microsoft's); neither is `ImapLoginError`. A
token the server refuses is reported to its source, and a token that was not fresh (reused from
an earlier login) is replaced once on the same connection before giving up: a command source
runs its command again, so an expired token costs one extra AUTHENTICATE and no user action.
Messages never hold the token: `scrub` removes it (and the password) from anything raised.
"""

from __future__ import annotations

import imaplib
from typing import Any, Protocol

from native_host.ports import AccessToken, StoreAuthError, TokenSource

OAUTHBEARER = b"AUTH=OAUTHBEARER"
XOAUTH2 = b"AUTH=XOAUTH2"
_MIN_SCRUB = 3  # shorter secrets would turn every message into asterisks


class ImapLoginError(StoreAuthError):
    """The server refused the credentials (retrying with the same ones will not help)."""


class ImapLogin(Protocol):
    def prepare(self) -> None:
        """Called before connecting; may raise StoreAuthError (no credential to log in with)."""

    def login(self, client: Any, username: str, where: str) -> None:
        """Authenticate `client` (an IMAPClient); raise ImapLoginError when refused."""

    def scrub(self, text: str) -> str:
        """`text` without any secret this strategy holds."""


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, "***")
    return text


class PasswordLogin:
    """IMAP LOGIN with the account's password (from the OS keyring)."""

    def __init__(self, password: str) -> None:
        self._password = password

    def prepare(self) -> None:
        return None

    def login(self, client: Any, username: str, where: str) -> None:
        try:
            client.login(username, self._password)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise ImapLoginError(
                self.scrub(f"login to {where} as {username!r} refused: {exc}")
            ) from None

    def scrub(self, text: str) -> str:
        return _scrubbed(text, [self._password])


def capabilities_of(client: Any) -> frozenset[bytes]:
    """The client's CAPABILITY list, upper case (before login: what it offers to log in)."""
    return frozenset(
        (cap if isinstance(cap, bytes) else str(cap).encode()).upper()
        for cap in client.capabilities()
    )


def sasl_mechanism(capabilities: frozenset[bytes]) -> str | None:
    """The OAuth2 SASL mechanism to use with a server offering `capabilities` (upper case)."""
    if OAUTHBEARER in capabilities:
        return "OAUTHBEARER"
    if XOAUTH2 in capabilities:
        return "XOAUTH2"
    return None


class TokenLogin:
    """SASL OAUTHBEARER or XOAUTH2 with an access token from a TokenSource."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source
        self._token: AccessToken | None = None
        self._seen: list[str] = []  # every token this strategy handled, for scrubbing

    def prepare(self) -> None:
        self._token = self._next()

    def _next(self) -> AccessToken:
        token = self.source.token()  # raises StoreAuthError while none can be had
        self._seen = [*self._seen[-3:], token.value]
        return token

    def login(self, client: Any, username: str, where: str) -> None:
        mechanism = sasl_mechanism(capabilities_of(client))
        if mechanism is None:
            raise ImapLoginError(
                f"{where} offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2: "
                "it does not accept OAuth2 tokens for IMAP"
            )
        token = self._token or self._next()
        self._token = None  # one use: the next connection asks the source again
        for attempt in (1, 2):
            try:
                if mechanism == "OAUTHBEARER":
                    client.oauthbearer_login(username, token.value)
                else:
                    client.oauth2_login(username, token.value)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                words = self.scrub(str(exc))[:200]
                refused = self.source.rejected(token, f"{mechanism} at {where}: {words}")
                if attempt == 1 and not token.fresh:
                    token = self._next()  # raises the source's waiting error if it has none
                    continue
                raise refused from None
            self.source.accepted(token)
            return

    def scrub(self, text: str) -> str:
        return _scrubbed(text, self._seen)


class MechanismProbed(StoreAuthError):
    """Raised by MechanismProbe once it has looked (the connection is then closed)."""


class MechanismProbe:
    """Logs in to nothing: reads which OAuth2 mechanism the server offers, then ends the session
    (`autocrypt-sma doctor`, for accounts whose tokens only Thunderbird can supply)."""

    def __init__(self) -> None:
        self.mechanism: str | None = None

    def prepare(self) -> None:
        return None

    def login(self, client: Any, username: str, where: str) -> None:
        self.mechanism = sasl_mechanism(capabilities_of(client))
        raise MechanismProbed(f"{where} offers {self.mechanism or 'no OAuth2 mechanism'}")

    def scrub(self, text: str) -> str:
        return text
