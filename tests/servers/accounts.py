"""Fresh IMAP accounts on test servers that the suite starts itself, for the FolderStore contract.

Interface (used by tests/contract/conftest.py):

    factory = imap_account_factory("dovecot")   # or "pymap", "dovecot-inbox-prefix"
    account = factory.new_account()             # a fresh account with no SMA folders
    store = account.store()                     # a new ImapStore connection (another device)
    account.close()                             # closes every store it made
    factory.close()                             # stops the server(s); end of the session

The factory is also a context manager. Servers start lazily on the first `new_account()`:

- ``dovecot`` / ``dovecot-inbox-prefix``: one Dovecot per factory (about 0.05 s to start), one
  new user per account (``(("" "/"))`` and ``(("INBOX." "."))`` namespaces respectively);
- ``pymap``: its dict backend has a single user, so each account is its own pymap process
  (about 0.4 s to start; the next one is launched in the background while a test runs),
  stopped when the account is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from native_host.adapters.imap_store import ImapStore

from .dovecot_server import DovecotServer
from .pymap_server import PymapServer

KINDS = ("pymap", "dovecot", "dovecot-inbox-prefix")


class ImapAccount:
    """One mail account; `store()` opens one more connection to it."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self._on_close = on_close
        self._stores: list[ImapStore] = []

    def store(self) -> ImapStore:
        store = ImapStore(
            self.host, self.port, self.username, self.password, security="none", timeout=15.0
        )
        self._stores.append(store)
        return store

    def close(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            store.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


class ImapAccountFactory:
    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown IMAP test server kind {kind!r}; one of {KINDS}")
        self.kind = kind
        self._dovecot: DovecotServer | None = None
        self._pymaps: list[PymapServer] = []
        self._spare: PymapServer | None = None  # pymap: the next account's process, launching
        self._accounts: list[ImapAccount] = []

    def new_account(self) -> ImapAccount:
        if self.kind == "pymap":
            # Take the prewarmed process (or start one) and prewarm the next one meanwhile.
            server = (self._spare or PymapServer()).start()
            self._spare = PymapServer().spawn()
            self._pymaps.append(server)

            def stop() -> None:
                server.stop()
                if server in self._pymaps:
                    self._pymaps.remove(server)

            user, password = server.user, server.password
            account = ImapAccount(server.host, server.port, user, password, on_close=stop)
        else:
            if self._dovecot is None:
                prefixed = self.kind == "dovecot-inbox-prefix"
                self._dovecot = DovecotServer(
                    namespace="inbox-prefix" if prefixed else "default"
                ).start()
            user, password = self._dovecot.new_account()
            account = ImapAccount(self._dovecot.host, self._dovecot.port, user, password)
        self._accounts.append(account)
        return account

    def close(self) -> None:
        accounts, self._accounts = self._accounts, []
        for account in accounts:
            account.close()
        for server in list(self._pymaps):
            server.stop()
        self._pymaps.clear()
        if self._spare is not None:
            self._spare.stop()
            self._spare = None
        if self._dovecot is not None:
            self._dovecot.stop()
            self._dovecot = None

    def __enter__(self) -> ImapAccountFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def imap_account_factory(kind: str) -> ImapAccountFactory:
    """A factory of fresh accounts on a server of this kind; close it at the end of the session."""
    return ImapAccountFactory(kind)
