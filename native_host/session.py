"""Which client instance a connection serves, and where that instance keeps its state."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

    from native_host.service.instance import InstanceService, Services

DEFAULT_INSTANCE = "default"
APP_NAME = "autocrypt-sma"

EmitEvent = Callable[[str, dict[str, Any]], None]


def state_home() -> Path:
    """$SMA_HOME, else the platform's per-user data directory (imported only when needed)."""
    from pathlib import Path  # not at import: the host's first ping needs none of it

    configured = os.environ.get("SMA_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def instance_dir(home: Path, instance: str) -> Path:
    path = home / "instances" / instance
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_services(home: Callable[[], Path] = state_home) -> Services:
    from native_host.adapters.keyring_secrets import KeyringSecrets
    from native_host.service.instance import InstanceService, Services

    def make(instance: str, emit: EmitEvent) -> InstanceService:
        return InstanceService(instance_dir(home(), instance), KeyringSecrets(instance), emit)

    return Services(make)


class Context(NamedTuple):  # not a dataclass: see Method in api/dispatch.py
    """What a handler may know about its caller, frozen when the request was read.

    A request read before `hello` keeps the instance it was read under even if it runs later.
    """

    instance: str
    emit: EmitEvent
    services: Callable[[], Services]

    def service(self) -> InstanceService:
        return self.services().get(self.instance, self.emit)


class Session:
    """One native-messaging connection: unbound ("default") until `hello`."""

    def __init__(self, emit: EmitEvent, services: Services | None = None) -> None:
        self.instance = DEFAULT_INSTANCE
        self.bound = False
        self._emit = emit
        self._services = services
        self._lock = threading.Lock()

    def bind(self, instance: str) -> None:
        self.instance = instance
        self.bound = True

    def services(self) -> Services:
        with self._lock:
            if self._services is None:  # made on first use: ping never pays for it
                self._services = default_services()
            return self._services

    def close(self) -> None:
        with self._lock:
            services = self._services
        if services is not None:
            services.stop()

    def context(self) -> Context:
        return Context(self.instance, self._emit, self.services)
