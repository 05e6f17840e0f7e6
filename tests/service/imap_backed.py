"""The service tests' `Server`, backed by a real Dovecot account instead of the in-memory store:
the same flows, on the real thing (each runtime opens its own IMAP connections)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from native_host.adapters.imap_store import ImapStore
from native_host.ports import StoreAuthError
from native_host.service.accounts import ImapSettings
from native_host.service.runtime import PushStore
from tests.servers.dovecot_server import DovecotServer
from tests.service.test_instance import Server


class DovecotBacked(Server):
    def __init__(self, dovecot: DovecotServer) -> None:
        super().__init__()
        self._host, self._port = dovecot.host, dovecot.port
        self._user, self._secret = dovecot.new_account()
        self._opened: list[ImapStore] = []
        self.mailbox = self._store()  # type: ignore[assignment]  # the test's own view

    def _store(self) -> ImapStore:
        store = ImapStore(
            self._host, self._port, self._user, self._secret, security="none", timeout=15.0
        )
        self._opened.append(store)
        return store

    def open(self, settings: ImapSettings, password: str) -> PushStore:
        if password != self.password:
            raise StoreAuthError("[AUTHENTICATIONFAILED] Authentication failed.")
        return self._store()

    def close(self) -> None:
        for store in self._opened:
            with contextlib.suppress(Exception):
                store.close()


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    yield server
    server.stop()


def server_fixture(request: pytest.FixtureRequest) -> Iterator[Server]:
    """Body of a `server` fixture parametrized over "memory" and "dovecot"."""
    if request.param == "memory":
        yield Server()
        return
    backed = DovecotBacked(request.getfixturevalue("dovecot"))
    yield backed
    backed.close()
