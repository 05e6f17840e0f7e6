"""SecretStore on the OS keyring (Secret Service, macOS Keychain, Windows Credential Locker).

Fails closed: with no usable backend every call raises SecretStoreUnavailable; a secret is
never written anywhere else. Entries live under one service name per instance
(`autocrypt-sma/<instance>`), so two Thunderbird profiles on one computer never collide.
"""

from __future__ import annotations

from typing import Any

from native_host.ports import SecretStoreUnavailable

SERVICE_PREFIX = "autocrypt-sma/"
_UNUSABLE_BACKENDS = ("keyring.backends.fail", "keyring.backends.null")


class KeyringSecrets:
    def __init__(self, instance: str) -> None:
        self.service = SERVICE_PREFIX + instance

    def _backend(self) -> Any:
        import keyring

        try:
            backend = keyring.get_keyring()
        except Exception as exc:
            raise SecretStoreUnavailable(f"no OS keyring: {exc}") from None
        if type(backend).__module__ in _UNUSABLE_BACKENDS:
            raise SecretStoreUnavailable(
                "no usable OS keyring (on Linux: a Secret Service such as gnome-keyring must run)"
            )
        return backend

    def get(self, name: str) -> str | None:
        try:
            value = self._backend().get_password(self.service, name)
        except SecretStoreUnavailable:
            raise
        except Exception as exc:
            raise SecretStoreUnavailable(f"the OS keyring failed: {type(exc).__name__}") from None
        return value if isinstance(value, str) else None

    def set(self, name: str, value: str) -> None:
        try:
            self._backend().set_password(self.service, name, value)
        except SecretStoreUnavailable:
            raise
        except Exception as exc:
            raise SecretStoreUnavailable(f"the OS keyring failed: {type(exc).__name__}") from None

    def delete(self, name: str) -> None:
        import keyring.errors

        try:
            self._backend().delete_password(self.service, name)
        except keyring.errors.PasswordDeleteError:
            return  # it was not there
        except SecretStoreUnavailable:
            raise
        except Exception as exc:
            raise SecretStoreUnavailable(f"the OS keyring failed: {type(exc).__name__}") from None


class MemorySecrets:
    """For unit tests only: the suite's service and host tests use the real keyring."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)
