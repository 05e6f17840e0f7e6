"""Drive a real headless Thunderbird (the Debian package) through Marionette, one HOME per instance."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from native_host.client import ADDON_ID, HOST_NAME

ROOT = Path(__file__).resolve().parents[2]
THUNDERBIRD = "/usr/lib/thunderbird/thunderbird"
PREFS = {
    "extensions.webextensions.remote": False,  # add-on pages live in the chrome process: reachable
    "mail.provider.suppress_dialog_on_startup": True,
    "mail.shell.checkDefaultClient": False,
}


def require_thunderbird() -> None:
    if not Path(THUNDERBIRD).exists():
        raise AssertionError(
            f"{THUNDERBIRD} is missing: apt-get install thunderbird (scripts/test does this)"
        )
    try:
        import marionette_driver  # noqa: F401
    except ImportError as exc:
        raise AssertionError("marionette_driver is missing: pip install -e '.[test]'") from exc


def install_host_manifest(home: Path, sma_home: Path) -> Path:
    """What the installer will do: a launcher pinning this interpreter, and the manifest naming it."""
    launcher = home / "autocrypt-sma-host"
    launcher.write_text(
        f'#!/bin/sh\nSMA_HOME="{sma_home}" exec "{sys.executable}" -m native_host "$@"\n'
    )
    launcher.chmod(0o755)
    hosts = home / ".mozilla" / "native-messaging-hosts"
    hosts.mkdir(parents=True)
    manifest = {
        "name": HOST_NAME,
        "description": "autocrypt-sma test host",
        "path": str(launcher),
        "type": "stdio",
        "allowed_extensions": [ADDON_ID],
    }
    path = hosts / f"{HOST_NAME}.json"
    path.write_text(json.dumps(manifest))
    return path


class Thunderbird:
    def __init__(self, home: Path) -> None:
        require_thunderbird()
        from marionette_driver.marionette import Marionette

        self.home = home
        old_home = os.environ.get("HOME")
        os.environ["HOME"] = str(home)  # Thunderbird reads native-messaging manifests from here
        try:
            self.client = Marionette(
                bin=THUNDERBIRD,
                headless=True,
                app="thunderbird",
                app_args=["-remote-allow-system-access"],
                prefs=PREFS,
                gecko_log=str(home / "gecko.log"),
            )
            self.client.start_session()
        finally:
            if old_home is not None:
                os.environ["HOME"] = old_home
        self.client.set_context("chrome")

    def install_addon(self) -> None:
        from marionette_driver.addons import Addons

        Addons(self.client).install(str(ROOT / "extension"), temp=True)

    def addon_page(self, page: str) -> str:
        host = self.client.execute_script(
            f'return WebExtensionPolicy.getByID("{ADDON_ID}").mozExtensionHostname;'
        )
        return f"moz-extension://{host}/{page}"

    def read_page(self, url: str, script: str, timeout: float = 30.0) -> Any:
        """Open `url` in a tab (once) and poll `script` (given the page's document) until truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.client.execute_script(
                """
                const [url, body] = arguments;
                const win = Services.wm.getMostRecentWindow("mail:3pane");
                const tabmail = win.document.getElementById("tabmail");
                const info = tabmail.tabInfo.find(t => t.browser?.currentURI?.spec === url);
                if (!info) { tabmail.openTab("contentTab", {url}); return null; }
                const doc = info.browser.contentDocument;
                if (!doc || doc.readyState !== "complete") return null;
                return new Function("doc", body)(doc);
                """,
                script_args=[url, script],
            )
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{url}: nothing to read within {timeout} s")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(self.client.screenshot(format="binary"))

    def quit(self) -> None:
        self.client.cleanup()
        shutil.rmtree(self.home / ".cache", ignore_errors=True)
