"""One FolderStore contract, run on every implementation: memory, pymap, and Dovecot (two namespaces).

The `account` fixture is a fresh, empty mail account; `account.store()` opens one more
connection to it, as another device would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from native_host.adapters.memory_store import MemoryStore
from native_host.ports import FolderStore

BACKENDS = ["memory", "pymap", "dovecot", "dovecot-inbox-prefix"]


class Account(Protocol):
    def store(self) -> FolderStore: ...

    def close(self) -> None: ...


class MemoryAccount:
    def __init__(self) -> None:
        self.mailbox = MemoryStore()

    def store(self) -> FolderStore:
        return self.mailbox

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    yield started
    for factory in started.values():
        factory.close()


@pytest.fixture(params=BACKENDS)
def account(request: pytest.FixtureRequest, _servers: dict[str, Any]) -> Iterator[Account]:
    kind = request.param
    if kind == "memory":
        yield MemoryAccount()
        return
    from tests.servers.accounts import imap_account_factory

    if kind not in _servers:
        _servers[kind] = imap_account_factory(kind)
    acc = _servers[kind].new_account()
    try:
        yield acc
    finally:
        acc.close()
