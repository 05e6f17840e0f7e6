"""The add-on in a real headless Thunderbird reaches our host, or says exactly how to install it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from native_host import __version__
from tests.e2e.thunderbird import Thunderbird, install_host

READ_STATUS = """
const q = id => doc.getElementById(id);
const state = q("status")?.dataset.state;
if (state !== "connected" && state !== "host_missing") return null;
return {state, host_version: q("host-version").textContent,
        missing_shown: !q("host-missing").hidden, install: q("install-command").textContent};
"""


@pytest.fixture
def thunderbird(tmp_path: Path) -> Iterator[Thunderbird]:
    tb = Thunderbird(tmp_path)
    yield tb
    tb.quit()


def test_popup_shows_the_connected_host(tmp_path: Path, thunderbird: Thunderbird) -> None:
    install_host(tmp_path)  # Thunderbird reads the manifest when the add-on connects, not before
    thunderbird.install_addon()
    status = thunderbird.read_page(thunderbird.addon_page("popup/popup.html"), READ_STATUS)
    thunderbird.screenshot(tmp_path / "popup-connected.png")
    assert status["state"] == "connected", status
    assert status["host_version"] == __version__


def test_popup_without_a_host_shows_the_install_command(thunderbird: Thunderbird) -> None:
    thunderbird.install_addon()
    status = thunderbird.read_page(thunderbird.addon_page("popup/popup.html"), READ_STATUS)
    assert status["state"] == "host_missing", status
    assert status["missing_shown"] is True
    assert status["install"] == "autocrypt-sma install"
