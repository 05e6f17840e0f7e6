"""The real parts the suite relies on are present; if one is missing this says what to install."""

from __future__ import annotations

import shutil
import uuid

import keyring
from keyring.errors import KeyringError


def test_secret_service_keyring_round_trips_a_secret() -> None:
    backend = keyring.get_keyring()
    assert "SecretService" in type(backend).__module__ + type(backend).__name__, (
        f"keyring backend is {backend!r}: run the suite through scripts/test, which starts "
        "gnome-keyring inside dbus-run-session (apt-get install gnome-keyring dbus)"
    )
    service, user = f"autocrypt-sma-test-{uuid.uuid4().hex}", "alice@example.org"
    try:
        keyring.set_password(service, user, "s3cret")
        assert keyring.get_password(service, user) == "s3cret"
    except KeyringError as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"the Secret Service refused: {exc}") from exc
    finally:
        keyring.delete_password(service, user)
    assert keyring.get_password(service, user) is None


def test_dovecot_and_thunderbird_are_installed() -> None:
    for binary, package in (("dovecot", "dovecot-imapd"), ("thunderbird", "thunderbird")):
        assert shutil.which(binary) or shutil.which(
            binary, path="/usr/sbin:/usr/lib/thunderbird"
        ), f"{binary} is missing: apt-get install {package} (scripts/test does this)"


def test_interop_corpus_tools_are_installed() -> None:
    """What scripts/make-interop-corpus and tests/interop need besides Thunderbird and Dovecot."""
    import sys
    from pathlib import Path

    for binary, package in (("gpg", "gnupg"), ("sq", "sq")):
        assert shutil.which(binary), f"{binary} is missing: apt-get install {package}"
    server = Path(sys.executable).parent / "deltachat-rpc-server"
    assert server.exists() or shutil.which("deltachat-rpc-server"), (
        "deltachat-rpc-server is missing: pip install -e '.[test]' (scripts/bootstrap test)"
    )
