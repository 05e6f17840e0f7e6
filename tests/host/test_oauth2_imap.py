"""OAuth2 accounts through the real host, a real Dovecot (SASL XOAUTH2/OAUTHBEARER, oauth2 passdb)
and a real OAuth2 provider on loopback that Dovecot asks about every token (RFC 7662).

A stand-in for the add-on answers `account.token_needed` with tokens from the provider, as
Thunderbird's OAuth2 module would. Every test ends by scanning the host's stderr (at DEBUG),
every file under its $SMA_HOME and every item in the test Secret Service for any token the
provider ever issued.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.cli.client import HostCallError
from native_host.cli.doctor import Doctor
from native_host.service.tokens import REFUSED_MESSAGE
from tests.host.harness import CheckedHost
from tests.host.test_install_launch import require_secret_service
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider

DEBUG = {"SMA_LOG_LEVEL": "DEBUG"}  # the most the logs ever say


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuth2Provider]:
    with OAuth2Provider() as running:
        yield running


@pytest.fixture(scope="module")
def dovecot(provider: OAuth2Provider) -> Iterator[DovecotServer]:
    with DovecotServer(oauth2_introspection=provider.introspection_url) as server:
        yield server


@pytest.fixture
def oauth(dovecot: DovecotServer, provider: OAuth2Provider) -> Iterator[dict[str, Any]]:
    """A fresh account whose user has signed in at the provider (a refresh token)."""
    user, _password = dovecot.new_account()
    lifetime = provider.lifetime
    yield {
        "account": f"{user}@example.org",
        "user": user,
        "imap": {"host": dovecot.host, "port": dovecot.port, "security": "none", "username": user},
        "refresh": provider.add_user(user),
    }
    provider.lifetime = lifetime


def events(host: CheckedHost, name: str, since: int = 0) -> list[dict[str, Any]]:
    return [m["data"] for m in list(host.received)[since:] if m.get("event") == name]


def wait_for(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


def state_since(host: CheckedHost, since: int, **wanted: Any) -> Callable[[], Any]:
    def found() -> Any:
        return [
            s
            for s in events(host, "sync.state", since)
            if all(s.get(k) == v for k, v in wanted.items())
        ]

    return found


class ThunderbirdStandIn:
    """Answers every account.token_needed the way the add-on does: with account.token."""

    def __init__(self, host: CheckedHost, supply: Callable[[str], dict[str, Any]]) -> None:
        self.host = host
        self.supply = supply  # reason -> account.token params
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._write = threading.Lock()
        original = host.send_message

        def locked(message: dict[str, Any]) -> None:  # two threads write frames
            with self._write:
                original(message)

        host.send_message = locked  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = 0
        while not self._stop.is_set():
            received = list(self.host.received)
            for message in received[seen:]:
                if message.get("event") == "account.token_needed":
                    reason = message["data"]["reason"]
                    self.answered.append(reason)
                    params = self.supply(reason)
                    self.host.send_message(
                        {
                            "id": f"token-{len(self.answered)}",
                            "method": "account.token",
                            "params": params,
                        }
                    )
            seen = len(received)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def grant_params(provider: OAuth2Provider, oauth: dict[str, Any]) -> dict[str, Any]:
    granted = provider.grant(oauth["refresh"])
    return {
        "account": oauth["account"],
        "token": granted["access_token"],
        "expires_in": granted["expires_in"],
    }


def configure_thunderbird(host: CheckedHost, oauth: dict[str, Any], token: str) -> Any:
    return host.call(
        "account.configure",
        {
            "account": oauth["account"],
            "imap": oauth["imap"],
            "oauth2": {"source": "thunderbird", "token": token},
        },
    )


def joined_laptop(
    spawn: Callable[..., CheckedHost], provider: OAuth2Provider, oauth: dict[str, Any]
) -> tuple[CheckedHost, str]:
    """A host (logging at DEBUG) whose account is configured with a Thunderbird token and
    joined; returns it and that token."""
    require_secret_service()
    host = spawn(DEBUG)
    host.call("hello", {"instance": "laptop"})
    token = provider.grant(oauth["refresh"])["access_token"]
    configure_thunderbird(host, oauth, token)
    host.call("sma.join", {"account": oauth["account"], "device_name": "Laptop"})
    return host, token


def assert_no_token_anywhere(
    provider: OAuth2Provider, homes: list[Path], logs: list[str]
) -> dict[str, int]:
    """No token the provider issued in any log, any file under the homes, or the keyring."""
    import secretstorage

    tokens = list(provider.issued)
    assert tokens, "the provider issued nothing: the scan would prove nothing"
    scanned = {"log_lines": 0, "files": 0, "keyring_items": 0}
    for text in logs:
        for line in text.splitlines():
            scanned["log_lines"] += 1
            leaked = [t[:6] for t in tokens if t in line]
            assert not leaked, f"a token in a log line: {line[:80]!r}"
    for home in homes:
        for path in home.rglob("*"):
            if path.is_file():
                scanned["files"] += 1
                data = path.read_bytes()
                assert not [t for t in tokens if t.encode() in data], f"a token in {path}"
    connection = secretstorage.dbus_init()
    try:
        for item in secretstorage.get_default_collection(connection).get_all_items():
            scanned["keyring_items"] += 1
            secret = item.get_secret()
            assert not [t for t in tokens if t.encode() in secret], "a token in the keyring"
    finally:
        connection.close()
    assert scanned["files"] > 0
    assert scanned["log_lines"] > 0
    return scanned


def test_an_account_configured_with_a_thunderbird_token_joins_and_syncs(
    spawn: Callable[..., CheckedHost], provider: OAuth2Provider, oauth: dict[str, Any]
) -> None:
    require_secret_service()
    host = spawn(DEBUG)
    host.call("hello", {"instance": "laptop"})
    with pytest.raises(HostCallError) as refused:
        configure_thunderbird(host, oauth, "at-not-a-token-the-provider-knows")
    assert refused.value.code == "auth_failed"
    assert "at-not-a-token" not in refused.value.message
    before = provider.requests["/introspect"]
    token = provider.grant(oauth["refresh"])["access_token"]
    assert configure_thunderbird(host, oauth, token) == {"account": oauth["account"]}
    assert provider.requests["/introspect"] == before + 1  # Dovecot asked the provider
    [listed] = host.call("account.list")["accounts"]
    assert listed["auth"] == "oauth2-thunderbird"
    joined = host.call("sma.join", {"account": oauth["account"], "device_name": "Laptop"})
    assert joined["first_device"] is True
    report = host.call("sync", {"account": oauth["account"]})
    assert report["devices"] == 1
    wait_for(state_since(host, 0, online=True), 10, "no sync.state online")
    assert not events(host, "account.token_needed")  # it had a token all along
    home = host.stderr_path.parent
    [check] = Doctor(state_home=home).account_checks(keyring_ok=True)
    assert check.status == "ok"
    assert "Thunderbird supplies the tokens" in check.detail
    assert "offers OAUTHBEARER" in check.detail
    scanned = assert_no_token_anywhere(provider, [home], [host.stderr_text()])
    sys.stderr.write(f"scanned: {scanned}\n")


def test_a_restarted_host_asks_thunderbird_for_a_token_and_resumes_at_once(
    spawn: Callable[..., CheckedHost], provider: OAuth2Provider, oauth: dict[str, Any]
) -> None:
    first, _token = joined_laptop(spawn, provider, oauth)
    home = first.stderr_path.parent
    first.close()
    first_log = home.joinpath("host-stderr.log").read_text(errors="replace")
    # The same profile again: the token was in memory only, so the host must ask.
    second = CheckedHost(home, env=DEBUG)
    try:
        second.call("hello", {"instance": "laptop"})
        asked = wait_for(
            lambda: events(second, "account.token_needed"), 10, "no account.token_needed"
        )
        assert asked == [{"account": oauth["account"], "reason": "connect"}]
        wait_for(
            state_since(second, 0, online=False, waiting="token"),
            10,
            "no sync.state waiting for a token",
        )
        assert not [s for s in events(second, "sync.state") if "error" in s]  # not an error
        mark = len(second.received)
        started = time.monotonic()
        assert second.call("account.token", grant_params(provider, oauth)) == {}
        wait_for(state_since(second, mark, online=True), 10, "did not resume after the token")
        resumed = time.monotonic() - started
        sys.stderr.write(f"resumed {resumed:.3f} s after account.token\n")
        assert resumed < 2.0  # at once, not after a backoff
        assert second.call("sync", {"account": oauth["account"]})["devices"] == 1
        assert len(events(second, "account.token_needed")) == 1
        assert not second.problems()
        assert_no_token_anywhere(provider, [home], [first_log, second.stderr_text()])
    finally:
        second.close()


def test_a_token_expiring_mid_run_is_renewed_without_the_user(
    spawn: Callable[..., CheckedHost],
    provider: OAuth2Provider,
    oauth: dict[str, Any],
    dovecot: DovecotServer,
) -> None:
    provider.lifetime = 4
    host, _token = joined_laptop(spawn, provider, oauth)
    stand_in = ThunderbirdStandIn(host, lambda reason: grant_params(provider, oauth))
    try:
        # The first token came without an expiry: the host learns it expired when the server
        # refuses it at the next login, asks, and logs in with the answer.
        time.sleep(provider.lifetime + 0.5)
        dovecot.kick(oauth["user"])
        wait_for(lambda: "rejected" in stand_in.answered, 15, "no request after the refusal")
        assert host.call("sync", {"account": oauth["account"]})["devices"] == 1
        # Tokens from account.token carry expires_in: the host asks before they expire, so a
        # reconnect after the expiry finds a fresh token and never waits.
        wait_for(lambda: "expiring" in stand_in.answered, 10, "no request before the expiry")
        time.sleep(provider.lifetime)
        mark = len(host.received)
        dovecot.kick(oauth["user"])
        assert host.call("sync", {"account": oauth["account"]})["devices"] == 1
        time.sleep(1.0)  # let the push loops reconnect too
        assert not state_since(host, mark, waiting="token")()
        assert not [s for s in events(host, "sync.state", mark) if "error" in s]
        assert provider.introspected[-1][1] is True  # the last login's token was active
        assert stand_in.answered.count("expiring") >= 2
    finally:
        stand_in.stop()
    assert not [s for s in events(host, "sync.state") if s.get("error")]
    assert_no_token_anywhere(provider, [host.stderr_path.parent], [host.stderr_text()])


def test_a_revoked_token_leaves_the_account_waiting_without_a_tight_loop(
    spawn: Callable[..., CheckedHost],
    provider: OAuth2Provider,
    oauth: dict[str, Any],
    dovecot: DovecotServer,
) -> None:
    host, token = joined_laptop(spawn, provider, oauth)

    def revoked(reason: str) -> dict[str, Any]:
        # What a Thunderbird whose grant was revoked may still hold: tokens the server refuses.
        params = grant_params(provider, oauth)
        provider.revoke(params["token"])
        return params

    stand_in = ThunderbirdStandIn(host, revoked)
    try:
        provider.revoke(token)
        mark = len(host.received)
        dovecot.kick(oauth["user"])
        wait_for(
            state_since(host, mark, online=False, waiting="token"),
            15,
            "no sync.state waiting after the refusal",
        )
        failed = wait_for(
            lambda: [s for s in events(host, "sync.state", mark) if s.get("error")],
            15,
            "no auth_failed after two refusals",
        )[-1]
        assert failed["waiting"] == "token"
        assert failed["online"] is False
        assert failed["error"] == {"code": "auth_failed", "message": REFUSED_MESSAGE}
        # No tight loop: count what the host does over the next 10 s.
        introspections = provider.requests["/introspect"]
        asked = len(events(host, "account.token_needed"))
        time.sleep(10)
        more_introspections = provider.requests["/introspect"] - introspections
        more_asked = len(events(host, "account.token_needed")) - asked
        sys.stderr.write(
            f"in 10 s of waiting: {more_introspections} introspections, "
            f"{more_asked} account.token_needed; before: {introspections} / {asked}\n"
        )
        assert more_asked <= 1
        assert more_introspections <= 3  # at most one refused token, tried by each connection
        with pytest.raises(HostCallError) as waiting:
            host.call("sync", {"account": oauth["account"]})
        assert waiting.value.code == "auth_failed"
    finally:
        stand_in.stop()
    # Thunderbird signs in again: the next good token ends the wait at once.
    mark = len(host.received)
    host.call("account.token", grant_params(provider, oauth))
    wait_for(state_since(host, mark, online=True), 10, "did not resume after a good token")
    assert_no_token_anywhere(provider, [host.stderr_path.parent], [host.stderr_text()])


TOKEN_COMMAND = """\
import json, sys, urllib.parse, urllib.request
url, refresh_file = sys.argv[1], sys.argv[2]
form = {"grant_type": "refresh_token", "refresh_token": open(refresh_file).read().strip()}
data = urllib.parse.urlencode(form).encode()
with urllib.request.urlopen(url, data, timeout=10) as answer:
    print(json.load(answer)["access_token"])
"""


def test_the_token_command_fetches_tokens_and_is_rerun_when_one_is_refused(
    spawn: Callable[..., CheckedHost],
    provider: OAuth2Provider,
    oauth: dict[str, Any],
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    require_secret_service()
    # Like oama: the refresh token lives outside the host's files (here a file, in real life a
    # keyring); only the command line is in the account's settings.
    secrets_dir = tmp_path / "oama"
    secrets_dir.mkdir()
    (secrets_dir / "refresh").write_text(oauth["refresh"])
    (secrets_dir / "token_cmd.py").write_text(TOKEN_COMMAND)
    command = [
        sys.executable,
        str(secrets_dir / "token_cmd.py"),
        provider.token_url,
        str(secrets_dir / "refresh"),
    ]
    host = spawn(DEBUG)
    host.call("hello", {"instance": "phone"})
    with pytest.raises(HostCallError) as failed:
        host.call(
            "account.configure",
            {
                "account": oauth["account"],
                "imap": oauth["imap"],
                "oauth2": {
                    "source": "command",
                    "command": [
                        sys.executable,
                        "-c",
                        "import sys; sys.stderr.write('no grant for at-abcdefghijklmnopqrstuvwxyz"
                        "\\n'); sys.exit(3)",
                    ],
                },
            },
        )
    assert failed.value.code == "auth_failed"
    assert "exit status 3" in failed.value.message
    assert "abcdefghijklmnop" not in failed.value.message
    assert "***" in failed.value.message
    grants = provider.requests["/token"]
    params = {
        "account": oauth["account"],
        "imap": oauth["imap"],
        "oauth2": {"source": "command", "command": command},
    }
    assert host.call("account.configure", params) == {"account": oauth["account"]}
    assert provider.requests["/token"] == grants + 1
    [listed] = host.call("account.list")["accounts"]
    assert listed["auth"] == "oauth2-command"
    host.call("sma.join", {"account": oauth["account"], "device_name": "Phone"})
    assert host.call("sync", {"account": oauth["account"]})["devices"] == 1
    # The token in use is revoked (as when it expires): the next login reruns the command.
    provider.revoke(provider.issued[-1])
    grants = provider.requests["/token"]
    dovecot.kick(oauth["user"])
    assert host.call("sync", {"account": oauth["account"]})["devices"] == 1
    assert provider.requests["/token"] > grants
    with pytest.raises(HostCallError) as wrong:
        host.call("account.token", {"account": oauth["account"], "token": "at-x"})
    assert wrong.value.code == "invalid_params"
    settings = json.loads(next((host.stderr_path.parent).rglob("accounts/*.json")).read_text())
    assert settings["auth"] == {"kind": "oauth2-command", "command": command}
    assert_no_token_anywhere(provider, [host.stderr_path.parent], [host.stderr_text()])


def test_xoauth2_where_oauthbearer_is_not_offered_and_a_clear_error_where_neither_is(
    provider: OAuth2Provider,
) -> None:
    from imapclient import IMAPClient

    from native_host.adapters.imap_login import ImapLoginError, TokenLogin
    from native_host.adapters.imap_store import ImapStore
    from native_host.service.tokens import ThunderbirdTokens

    with DovecotServer(
        oauth2_introspection=provider.introspection_url, oauth2_mechanisms=("xoauth2",)
    ) as outlook_like:
        user, _password = outlook_like.new_account()
        offered = IMAPClient(outlook_like.host, outlook_like.port, ssl=False, timeout=10)
        assert b"AUTH=XOAUTH2" in offered.capabilities()
        assert b"AUTH=OAUTHBEARER" not in offered.capabilities()
        offered.shutdown()
        source = ThunderbirdTokens(f"{user}@example.org", lambda name, data: None, time.time)
        source.supply(provider.grant(provider.add_user(user))["access_token"])
        with ImapStore(
            outlook_like.host, outlook_like.port, user, TokenLogin(source), security="none"
        ) as store:
            assert store.list_folders("") == ["INBOX"]  # logged in: XOAUTH2 it was
    with DovecotServer() as password_only:
        user, _password = password_only.new_account()
        source = ThunderbirdTokens(f"{user}@example.org", lambda name, data: None, time.time)
        source.supply("at-unused")
        with pytest.raises(ImapLoginError, match="neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2"):
            ImapStore(
                password_only.host, password_only.port, user, TokenLogin(source), security="none"
            )
