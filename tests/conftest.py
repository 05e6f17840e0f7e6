"""Suite-wide settings (hypothesis profiles: a quick slice by default, a long run on demand) and
the `spawn` fixture that starts real hosts and checks every frame they send."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.host.harness import CheckedHost

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., CheckedHost]]:
    """Start hosts; at teardown, every frame each one sent must have matched its schema."""
    hosts: list[CheckedHost] = []

    def start(env: dict[str, str] | None = None) -> CheckedHost:
        home = tmp_path / f"home{len(hosts)}"
        home.mkdir()
        host = CheckedHost(home, env=env)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.close()
    for host in hosts:
        assert host.problems() == [], host.stderr_text()


@pytest.fixture
def host(spawn: Callable[..., CheckedHost]) -> CheckedHost:
    return spawn()
