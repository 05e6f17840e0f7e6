"""SecretStore on the OS keyring (Secret Service, macOS Keychain, Windows Credential Locker).

Fails closed: with no usable backend every call raises SecretStoreUnavailable, whose message says
how to fix it; a secret is never written anywhere else. "Usable" is keyring's own judgement: a
backend it recommends (priority 1 or more), never its `fail` or `null` backends. A backend the
user named explicitly (`PYTHON_KEYRING_BACKEND`, or keyring's config file) is respected even if
keyring would not pick it, because that is the user's informed choice; one that keyring merely
fell back to is not, since that is how secrets end up in a plain file nobody asked for.

A locked keyring may block a call until someone answers an unlock prompt, possibly forever on a
machine with no one watching; every call therefore runs on a helper thread and gives up after
`SMA_KEYRING_TIMEOUT` seconds with an error that says the keyring is probably locked.

Entries live under one service name per instance (`autocrypt-sma/<instance>`), so two
Thunderbird profiles on one computer never collide.
"""

from __future__ import annotations

import configparser
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from native_host.ports import SecretStoreUnavailable

SERVICE_PREFIX = "autocrypt-sma/"
_UNUSABLE_MODULES = ("keyring.backends.fail", "keyring.backends.null")
_CHAINER = "keyring.backends.chainer.ChainerBackend"
RECOMMENDED_PRIORITY = 1.0  # keyring.core.recommended(): what keyring itself calls recommended
DEFAULT_TIMEOUT = 20.0  # long enough to type a password into an unlock prompt
MAX_STUCK_CALLS = 4  # calls still blocked after their timeout; beyond it, fail at once

T = TypeVar("T")


def keyring_timeout() -> float:
    """Seconds one keyring call may take ($SMA_KEYRING_TIMEOUT, 0.1 to 600)."""
    try:
        value = float(os.environ.get("SMA_KEYRING_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if 0.1 <= value <= 600 else DEFAULT_TIMEOUT


def how_to_fix(platform: str | None = None) -> str:
    """The fix for "no usable keyring", in the words of the user's platform ("Fix: ...")."""
    return "Fix: " + fix_words(platform)


def fix_words(platform: str | None = None, *, mention_doctor: bool = True) -> str:
    """The fix itself; `doctor` leaves out the sentence that points to doctor."""
    platform = platform or sys.platform
    if platform == "darwin":
        where = "the login Keychain must exist and be unlocked (see Keychain Access)"
    elif platform.startswith("win"):
        where = "Windows Credential Manager must be reachable for your user account"
    else:
        where = (
            "run a Secret Service in your desktop session (GNOME Keyring, KWallet, or KeePassXC "
            "with its Secret Service integration on)"
        )
    doctor = " `autocrypt-sma doctor` shows what is found." if mention_doctor else ""
    return (
        f"{where[0].upper()}{where[1:]}, or name a keyring backend explicitly in "
        f"PYTHON_KEYRING_BACKEND.{doctor} Secrets are never stored anywhere else."
    )


def locked_message(seconds: float) -> str:
    return (
        f"the OS keyring did not answer within {seconds:g} s: it is probably locked and waiting "
        "for someone to unlock it. Fix: unlock it (on Linux the 'Login' keyring, for example in "
        "Passwords and Keys, or log in to the desktop session again) and try again."
    )


def qualified_name(backend: object) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def explicit_choices() -> set[str]:
    """Backend class names the user chose: $PYTHON_KEYRING_BACKEND and keyring's config file."""
    names = set()
    from_env = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip()
    if from_env:
        names.add(from_env)
    try:
        from keyring.util import platform_

        config = configparser.RawConfigParser()
        config.read(platform_.config_root() / "keyringrc.cfg", encoding="utf-8")
        if config.has_option("backend", "default-keyring"):
            names.add(config.get("backend", "default-keyring").strip())
    except (OSError, configparser.Error, ImportError):
        pass
    return names


@dataclass(frozen=True)
class BackendVerdict:
    """What keyring offers and whether we may use it (doctor prints this)."""

    name: str  # the backend keyring chose
    explicit: bool  # named by the user
    usable: Any  # the backend to use (a chainer's best member), or None
    problem: str | None  # why not, in plain words

    @property
    def usable_name(self) -> str | None:
        return qualified_name(self.usable) if self.usable is not None else None


def _priority(backend: object) -> float:
    value = type(backend).priority  # type: ignore[attr-defined]
    return float(value)


def judge(backend: object) -> BackendVerdict:
    """Decide whether `backend` may hold our secrets (see the module's docstring)."""
    name = qualified_name(backend)
    explicit = name in explicit_choices()
    if type(backend).__module__ in _UNUSABLE_MODULES:
        return BackendVerdict(
            name, explicit, None, f"keyring's backend is {name}, which cannot keep secrets"
        )
    if explicit:
        return BackendVerdict(name, True, backend, None)
    if name == _CHAINER:
        try:
            members = list(type(backend).backends)  # type: ignore[attr-defined]
            best = [m for m in members if _priority(m) >= RECOMMENDED_PRIORITY]
        except Exception as exc:
            return BackendVerdict(name, False, None, f"keyring failed: {type(exc).__name__}")
        if not best:
            return BackendVerdict(name, False, None, "keyring found no recommended backend")
        return BackendVerdict(name, False, best[0], None)  # the best alone: no fallback chain
    try:
        priority = _priority(backend)
    except Exception as exc:
        return BackendVerdict(name, False, None, f"{name} is not usable here: {exc}"[:300])
    if priority < RECOMMENDED_PRIORITY:
        return BackendVerdict(
            name,
            False,
            None,
            f"keyring's backend {name} is not one keyring recommends (priority {priority:g}); "
            "it may keep secrets in a plain file",
        )
    return BackendVerdict(name, False, backend, None)


_verdict_lock = threading.Lock()
_verdict_cache: tuple[object, BackendVerdict] | None = None  # (backend judged, verdict)
_stuck_lock = threading.Lock()
_stuck_calls = 0


def current_verdict() -> BackendVerdict:
    """The verdict on keyring's current backend, judged once per backend object (judging the
    Secret Service costs a D-Bus round trip)."""
    global _verdict_cache
    import keyring

    try:
        backend = keyring.get_keyring()
    except Exception as exc:
        return BackendVerdict("none", False, None, f"keyring could not load a backend: {exc}")
    with _verdict_lock:
        if _verdict_cache is not None and _verdict_cache[0] is backend:
            return _verdict_cache[1]
        verdict = judge(backend)
        _verdict_cache = (backend, verdict)
        return verdict


def usable_backend() -> Any:
    verdict = current_verdict()
    if verdict.usable is None:
        raise SecretStoreUnavailable(f"no usable OS keyring: {verdict.problem}. {how_to_fix()}")
    return verdict.usable


def _start_thread(target: Callable[[], None]) -> None:
    """A daemon thread that never takes the host's SIGTERM (see native_host.threads)."""
    thread = threading.Thread(target=target, name="keyring-call", daemon=True)
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def call_with_timeout(fn: Callable[[], T], timeout: float) -> T:
    """Run one keyring call on a helper thread; SecretStoreUnavailable if it is not back in time.

    A call that timed out stays blocked (nothing can cancel a D-Bus prompt wait); while
    MAX_STUCK_CALLS of those are pending, further calls fail at once instead of piling up.
    """
    global _stuck_calls
    with _stuck_lock:
        if _stuck_calls >= MAX_STUCK_CALLS:
            raise SecretStoreUnavailable(locked_message(timeout))
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        global _stuck_calls
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            with _stuck_lock:
                if box.get("late"):
                    _stuck_calls -= 1
                done.set()

    _start_thread(work)
    if not done.wait(timeout):
        with _stuck_lock:
            if not done.is_set():
                box["late"] = True
                _stuck_calls += 1
                raise SecretStoreUnavailable(locked_message(timeout))
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


class KeyringSecrets:
    def __init__(self, instance: str, *, timeout: float | None = None) -> None:
        self.service = SERVICE_PREFIX + instance
        self.timeout = keyring_timeout() if timeout is None else timeout

    def _call(self, operation: Callable[[Any], T]) -> T:
        import keyring.errors

        backend = usable_backend()
        try:
            return call_with_timeout(lambda: operation(backend), self.timeout)
        except SecretStoreUnavailable:
            raise
        except keyring.errors.KeyringLocked:
            raise SecretStoreUnavailable(
                "the OS keyring is locked and was not unlocked. Fix: unlock it (on Linux the "
                "'Login' keyring, for example in Passwords and Keys) and try again."
            ) from None
        except keyring.errors.PasswordDeleteError:
            raise
        except Exception as exc:
            # The exception's text is not shown: a backend could echo what it was given.
            raise SecretStoreUnavailable(
                f"the OS keyring failed ({type(exc).__name__}). {how_to_fix()}"
            ) from None

    def get(self, name: str) -> str | None:
        def read(backend: Any) -> str | None:
            try:
                value = backend.get_password(self.service, name)
            except Exception as exc:
                # Secret Service: the item went between the search and the read (another thread
                # or process deleted it). That is "not there", not a broken keyring.
                if type(exc).__name__ == "ItemNotFoundException":
                    return None
                raise
            return value if isinstance(value, str) else None

        return self._call(read)

    def set(self, name: str, value: str) -> None:
        self._call(lambda backend: backend.set_password(self.service, name, value))

    def delete(self, name: str) -> None:
        import keyring.errors

        try:
            self._call(lambda backend: backend.delete_password(self.service, name))
        except keyring.errors.PasswordDeleteError:
            return  # it was not there


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
