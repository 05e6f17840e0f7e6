"""Everything one client instance (one Thunderbird profile, one device) does with its accounts."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    ImapSettings,
    account_secret_names,
    password_name,
)
from native_host.service.runtime import AccountRuntime, Emit, PushStore

log = logging.getLogger(__name__)

StoreFactory = Callable[[ImapSettings, str], PushStore]


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


def open_imap(settings: ImapSettings, password: str, timeout: float | None = None) -> PushStore:
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

    # --- accounts -----------------------------------------------------------------------------
    def configure(self, account: str, settings: ImapSettings, password: str) -> None:
        try:
            store = self._open_store(settings, password)
            try:
                store.list_folders("")  # logs in: the check the user is waiting for
            finally:
                store.close()
        except StoreError as exc:
            raise store_error(exc) from None
        try:
            self.secrets.set(password_name(account), password)
        except SecretStoreUnavailable as exc:
            raise keyring_error(exc) from None
        with self._lock:
            old = self._runtimes.pop(account, None)
            if old is not None:
                old.stop(wait=REPLACE_WAIT)
            record = self.files.load(account) or AccountRecord(account, settings)
            record.imap = settings
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
            }
            for r in self.files.all()
        ]

    def remove(self, account: str) -> None:
        with self._lock:
            if self.files.load(account) is None:
                raise HostError(ErrorCode.NOT_CONFIGURED, f"{account} is not configured here")
            runtime = self._runtimes.pop(account, None)
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
