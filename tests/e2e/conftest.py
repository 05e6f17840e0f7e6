"""Fixtures the real-Thunderbird tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.thunderbird import Thunderbird, install_host
from tests.servers.dovecot_server import DovecotServer
from tests.servers.oauth2_provider import OAuth2Provider


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot on loopback for the test, stopped afterwards."""
    server = DovecotServer().start()
    yield server
    server.stop()


@pytest.fixture
def host_thunderbird(tmp_path: Path) -> Iterator[Thunderbird]:
    """A headless Thunderbird whose HOME (the test's tmp_path) has the native host installed."""
    install_host(tmp_path)
    tb = Thunderbird(tmp_path)
    try:
        yield tb
    finally:
        tb.quit()


@pytest.fixture
def provider() -> Iterator[OAuth2Provider]:
    """The loopback OAuth2 provider (token, introspection, revocation endpoints)."""
    with OAuth2Provider() as running:
        yield running


@pytest.fixture
def oauth_dovecot(provider: OAuth2Provider) -> Iterator[DovecotServer]:
    """A Dovecot whose oauth2 passdb checks every token at `provider`."""
    with DovecotServer(oauth2_introspection=provider.introspection_url) as server:
        yield server


@pytest.fixture
def host_logs_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host a Thunderbird started after this starts logs at DEBUG (Thunderbird passes its
    environment on; the host's stderr lands in Thunderbird's console): for scans of its logs."""
    monkeypatch.setenv("SMA_LOG_LEVEL", "DEBUG")
