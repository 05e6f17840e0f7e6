"""Whatever a handler hits deep inside, the answer is a stable error code, never a traceback."""

from __future__ import annotations

from typing import Any

from native_host.api.dispatch import Method, run
from native_host.api.envelope import Request
from native_host.ports import SecretStoreUnavailable
from native_host.session import Context


def failing(exc: Exception) -> Method:
    def handler(context: Context, params: dict[str, Any]) -> dict[str, Any]:
        raise exc

    return Method("sma.join", handler)


def context() -> Context:
    return Context("default", lambda name, data: None, lambda: None)  # type: ignore[arg-type, return-value]


def test_a_keyring_failure_anywhere_is_keyring_unavailable() -> None:
    reason = "no usable OS keyring: start gnome-keyring or set PYTHON_KEYRING_BACKEND"
    answer = run(failing(SecretStoreUnavailable(reason)), context(), Request(7, "sma.join", {}))
    assert answer == {"id": 7, "error": {"code": "keyring_unavailable", "message": reason}}


def test_a_bug_is_internal_error_without_details() -> None:
    answer = run(failing(KeyError("secret-value")), context(), Request(8, "sma.join", {}))
    assert answer["error"]["code"] == "internal_error"
    assert "secret-value" not in answer["error"]["message"]
