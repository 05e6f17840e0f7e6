"""Which client instance a connection serves, and where that instance keeps its state."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_INSTANCE = "default"
APP_NAME = "autocrypt-sma"

EmitEvent = Callable[[str, dict[str, Any]], None]


def state_home() -> Path:
    """$SMA_HOME, else the platform's per-user data directory (imported only when needed)."""
    configured = os.environ.get("SMA_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Context:
    """What a handler may know about its caller, frozen when the request was read.

    A request read before `hello` keeps the instance it was read under even if it runs later.
    """

    instance: str
    emit: EmitEvent
    home: Callable[[], Path] = state_home

    def instance_dir(self) -> Path:
        path = self.home() / "instances" / self.instance
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path


class Session:
    """One native-messaging connection: unbound ("default") until `hello`."""

    def __init__(self, emit: EmitEvent, home: Callable[[], Path] = state_home) -> None:
        self.instance = DEFAULT_INSTANCE
        self.bound = False
        self._emit = emit
        self._home = home

    def bind(self, instance: str) -> None:
        self.instance = instance
        self.bound = True

    def context(self) -> Context:
        return Context(self.instance, self._emit, self._home)
