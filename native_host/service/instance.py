"""Everything one client instance (one Thunderbird profile, one device) does with its accounts."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from native_host.core.keysync import PeerRepo
from native_host.errors import ErrorCode, HostError
from native_host.ports import (
    Clock,
    RandomBytes,
    SecretStore,
    SecretStoreUnavailable,
    StoreAuthError,
    StoreError,
)
from native_host.service.accounts import (
    AccountFiles,
    AccountRecord,
    AuthSettings,
    ImapSettings,
    account_secret_names,
    password_name,
)
from native_host.service.runtime import AccountRuntime, Emit, PushStore
from native_host.service.token_command import CommandTokens, TokenCommandError
from native_host.service.tokens import ThunderbirdTokens, TokenWaiting

if TYPE_CHECKING:
    from native_host.adapters.imap_login import ImapLogin

log = logging.getLogger(__name__)

# Opens a store with the account's password, or with a login strategy (OAuth2 token source).
StoreFactory = Callable[[ImapSettings, "str | ImapLogin"], PushStore]
TokenSources = ThunderbirdTokens | CommandTokens


DEFAULT_IMAP_TIMEOUT = 30.0
# How long a runtime being replaced (new settings, account removed) may finish its sync cycle.
REPLACE_WAIT = 15.0


def imap_timeout() -> float:
    """Seconds any one IMAP read may take ($SMA_IMAP_TIMEOUT; tests of dead links use a short one)."""
    try:
        value = float(os.environ.get("SMA_IMAP_TIMEOUT", DEFAULT_IMAP_TIMEOUT))
    except ValueError:
        return DEFAULT_IMAP_TIMEOUT
    return value if 0.5 <= value <= 600 else DEFAULT_IMAP_TIMEOUT


def open_imap(
    settings: ImapSettings, password: str | ImapLogin, timeout: float | None = None
) -> PushStore:
    from native_host.adapters.imap_store import ImapStore

    return ImapStore(
        settings.host,
        settings.port,
        settings.username,
        password,
        security=settings.security,
        verify_tls=settings.verify_tls,
        timeout=imap_timeout() if timeout is None else timeout,
    )


def store_error(exc: StoreError) -> HostError:
    if isinstance(exc, TokenWaiting | TokenCommandError):  # their own words, already clear
        return HostError(ErrorCode.AUTH_FAILED, str(exc)[:500])
    if isinstance(exc, StoreAuthError):
        return HostError(
            ErrorCode.AUTH_FAILED, f"the IMAP server refused the login: {str(exc)[:300]}"
        )
    return HostError(ErrorCode.IMAP_UNAVAILABLE, f"IMAP: {str(exc)[:500] or type(exc).__name__}")


def keyring_error(exc: SecretStoreUnavailable) -> HostError:
    return HostError(ErrorCode.KEYRING_UNAVAILABLE, str(exc))


class InstanceService:
    def __init__(
        self,
        instance_dir: Path,
        secrets: SecretStore,
        emit: Emit,
        *,
        open_store: StoreFactory = open_imap,
        clock: Clock = time.time,
        random: RandomBytes = os.urandom,
    ) -> None:
        self.files = AccountFiles(instance_dir)
        self.secrets = secrets
        self._emit = emit
        self._open_store = open_store
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()
        self._runtimes: dict[str, AccountRuntime] = {}
        self._tokens: dict[str, TokenSources] = {}  # OAuth2 accounts' sources (memory only)

    # --- accounts -----------------------------------------------------------------------------
    def configure(
        self,
        account: str,
        settings: ImapSettings,
        password: str | None = None,
        *,
        auth: AuthSettings | None = None,
        token: str | None = None,
    ) -> None:
        """`password` for a password account; for OAuth2, `auth` says where tokens come from
        and `token` is Thunderbird's current one (the check login uses it)."""
        auth = auth or AuthSettings()
        source = self._new_token_source(account, auth)
        if isinstance(source, ThunderbirdTokens):
            if token is None:
                raise HostError(ErrorCode.INVALID_PARAMS, "oauth2 from thunderbird needs a token")
            source.emit = lambda name, data: None  # the add-on waits for this answer instead
            source.supply(token)
        credential: str | ImapLogin
        if source is None:
            if password is None:
                raise HostError(ErrorCode.INVALID_PARAMS, "a password account needs a password")
            credential = password
        else:
            from native_host.adapters.imap_login import TokenLogin

            credential = TokenLogin(source)
        try:
            store = self._open_store(settings, credential)
            try:
                store.list_folders("")  # logs in: the check the user is waiting for
            finally:
                store.close()
        except StoreError as exc:
            raise store_error(exc) from None
        try:
            if password is not None and source is None:
                self.secrets.set(password_name(account), password)
            else:
                self.secrets.delete(password_name(account))  # none outlives a switch to OAuth2
        except SecretStoreUnavailable as exc:
            if source is None:
                raise keyring_error(exc) from None
        if isinstance(source, ThunderbirdTokens):
            source.emit = self._emit
        with self._lock:
            old = self._runtimes.pop(account, None)
            if old is not None:
                old.stop(wait=REPLACE_WAIT)
            replaced = self._tokens.pop(account, None)
            if isinstance(replaced, ThunderbirdTokens):
                replaced.close()
            if source is not None:
                self._tokens[account] = source
            record = self.files.load(account) or AccountRecord(account, settings)
            record.imap = settings
            record.auth = auth
            self.files.save(record)
        if record.device is not None:
            self.runtime(account).start()  # a joined device keeps syncing with the new settings

    def accounts(self) -> list[dict[str, Any]]:
        return [
            {
                "account": r.account,
                "imap": {
                    "host": r.imap.host,
                    "port": r.imap.port,
                    "security": r.imap.security,
                    "username": r.imap.username,
                    "verify_tls": r.imap.verify_tls,
                },
                "device_id": r.device.device_id if r.device else None,
                "auth": r.auth.kind,
            }
            for r in self.files.all()
        ]

    def token(self, account: str, token: str, expires_in: int | None = None) -> None:
        """A fresh access token from Thunderbird (account.token): the runtime retries at once."""
        record = self.files.load(account)
        if record is None:
            raise HostError(ErrorCode.NOT_CONFIGURED, f"{account} is not configured here")
        if record.auth.kind != "oauth2-thunderbird":
            raise HostError(
                ErrorCode.INVALID_PARAMS,
                f"{account} does not take OAuth2 tokens from Thunderbird (auth: {record.auth.kind})",
            )
        source = self._token_source(record)
        assert isinstance(source, ThunderbirdTokens)
        source.supply(token, expires_in)

    def _new_token_source(self, account: str, auth: AuthSettings) -> TokenSources | None:
        if auth.kind == "oauth2-thunderbird":
            return ThunderbirdTokens(
                account, self._emit, self._clock, on_token=lambda: self._token_arrived(account)
            )
        if auth.kind == "oauth2-command":
            return CommandTokens(account, auth.command, self._clock)
        return None

    def _token_source(self, record: AccountRecord) -> TokenSources | None:
        """The account's token source, made on first use (after a restart: no token yet)."""
        with self._lock:
            source = self._tokens.get(record.account)
            if source is None:
                source = self._new_token_source(record.account, record.auth)
                if source is not None:
                    self._tokens[record.account] = source
            return source

    def _token_arrived(self, account: str) -> None:
        with self._lock:
            runtime = self._runtimes.get(account)
        if runtime is not None:
            runtime.wake()

    def remove(self, account: str) -> None:
        with self._lock:
            if self.files.load(account) is None:
                raise HostError(ErrorCode.NOT_CONFIGURED, f"{account} is not configured here")
            runtime = self._runtimes.pop(account, None)
            source = self._tokens.pop(account, None)
        if isinstance(source, ThunderbirdTokens):
            source.close()
        if runtime is not None:
            runtime.stop(wait=REPLACE_WAIT)
        try:
            for name in (password_name(account), *account_secret_names(account)):
                self.secrets.delete(name)
        except SecretStoreUnavailable as exc:
            raise keyring_error(exc) from None
        self.files.delete(account)

    # --- the SMA ------------------------------------------------------------------------------
    def runtime(self, account: str) -> AccountRuntime:
        with self._lock:
            runtime = self._runtimes.get(account)
            if runtime is None or runtime.removed:
                record = self.files.load(account)
                if record is None:
                    raise HostError(
                        ErrorCode.NOT_CONFIGURED,
                        f"{account} is not configured here; use account.configure",
                    )
                runtime = AccountRuntime(
                    record,
                    self.files,
                    self._store_for,
                    self._emit,
                    clock=self._clock,
                    random=self._random,
                    secrets=self.secrets,
                    peer_repo=self._open_peers(account),
                )
                self._runtimes[account] = runtime
            return runtime

    def _open_peers(self, account: str) -> PeerRepo:
        from native_host.adapters.sqlite_peers import PeerDatabaseError, SqlitePeerRepo

        try:
            return SqlitePeerRepo(self.files.peer_db(account))
        except PeerDatabaseError as exc:
            raise HostError(ErrorCode.INTERNAL_ERROR, f"local state of {account}: {exc}") from None

    def _store_for(self, record: AccountRecord) -> PushStore:
        source = self._token_source(record)
        if source is not None:
            from native_host.adapters.imap_login import TokenLogin

            return self._open_store(record.imap, TokenLogin(source))
        password = self.secrets.get(password_name(record.account))  # keyring_unavailable
        if password is None:
            raise StoreAuthError("no password in the OS keyring; configure the account again")
        return self._open_store(record.imap, password)

    def joined_runtime(self, account: str) -> AccountRuntime:
        runtime = self.runtime(account)
        if runtime.record.device is None:
            raise HostError(
                ErrorCode.NOT_JOINED,
                f"this device has not joined the SMA of {account}; use sma.join",
            )
        return runtime

    def start_background(self) -> None:
        """Resume background sync for every joined account (the add-on has just connected)."""
        for record in self.files.all():
            if record.device is not None:
                try:
                    self.runtime(record.account).start()
                except HostError:
                    log.warning("cannot resume %s", record.account)

    def stop(self, wait: float = 0.0) -> None:
        with self._lock:
            runtimes = list(self._runtimes.values())
            self._runtimes.clear()
        for runtime in runtimes:
            runtime.stop(wait)


class Services:
    """The process's instance services, made on first use (one per instance name)."""

    def __init__(self, factory: Callable[[str, Emit], InstanceService]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceService] = {}

    def get(self, instance: str, emit: Emit) -> InstanceService:
        with self._lock:
            service = self._instances.get(instance)
            if service is None:
                service = self._factory(instance, emit)
                self._instances[instance] = service
            return service

    def stop(self) -> None:
        with self._lock:
            services = list(self._instances.values())
        for service in services:
            service.stop()
