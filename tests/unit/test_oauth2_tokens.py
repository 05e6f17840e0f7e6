"""Token sources and the OAuth2 login strategy, without a server (tests/host/test_oauth2_imap.py
runs them on a real Dovecot)."""

from __future__ import annotations

import imaplib
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from native_host.adapters.imap_login import ImapLoginError, TokenLogin, sasl_mechanism
from native_host.ports import AccessToken
from native_host.service.token_command import (
    STDOUT_LIMIT,
    CommandTokens,
    TokenCommandError,
    run_token_command,
    scrub_stderr,
)
from native_host.service.tokens import (
    REFUSED_MESSAGE,
    REQUEST_INTERVAL,
    ThunderbirdTokens,
    TokenRefused,
    TokenWaiting,
    expiry_lead,
)

ACCOUNT = "alice@example.org"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """A schedule() that records what the source wants to run, run by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, action: Callable[[], None]) -> Callable[[], None]:
        entry = (delay, action)
        self.pending.append(entry)
        return lambda: self.pending.remove(entry) if entry in self.pending else None


def thunderbird() -> tuple[ThunderbirdTokens, list[dict[str, Any]], Clock, Timers]:
    emitted: list[dict[str, Any]] = []
    clock, timers = Clock(), Timers()
    source = ThunderbirdTokens(
        ACCOUNT, lambda name, data: emitted.append(data), clock, schedule=timers
    )
    return source, emitted, clock, timers


def test_without_a_token_the_source_asks_once_and_repeats_only_after_the_interval() -> None:
    source, emitted, clock, _ = thunderbird()
    for _ in range(5):
        with pytest.raises(TokenWaiting) as waiting:
            source.token()
        assert not isinstance(waiting.value, TokenRefused)
    assert emitted == [{"account": ACCOUNT, "reason": "connect"}]
    clock.now += REQUEST_INTERVAL
    with pytest.raises(TokenWaiting):
        source.token()
    assert len(emitted) == 2
    source.supply("at-1")
    token = source.token()
    assert (token.value, token.fresh) == ("at-1", True)
    assert source.token().fresh is False  # handed out once: a refusal now may be expiry


def test_two_refusals_in_a_row_give_auth_failed_and_slow_the_requests_down() -> None:
    source, emitted, clock, _ = thunderbird()
    source.supply("at-1")
    first = source.rejected(source.token(), "NO")
    assert type(first) is TokenWaiting
    assert emitted[-1]["reason"] == "rejected"
    source.supply("at-2")  # Thunderbird answers at once...
    second = source.rejected(source.token(), "NO")
    assert isinstance(second, TokenRefused)
    assert second.code is not None
    assert second.code.value == "auth_failed"
    assert str(second) == REFUSED_MESSAGE
    asked = len(emitted)
    for _ in range(10):  # ...with more refused tokens: no request per answer
        source.supply("at-x")
        source.rejected(source.token(), "NO")
    assert len(emitted) == asked
    clock.now += REQUEST_INTERVAL
    source.supply("at-y")
    source.rejected(source.token(), "NO")
    assert len(emitted) == asked + 1
    source.supply("at-good")
    source.accepted(source.token())
    source.supply("at-later")
    assert type(source.rejected(source.token(), "NO")) is TokenWaiting  # counting anew


def test_a_token_with_an_expiry_is_renewed_before_it_and_not_used_after_it() -> None:
    source, emitted, clock, timers = thunderbird()
    source.supply("at-1", expires_in=3600)
    [(delay, renew)] = timers.pending
    assert delay == 3600 - expiry_lead(3600) == 3540
    renew()
    assert emitted == [{"account": ACCOUNT, "reason": "expiring"}]
    assert source.token().value == "at-1"  # still valid until the answer comes
    clock.now += 3600
    with pytest.raises(TokenWaiting):
        source.token()
    source.supply("at-2", expires_in=10)
    assert [d for d, _ in timers.pending] == [5.0]  # short-lived: renewed at half its life
    assert expiry_lead(10) == 5.0


def test_a_refused_token_is_replaced_once_when_it_was_reused() -> None:
    calls: list[tuple[str, str]] = []

    class Client:
        def __init__(self, refuse: set[str]) -> None:
            self.refuse = refuse

        def capabilities(self) -> tuple[bytes, ...]:
            return (b"IMAP4rev1", b"AUTH=XOAUTH2", b"AUTH=PLAIN")

        def oauth2_login(self, user: str, token: str) -> None:
            calls.append(("XOAUTH2", token))
            if token in self.refuse:
                raise imaplib.IMAP4.error(f"[AUTHENTICATIONFAILED] {token} refused")

    class Source:
        def __init__(self) -> None:
            self.tokens = [AccessToken("at-old-token", fresh=False), AccessToken("at-new-token")]

        def token(self) -> AccessToken:
            return self.tokens.pop(0)

        def rejected(self, token: AccessToken, detail: str) -> TokenCommandError:
            assert token.value not in detail  # scrubbed before the source sees it
            return TokenCommandError(detail)

        def accepted(self, token: AccessToken) -> None:
            calls.append(("accepted", token.value))

    login = TokenLogin(Source())
    login.prepare()
    login.login(Client({"at-old-token"}), "alice", "imap:143")
    assert calls == [
        ("XOAUTH2", "at-old-token"),
        ("XOAUTH2", "at-new-token"),
        ("accepted", "at-new-token"),
    ]
    fresh = TokenLogin(Source())
    fresh.source.tokens = [AccessToken("at-fresh-token")]  # type: ignore[attr-defined]
    with pytest.raises(TokenCommandError) as refused:
        fresh.login(Client({"at-fresh-token"}), "alice", "imap:143")
    assert "at-fresh-token" not in str(refused.value)
    assert "***" in str(refused.value)


def test_sasl_mechanism_prefers_oauthbearer_and_needs_one() -> None:
    assert sasl_mechanism(frozenset({b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER"})) == "OAUTHBEARER"
    assert sasl_mechanism(frozenset({b"AUTH=XOAUTH2"})) == "XOAUTH2"
    assert sasl_mechanism(frozenset({b"AUTH=PLAIN"})) is None

    class Plain:
        def capabilities(self) -> tuple[bytes, ...]:
            return (b"AUTH=PLAIN",)

    class Never:
        def token(self) -> AccessToken:
            raise AssertionError("no token is asked for when the server takes none")

    with pytest.raises(ImapLoginError, match="neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2"):
        TokenLogin(Never()).login(Plain(), "alice", "imap:143")  # type: ignore[arg-type]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_token_command_takes_the_first_line_of_its_output() -> None:
    assert run_token_command(python("print('at-123'); print('ignored')")) == "at-123"
    assert run_token_command(python("import os; print(os.getcwd() and 'at-1')")) == "at-1"
    # No shell: a shell's metacharacters are plain arguments.
    argv = [*python("import sys; print('at-' + str(len(sys.argv)))"), "; rm -rf /", "$(x)"]
    assert run_token_command(argv) == "at-3"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys; sys.exit(2)", "failed (exit status 2)"),
        ("print('')", "printed no token"),
        ("print('two words')", "not an access token"),
        (f"import sys; sys.stdout.write('a' * {STDOUT_LIMIT + 10})", "more than 16384 bytes"),
    ],
)
def test_a_failing_token_command_gives_a_clear_error(code: str, expected: str) -> None:
    with pytest.raises(TokenCommandError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        run_token_command(python(code))


def test_a_hanging_token_command_is_killed_with_its_children() -> None:
    started = time.monotonic()
    code = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    with pytest.raises(TokenCommandError, match="took longer than"):
        run_token_command(python(code), timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_missing_token_command_says_so() -> None:
    with pytest.raises(TokenCommandError, match="cannot run the token command 'no-such-cmd-x'"):
        run_token_command(["no-such-cmd-x"])
    with pytest.raises(TokenCommandError, match="empty"):
        run_token_command([])


def test_stderr_is_shown_capped_and_scrubbed() -> None:
    raw = b"starting\nrefresh failed for ya29.a0AfB_byC3xyzxyzxyzxyzxyz1234 (invalid_grant)\n\n"
    shown = scrub_stderr(raw)
    assert shown == "refresh failed for *** (invalid_grant)"
    assert len(scrub_stderr(b"x " * 5000)) <= 200


def test_command_tokens_cache_until_refused_and_do_not_rerun_a_failure_at_once() -> None:
    clock = Clock()
    source = CommandTokens(
        ACCOUNT, python("import random; print('at-%d' % random.getrandbits(64))"), clock
    )
    first = source.token()
    assert first.fresh is True
    assert source.token() == AccessToken(first.value, fresh=False)
    assert source.runs == 1
    error = source.rejected(first, "NO")
    assert isinstance(error, TokenCommandError)
    second = source.token()
    assert second.fresh is True
    assert second.value != first.value
    assert source.runs == 2
    failing = CommandTokens(ACCOUNT, python("import sys; sys.exit(1)"), clock)
    for _ in range(3):
        with pytest.raises(TokenCommandError):
            failing.token()
    assert failing.runs == 1
    clock.now += 10
    with pytest.raises(TokenCommandError):
        failing.token()
    assert failing.runs == 2


IMAP = {"host": "imap.example.org", "port": 993, "security": "tls", "username": "alice"}


@pytest.mark.parametrize(
    "params",
    [
        {"account": ACCOUNT, "imap": IMAP},  # neither
        {
            "account": ACCOUNT,
            "imap": IMAP,
            "password": "pw",
            "oauth2": {"source": "command", "command": ["oama"]},
        },
        {"account": ACCOUNT, "imap": IMAP, "oauth2": {"source": "thunderbird"}},
        {"account": ACCOUNT, "imap": IMAP, "oauth2": {"source": "thunderbird", "token": "a b"}},
        {"account": ACCOUNT, "imap": IMAP, "oauth2": {"source": "command", "command": []}},
        {"account": ACCOUNT, "imap": IMAP, "oauth2": {"source": "command", "token": "at-1"}},
        {"account": ACCOUNT, "imap": IMAP, "oauth2": {"source": "shell", "command": ["x"]}},
    ],
)
def test_configure_takes_exactly_one_well_formed_credential(params: dict[str, Any]) -> None:
    from native_host.api.schemas import schemas
    from native_host.errors import HostError

    with pytest.raises(HostError) as refused:
        schemas().check_params("account.configure", params)
    assert refused.value.code.value == "invalid_params"
    assert "a b" not in refused.value.message  # the value is never echoed


def test_account_token_params_are_bounded() -> None:
    from native_host.api.schemas import schemas
    from native_host.errors import HostError

    schemas().check_params("account.token", {"account": ACCOUNT, "token": "at-1", "expires_in": 1})
    for bad in ({"expires_in": 0}, {"expires_in": 86401}, {"token": ""}, {"token": "at\n"}):
        with pytest.raises(HostError):
            schemas().check_params("account.token", {"account": ACCOUNT, "token": "at-1", **bad})
