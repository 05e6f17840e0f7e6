"""OAuth2 access tokens handed over by Thunderbird: kept in memory only, asked for by event.

The host cannot sign in itself: Thunderbird holds the refresh token and shows its own sign-in
window. So when the host needs a token (at connect with none, after the server refused one, or
shortly before the expiry Thunderbird told it) it emits `account.token_needed` and waits; the
add-on answers with `account.token`. At most one request is outstanding per account, repeated no
more often than every REQUEST_INTERVAL while the host still waits, so a Thunderbird that cannot
sign in (or keeps handing over a revoked token) never drives a tight loop of logins.

Errors: `TokenWaiting` while there is no token (the account shows "waiting for Thunderbird to
sign in", not an error); `TokenRefused`, a TokenWaiting with the error code auth_failed, once the
server refused two tokens in a row, the second one fresh after a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from native_host.errors import ErrorCode
from native_host.ports import AccessToken, Clock, StoreAuthError

log = logging.getLogger(__name__)

Reason = Literal["connect", "rejected", "expiring"]
Emit = Callable[[str, dict[str, Any]], None]

REQUEST_INTERVAL = 30.0  # a repeated account.token_needed while still waiting, at most this often
EXPIRY_MARGIN = 60.0  # ask for a new token this long before the old one expires...
EXPIRY_SHARE = 0.5  # ...or, for a short-lived one, when this share of its lifetime is left
REFUSED_TIMES = 2  # refusals in a row (the second of a fresh token) that make it auth_failed
REFUSED_MESSAGE = (
    "the server refused the OAuth2 token from Thunderbird; sign in again in Thunderbird "
    "(Account Settings \u2192 Server Settings)"
)
WAITING_MESSAGE = "waiting for Thunderbird to sign in"


class TokenWaiting(StoreAuthError):
    """No token to log in with yet: the account waits for one (not an error loop)."""

    code: ErrorCode | None = None


class TokenRefused(TokenWaiting):
    """The server refused the tokens Thunderbird gave: the user must sign in again there."""

    code = ErrorCode.AUTH_FAILED


def expiry_lead(lifetime: float) -> float:
    """Seconds before expiry at which a token of `lifetime` seconds is renewed."""
    return min(EXPIRY_MARGIN, lifetime * EXPIRY_SHARE)


class ThunderbirdTokens:
    """The TokenSource of an account whose tokens come from the add-on (`account.token`)."""

    def __init__(
        self,
        account: str,
        emit: Emit,
        clock: Clock,
        *,
        on_token: Callable[[], None] = lambda: None,
        schedule: Callable[[float, Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        """`on_token` runs after a token arrived (the runtime retries its login at once);
        `schedule(delay, action)` runs `action` after `delay` seconds and returns a cancel
        function (a threading.Timer by default; tests pass their own)."""
        self.account = account
        self.emit = emit  # replaceable: quiet while account.configure checks the first token
        self._clock = clock
        self.on_token = on_token
        self._schedule = schedule or _timer
        self._lock = threading.Lock()
        self._value: str | None = None
        self._fresh = False
        self._expires_at: float | None = None
        self._asked_at: float | None = None  # the outstanding request, if any
        self._last_asked: float | None = None  # the last request, answered or not
        self._refused = 0  # refusals in a row
        self._cancel_renewal: Callable[[], None] = lambda: None
        self.requests = 0  # account.token_needed events emitted (tests count them)

    # --- the add-on's side -----------------------------------------------------------------
    def supply(self, value: str, expires_in: int | None = None) -> None:
        """A token from Thunderbird (account.token, or account.configure)."""
        with self._lock:
            self._value, self._fresh, self._asked_at = value, True, None
            self._cancel_renewal()
            self._cancel_renewal = lambda: None
            self._expires_at = None
            if expires_in is not None:
                now = self._clock()
                self._expires_at = now + expires_in
                lead = expiry_lead(float(expires_in))
                self._cancel_renewal = self._schedule(expires_in - lead, self._renew)
        self.on_token()

    def _renew(self) -> None:
        with self._lock:
            if self._value is not None:
                self._request("expiring", self._clock())

    # --- the TokenSource port --------------------------------------------------------------
    def token(self) -> AccessToken:
        with self._lock:
            now = self._clock()
            if self._value is not None and (self._expires_at is None or now < self._expires_at):
                token = AccessToken(self._value, self._fresh)
                self._fresh = False
                return token
            expired = self._value is not None
            self._value = None
            self._request("expiring" if expired else "connect", now)
            raise self._waiting()

    def rejected(self, token: AccessToken, detail: str) -> StoreAuthError:
        with self._lock:
            if self._value == token.value:
                self._value = None
            self._refused += 1
            log.info("%s: the server refused a token from Thunderbird", self.account)
            self._request("rejected", self._clock())
            return self._waiting()

    def accepted(self, token: AccessToken) -> None:
        with self._lock:
            self._refused = 0

    def close(self) -> None:
        """Forget the token and any renewal timer (the account was removed or reconfigured)."""
        with self._lock:
            self._value = None
            self._cancel_renewal()

    # --- inside ----------------------------------------------------------------------------
    @property
    def waiting(self) -> bool:
        return self._asked_at is not None

    def _waiting(self) -> TokenWaiting:
        if self._refused >= REFUSED_TIMES:
            return TokenRefused(REFUSED_MESSAGE)
        return TokenWaiting(WAITING_MESSAGE)

    def _request(self, reason: Reason, now: float) -> None:
        """Emit account.token_needed unless a request is outstanding and younger than
        REQUEST_INTERVAL, or, once the server refused the tokens (REFUSED_TIMES), the last
        request, answered or not, is that young: a Thunderbird answering at once with tokens
        the server refuses would otherwise drive a login per answer (called with the lock held)."""
        last = self._asked_at if self._refused < REFUSED_TIMES else self._last_asked
        if last is not None and now - last < REQUEST_INTERVAL:
            return
        self._asked_at = self._last_asked = now
        self.requests += 1
        self.emit("account.token_needed", {"account": self.account, "reason": reason})


def _timer(delay: float, action: Callable[[], None]) -> Callable[[], None]:
    timer = threading.Timer(max(0.0, delay), action)
    timer.daemon = True
    timer.start()
    return timer.cancel
