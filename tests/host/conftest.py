from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.host.harness import CheckedHost


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
