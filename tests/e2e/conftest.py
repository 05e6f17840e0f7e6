"""Fixtures the real-Thunderbird tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.dovecot_server import DovecotServer


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot on loopback for the test, stopped afterwards."""
    server = DovecotServer().start()
    yield server
    server.stop()
