"""The loopback OAuth2 provider the OAuth2 tests (and later the Thunderbird e2e test) rely on:
its endpoints over real HTTP, as Dovecot and a token command reach them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers.oauth2_provider import OAuth2Provider


@pytest.fixture
def provider() -> Iterator[OAuth2Provider]:
    with OAuth2Provider() as running:
        yield running


def post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(url, data, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_grants_introspection_and_revocation(provider: OAuth2Provider) -> None:
    refresh = provider.add_user("alice", "secret")
    status, granted = post(
        provider.token_url, {"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert status == 200
    assert granted["token_type"] == "Bearer"
    assert granted["expires_in"] == 3600
    token = granted["access_token"]
    status, info = post(provider.introspection_url, {"token": token})
    assert info["active"] is True
    assert info["username"] == "alice"
    assert info["exp"] > time.time()
    status, by_password = post(
        provider.token_url, {"grant_type": "password", "username": "alice", "password": "secret"}
    )
    assert status == 200
    assert by_password["refresh_token"] != refresh
    assert post(
        provider.token_url, {"grant_type": "password", "username": "alice", "password": "wrong"}
    ) == (400, {"error": "invalid_grant"})
    status, client = post(
        provider.token_url, {"grant_type": "client_credentials", "username": "alice"}
    )
    assert status == 200
    assert "refresh_token" not in client
    assert post(provider.revocation_url, {"token": token}) == (200, {})
    assert post(provider.introspection_url, {"token": token}) == (200, {"active": False})
    # Revoking the refresh token takes its access tokens and further grants with it.
    fresh = provider.grant(refresh)["access_token"]
    provider.revoke(refresh)
    assert provider.active(fresh) is False
    assert post(provider.token_url, {"grant_type": "refresh_token", "refresh_token": refresh}) == (
        400,
        {"error": "invalid_grant"},
    )
    assert provider.requests["/introspect"] == 2
    assert provider.requests["/token"] == 5


def test_tokens_expire_with_their_lifetime(provider: OAuth2Provider) -> None:
    provider.lifetime = 1
    token = provider.grant(provider.add_user("bob"))["access_token"]
    assert provider.active(token)
    time.sleep(1.1)
    assert post(provider.introspection_url, {"token": token}) == (200, {"active": False})
    assert provider.introspected == [(token, False)]
