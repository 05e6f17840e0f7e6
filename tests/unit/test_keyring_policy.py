"""The keyring policy: secrets go to a backend keyring recommends or one the user named, and
nowhere else; a missing, refused or locked keyring is a clear `keyring_unavailable`, never a hang.

Backends are set in-process with `keyring.set_keyring`: keyring's own `fail` and `null`, and
small backend classes of ours with a chosen priority (made only after keyring has listed its
backends, so they never compete in keyring's automatic choice elsewhere in the suite).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import chainer, fail, null

from native_host.adapters import keyring_secrets
from native_host.adapters.keyring_secrets import (
    SERVICE_PREFIX,
    KeyringSecrets,
    current_verdict,
    qualified_name,
)
from native_host.errors import ErrorCode, HostError
from native_host.ports import SecretStoreUnavailable
from native_host.service.accounts import ImapSettings, password_name
from native_host.service.instance import InstanceService
from tests.fakes import FakeClock, SeededRandom

_classes: dict[str, type[Any]] = {}


def backend_class(priority: float) -> type[Any]:
    """A dict-backed keyring backend class with this priority (made once per priority)."""
    key = f"{priority:g}"
    if key not in _classes:
        keyring.backend.get_all_keyring()  # keyring's list is made (and cached) before ours exist

        class DictBackend(keyring.backend.KeyringBackend):
            stored: dict[tuple[str, str], str]

            def __init__(self) -> None:
                super().__init__()
                self.stored = {}

            def get_password(self, service: str, username: str) -> str | None:
                return self.stored.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                self.stored[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                if self.stored.pop((service, username), None) is None:
                    raise keyring.errors.PasswordDeleteError("not there")

        DictBackend.priority = priority  # type: ignore[assignment]
        DictBackend.__qualname__ = DictBackend.__name__ = f"DictBackend{key.replace('.', '_')}"
        _classes[key] = DictBackend
    return _classes[key]


@pytest.fixture(autouse=True)
def restore_keyring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test sets its own backend; no user choice leaks in from the machine running it."""
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # keyring's config file
    before = keyring.get_keyring()
    yield
    keyring.set_keyring(before)


def use(backend: Any) -> Any:
    keyring.set_keyring(backend)
    return backend


def all_operations_fail(secrets: KeyringSecrets) -> list[str]:
    messages = []
    for operation in (
        lambda: secrets.get("imap-password:a@example.org"),
        lambda: secrets.set("imap-password:a@example.org", "hunter2"),
        lambda: secrets.delete("imap-password:a@example.org"),
    ):
        with pytest.raises(SecretStoreUnavailable) as caught:
            operation()
        messages.append(str(caught.value))
    return messages


@pytest.mark.parametrize("backend", [fail.Keyring, null.Keyring])
def test_fail_and_null_backends_are_refused_with_a_fix(backend: type[Any]) -> None:
    use(backend())
    for message in all_operations_fail(KeyringSecrets("p1")):
        assert "cannot keep secrets" in message
        assert "Fix:" in message
        assert "PYTHON_KEYRING_BACKEND" in message
        assert "hunter2" not in message


def test_the_null_backend_is_refused_even_when_named_explicitly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    use(null.Keyring())
    verdict = current_verdict()
    assert verdict.explicit is True
    assert verdict.usable is None
    all_operations_fail(KeyringSecrets("p1"))


def test_a_backend_keyring_does_not_recommend_is_refused_and_gets_nothing() -> None:
    plain = use(backend_class(0.5)())
    messages = all_operations_fail(KeyringSecrets("p1"))
    assert "not one keyring recommends" in messages[0]
    assert "plain file" in messages[0]
    assert plain.stored == {}  # no silent fallback


def test_a_backend_named_in_the_environment_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = use(backend_class(0.5)())
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", qualified_name(plain))
    secrets = KeyringSecrets("p1")
    secrets.set("imap-password:a@example.org", "hunter2")
    assert secrets.get("imap-password:a@example.org") == "hunter2"
    assert plain.stored == {(SERVICE_PREFIX + "p1", "imap-password:a@example.org"): "hunter2"}
    assert current_verdict().explicit is True


def test_a_backend_named_in_keyrings_config_file_is_respected(tmp_path: Path) -> None:
    plain = use(backend_class(0.5)())
    config = tmp_path / "config" / "python_keyring" / "keyringrc.cfg"
    config.parent.mkdir(parents=True)
    config.write_text(f"[backend]\ndefault-keyring = {qualified_name(plain)}\n")
    KeyringSecrets("p1").set("device-key:a@example.org", "k")
    assert plain.stored


def test_a_recommended_backend_keeps_each_instance_apart() -> None:
    good = use(backend_class(5)())
    one, two = KeyringSecrets("profile-one"), KeyringSecrets("profile-two")
    one.set("imap-password:a@example.org", "first")
    two.set("imap-password:a@example.org", "second")
    assert one.get("imap-password:a@example.org") == "first"
    assert two.get("imap-password:a@example.org") == "second"
    assert set(good.stored) == {
        ("autocrypt-sma/profile-one", "imap-password:a@example.org"),
        ("autocrypt-sma/profile-two", "imap-password:a@example.org"),
    }
    one.delete("imap-password:a@example.org")
    one.delete("imap-password:a@example.org")  # not there: not an error
    assert one.get("imap-password:a@example.org") is None
    assert current_verdict().explicit is False


def test_a_chainer_uses_its_best_recommended_member_only(monkeypatch: pytest.MonkeyPatch) -> None:
    good, plain = backend_class(5)(), backend_class(0.5)()
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [good, plain])
    use(chainer.ChainerBackend())
    KeyringSecrets("p1").set("account-key:a@example.org", "armored")
    assert good.stored
    assert not plain.stored
    assert current_verdict().usable is good


def test_a_chainer_of_unrecommended_backends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = backend_class(0.5)()
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [plain])
    use(chainer.ChainerBackend())
    all_operations_fail(KeyringSecrets("p1"))
    assert not plain.stored


class Blocking(keyring.backend.KeyringBackend):
    """Like a locked Secret Service waiting for an unlock prompt nobody answers."""

    priority = 5  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait(10)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(10)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(10)


Blocking._classes.discard(Blocking)  # never a candidate for keyring's own choice


def timed(call: Callable[[], object]) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(SecretStoreUnavailable) as caught:
        call()
    return time.monotonic() - started, str(caught.value)


def test_a_locked_keyring_is_a_clear_error_within_the_timeout_not_a_hang() -> None:
    backend = use(Blocking())
    secrets = KeyringSecrets("p1", timeout=0.2)
    try:
        elapsed, message = timed(lambda: secrets.get("imap-password:a@example.org"))
        assert 0.15 < elapsed < 2
        assert "locked" in message
        assert "Fix: unlock it" in message
        # Calls that are still stuck are bounded: past the limit, the next fails at once.
        for _ in range(keyring_secrets.MAX_STUCK_CALLS - 1):
            timed(lambda: secrets.set("imap-password:a@example.org", "hunter2"))
        elapsed, message = timed(lambda: secrets.get("imap-password:a@example.org"))
        assert elapsed < 0.1
        assert "locked" in message
    finally:
        backend.release.set()
    # Once unlocked, the stuck calls finish and the keyring is used again.
    deadline = time.monotonic() + 5
    while keyring_secrets._stuck_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keyring_secrets._stuck_calls == 0
    assert secrets.get("imap-password:a@example.org") is None


def test_the_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMA_KEYRING_TIMEOUT", "1.5")
    assert KeyringSecrets("p1").timeout == 1.5
    monkeypatch.setenv("SMA_KEYRING_TIMEOUT", "nonsense")
    assert KeyringSecrets("p1").timeout == keyring_secrets.DEFAULT_TIMEOUT
    monkeypatch.setenv("SMA_KEYRING_TIMEOUT", "0")
    assert KeyringSecrets("p1").timeout == keyring_secrets.DEFAULT_TIMEOUT


class Failing(keyring.backend.KeyringBackend):
    """A backend that raises; the exception text even carries what it was given."""

    priority = 5  # type: ignore[assignment]

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def get_password(self, service: str, username: str) -> str | None:
        raise self.error

    def set_password(self, service: str, username: str, password: str) -> None:
        raise type(self.error)(f"could not store {password}")

    def delete_password(self, service: str, username: str) -> None:
        raise self.error


Failing._classes.discard(Failing)


def test_a_keyring_that_stays_locked_says_so() -> None:
    use(Failing(keyring.errors.KeyringLocked("Failed to unlock the collection!")))
    message = timed(lambda: KeyringSecrets("p1").get("x"))[1]
    assert "locked and was not unlocked" in message
    assert "Fix: unlock it" in message


def test_a_failing_keyring_never_echoes_what_it_was_given() -> None:
    use(Failing(keyring.errors.PasswordSetError("boom")))
    message = timed(lambda: KeyringSecrets("p1").set("imap-password:a", "hunter2"))[1]
    assert "hunter2" not in message
    assert "PasswordSetError" in message
    assert "Fix:" in message


def test_account_configure_answers_keyring_unavailable_and_writes_nothing(
    tmp_path: Path,
) -> None:
    use(fail.Keyring())

    class Store:
        def list_folders(self, prefix: str) -> list[str]:
            return []

        def close(self) -> None:
            pass

    service = InstanceService(
        tmp_path / "instance",
        KeyringSecrets("p1"),
        lambda name, data: None,
        open_store=lambda settings, password: Store(),  # type: ignore[arg-type,return-value]
        clock=FakeClock(),
        random=SeededRandom(1),
    )
    with pytest.raises(HostError) as caught:
        service.configure(
            "a@example.org", ImapSettings("imap.example.org", 993, "tls", "a"), "hunter2"
        )
    assert caught.value.code == ErrorCode.KEYRING_UNAVAILABLE
    assert "Fix:" in caught.value.message
    assert service.accounts() == []
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or b"hunter2" not in path.read_bytes()
    assert password_name("a@example.org") not in str(caught.value)


class ItemNotFoundException(Exception):
    """What secretstorage raises when an item is deleted between its search and its read."""


def test_an_item_deleted_while_being_read_is_not_there_not_a_broken_keyring() -> None:
    use(Failing(ItemNotFoundException("gone")))
    assert KeyringSecrets("p1").get("imap-password:a") is None
    use(Failing(RuntimeError("the bus went away")))
    with pytest.raises(SecretStoreUnavailable):
        KeyringSecrets("p1").get("imap-password:a")
