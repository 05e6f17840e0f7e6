"""The stdio harness: a host started exactly as Thunderbird starts it, with every frame it sends checked.

It is the CLI's client (native_host.cli.client) plus schema validation of every response and event,
so the suite proves that whatever the host emits matches docs/api.md's schemas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from native_host.api.schemas import schemas
from native_host.cli.client import HostProcess


class CheckedHost(HostProcess):
    def __init__(self, home: Path, env: dict[str, str] | None = None, **kwargs: Any) -> None:
        self._methods: dict[Any, str] = {}
        self.stderr_path = home / "host-stderr.log"
        self._stderr_file = self.stderr_path.open("wb")
        full_env = {**os.environ, "SMA_HOME": str(home), **(env or {})}
        super().__init__(env=full_env, stderr=self._stderr_file, **kwargs)

    def send_message(self, message: dict[str, Any]) -> None:
        if isinstance(message.get("method"), str) and "id" in message:
            self._methods[message["id"]] = message["method"]
        super().send_message(message)

    def stderr_text(self) -> str:
        self._stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def problems(self) -> list[str]:
        """Every schema violation in what the host sent, plus any broken frame."""
        found = [f"stream: {self.stream_error}"] if self.stream_error else []
        checker = schemas()
        for message in list(self.received):
            if "event" in message:
                found += checker.event_problems(message)
            else:
                method = self._methods.get(message.get("id"))
                found += checker.response_problems(method, message)
        return found

    def close(self, timeout: float = 5.0) -> int:
        code = super().close(timeout)
        self._stderr_file.close()
        return code
