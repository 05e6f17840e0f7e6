"""Drive a real headless Thunderbird (the Debian package) through Marionette, one HOME per instance.

Each instance gets its own HOME, so the native-messaging manifest `autocrypt-sma install` writes
there, the host's data directory and the add-on's profile are all private to it; the OS keyring
(one Secret Service on the test's D-Bus session) is shared, its entries are named per instance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from native_host.cli.client import ADDON_ID

ROOT = Path(__file__).resolve().parents[2]
THUNDERBIRD = "/usr/lib/thunderbird/thunderbird"
XPI = ROOT / "extension" / "dist" / "autocrypt-sma.xpi"
PREFS = {
    "extensions.webextensions.remote": False,  # add-on pages live in the chrome process: reachable
    "mail.provider.suppress_dialog_on_startup": True,
    "mail.shell.checkDefaultClient": False,
    "mailnews.start_page.enabled": False,
    "mail.rights.override": True,  # no "know your rights" bar over the screenshots
}
# Variables that would point two instances at one data directory, whatever their HOME.
_SHARED_DIRS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "SMA_HOME")


def require_thunderbird() -> None:
    if not Path(THUNDERBIRD).exists():
        raise AssertionError(
            f"{THUNDERBIRD} is missing: apt-get install thunderbird (scripts/test does this)"
        )
    try:
        import marionette_driver  # noqa: F401
    except ImportError as exc:
        raise AssertionError("marionette_driver is missing: pip install -e '.[test]'") from exc


def home_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SHARED_DIRS}
    env["HOME"] = str(home)
    return env


def install_host(home: Path) -> str:
    """Install the native-messaging manifest into `home` exactly as a user does."""
    command = Path(sys.executable).parent / "autocrypt-sma"
    if not command.exists():
        raise AssertionError(f"{command} is missing: pip install -e . (scripts/test does this)")
    done = subprocess.run(
        [str(command), "install", "--app", "thunderbird"],
        env=home_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"autocrypt-sma install failed:\n{done.stdout}\n{done.stderr}"
    manifest = home / ".mozilla" / "native-messaging-hosts" / "org.autocrypt.sma.json"
    assert manifest.is_file(), (
        f"autocrypt-sma install wrote no manifest at {manifest}:\n{done.stdout}"
    )
    return done.stdout


def build_xpi() -> Path:
    """Pack the add-on as users get it (extension/scripts/build-xpi.mjs)."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is missing: apt-get install nodejs (scripts/test does this)")
    done = subprocess.run(
        [node, str(ROOT / "extension" / "scripts" / "build-xpi.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"building the .xpi failed:\n{done.stderr}"
    assert XPI.is_file(), f"build-xpi.mjs wrote no {XPI}"
    return XPI


def _instance_class() -> type:
    """Thunderbird's Marionette instance, started with its own HOME (Marionette copies os.environ,
    which threads starting instances in parallel cannot each change)."""
    from marionette_driver import geckoinstance

    class IsolatedThunderbird(geckoinstance.ThunderbirdInstance):  # type: ignore[misc]
        def __init__(self, *args: Any, home: str, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.home = home

        def _get_runner_args(self) -> dict[str, Any]:
            args: dict[str, Any] = super()._get_runner_args()
            args["env"] = {
                **home_env(Path(self.home)),
                **{k: v for k, v in args["env"].items() if k.startswith("MOZ_") or k == "DISPLAY"},
            }
            return args

    geckoinstance.apps["thunderbird-isolated"] = IsolatedThunderbird
    return IsolatedThunderbird


class Thunderbird:
    def __init__(self, home: Path) -> None:
        require_thunderbird()
        from marionette_driver.marionette import Marionette

        _instance_class()
        self.home = home
        self.client = Marionette(
            bin=THUNDERBIRD,
            port=0,  # a free port: several instances run at once
            headless=True,
            app="thunderbird-isolated",
            app_args=["-remote-allow-system-access"],
            prefs=PREFS,
            gecko_log=str(home / "gecko.log"),
            home=str(home),
        )
        self.client.start_session()
        self.client.set_context("chrome")

    @staticmethod
    def start_many(homes: Sequence[Path]) -> list[Thunderbird]:
        """Start instances in parallel; if one fails, the others are shut down."""
        with ThreadPoolExecutor(len(homes)) as pool:
            futures = [pool.submit(Thunderbird, home) for home in homes]
        started = [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for tb in started:
                tb.quit()
            raise AssertionError(f"Thunderbird did not start: {failed[0]!r}") from failed[0]
        return started

    def install_addon(self, path: Path | None = None) -> None:
        from marionette_driver.addons import Addons

        Addons(self.client).install(str(path or ROOT / "extension"), temp=True)

    def add_imap_account(
        self,
        *,
        user: str,
        password: str | None,
        address: str,
        host: str,
        port: int,
        check_mail: bool,
        oauth2: bool = False,
    ) -> None:
        """A plain IMAP account in Thunderbird's own account manager, as its own tests create one.
        With `check_mail` off, this Thunderbird never fetches mail by itself. With `password`
        None, Thunderbird holds none in memory (see `save_login`); with `oauth2`, it signs in
        with OAuth2 (see `add_oauth2_provider`)."""
        self.client.execute_script(
            """
            const [user, password, address, host, port, check, oauth2] = arguments;
            const { MailServices } = ChromeUtils.importESModule(
              "resource:///modules/MailServices.sys.mjs");
            const server = MailServices.accounts.createIncomingServer(user, host, "imap");
            server.port = port;
            server.socketType = Ci.nsMsgSocketType.plain;
            server.authMethod = oauth2 ? Ci.nsMsgAuthMethod.OAuth2
                                       : Ci.nsMsgAuthMethod.passwordCleartext;
            if (password !== null) server.password = password;
            server.doBiff = check;
            server.loginAtStartUp = check;
            server.downloadOnBiff = check;
            const identity = MailServices.accounts.createIdentity();
            identity.email = address;
            const account = MailServices.accounts.createAccount();
            account.incomingServer = server;
            account.addIdentity(identity);
            """,
            script_args=[user, password, address, host, port, check_mail, oauth2],
        )

    def add_oauth2_provider(
        self, *, issuer: str, hostnames: list[str], token_url: str, scope: str
    ) -> None:
        """Register a custom OAuth2 provider, as an add-on's `oauth_provider` manifest entry does
        (Thunderbird 140 and later): mail servers with these host names sign in with it."""
        self.client.execute_script(
            """
            const [issuer, hostnames, tokenUrl, scope] = arguments;
            const { OAuth2Providers } = ChromeUtils.importESModule(
              "resource:///modules/OAuth2Providers.sys.mjs");
            OAuth2Providers.registerProvider({
              name: issuer, clientId: "thunderbird-e2e",
              authorizationEndpoint: tokenUrl.replace(/token$/, "authorize"),
              tokenEndpoint: tokenUrl,
            }, hostnames, scope);
            """,
            script_args=[issuer, hostnames, token_url, scope],
        )

    def save_refresh_token(self, *, issuer: str, user: str, scope: str, token: str) -> None:
        """Seed a refresh token where Thunderbird's OAuth2Module keeps it (login manager, origin
        oauth://<issuer>, realm = the scopes): Thunderbird then signs in without a window."""
        self.client.timeout.script = 30
        self.client.execute_async_script(
            """
            const [issuer, user, scope, token, resolve] = arguments;
            const login = Cc["@mozilla.org/login-manager/loginInfo;1"]
              .createInstance(Ci.nsILoginInfo);
            login.init("oauth://" + issuer, null, scope, user, token, "", "");
            Services.logins.addLoginAsync(login).then(() => resolve(true), e => resolve(String(e)));
            """,
            script_args=[issuer, user, scope, token],
        )

    def save_login(self, *, host: str, user: str, password: str) -> str:
        """Save an IMAP password in Thunderbird's login manager, as "Use Password Manager to
        remember this password" does; returns what Thunderbird itself then finds for the server
        (its own lookup, so the test knows the entry is where Thunderbird looks)."""
        self.client.timeout.script = 30
        found: str = self.client.execute_async_script(
            """
            const [host, user, password, resolve] = arguments;
            (async () => {
              const origin = "imap://" + host;
              const login = Cc["@mozilla.org/login-manager/loginInfo;1"]
                .createInstance(Ci.nsILoginInfo);
              login.init(origin, null, origin, user, password, "", "");
              await Services.logins.addLoginAsync(login);
              const { MailServices } = ChromeUtils.importESModule(
                "resource:///modules/MailServices.sys.mjs");
              const server = MailServices.accounts.findServer(user, host, "imap");
              // Reading this makes Thunderbird look its password up (MsgIncomingServer).
              if (server.passwordPromptRequired) return "Thunderbird found no saved password";
              return server.password;
            })().then(resolve, e => resolve("error: " + e));
            """,
            script_args=[host, user, password],
        )
        return found

    def check_mail(self) -> None:
        """What "Get Messages" does, for every account."""
        self.client.execute_script(
            """
            const { MailServices } = ChromeUtils.importESModule(
              "resource:///modules/MailServices.sys.mjs");
            for (const a of MailServices.accounts.accounts) {
              const inbox = a.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
              if (inbox) inbox.getNewMessages(null, null);
            }
            """
        )

    def inbox_size(self) -> int:
        """How many messages this Thunderbird holds in its accounts' inboxes."""
        count: int = self.client.execute_script(
            """
            const { MailServices } = ChromeUtils.importESModule(
              "resource:///modules/MailServices.sys.mjs");
            let n = 0;
            for (const a of MailServices.accounts.accounts) {
              const inbox = a.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
              if (inbox) n += inbox.getTotalMessages(false);
            }
            return n;
            """
        )
        return count

    def openpgp_key(self, fingerprint: str, email: str) -> dict[str, Any]:
        """What Thunderbird's own OpenPGP key store holds for this key, read straight from it."""
        self.client.timeout.script = 30
        state: dict[str, Any] = self.client.execute_async_script(
            """
            const [fpr, email, resolve] = arguments;
            (async () => {
              const { EnigmailKeyRing } = ChromeUtils.importESModule(
                "chrome://openpgp/content/modules/keyRing.sys.mjs");
              const { PgpSqliteDb2 } = ChromeUtils.importESModule(
                "chrome://openpgp/content/modules/sqliteDb.sys.mjs");
              const { MailServices } = ChromeUtils.importESModule(
                "resource:///modules/MailServices.sys.mjs");
              const key = EnigmailKeyRing.getKeyById("0x" + fpr);
              const ids = MailServices.accounts.allIdentities.filter(
                i => (i.email || "").toLowerCase() === email.toLowerCase());
              return {
                present: Boolean(key),
                secret: Boolean(key?.secretAvailable),
                personal: await PgpSqliteDb2.isAcceptedAsPersonalKey(fpr),
                acceptance: key && !key.secretAvailable
                  ? await EnigmailKeyRing.getKeyAcceptanceForEmail(key, email) : null,
                identity_key_ids: ids.map(i => i.getUnicharAttribute("openpgp_key_id")),
              };
            })().then(resolve, e => resolve({error: String(e)}));
            """,
            script_args=[fingerprint, email],
        )
        return state

    def message_body(self, subject: str) -> str | None:
        """Show the inbox message with this subject in the 3-pane tab, as a user clicking it
        would, and return the text of the message pane (None until it is there)."""
        body: str | None = self.client.execute_script(
            """
            const subject = arguments[0];
            const { MailServices } = ChromeUtils.importESModule(
              "resource:///modules/MailServices.sys.mjs");
            const win = Services.wm.getMostRecentWindow("mail:3pane");
            const tabmail = win.document.getElementById("tabmail");
            tabmail.switchToTab(tabmail.tabInfo[0]);
            const about3Pane = tabmail.currentAbout3Pane;
            for (const a of MailServices.accounts.accounts) {
              const inbox = a.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
              if (!inbox) continue;
              const hdr = [...inbox.messages].find(h => h.mime2DecodedSubject === subject);
              if (!hdr) continue;
              if (about3Pane.gFolder?.URI !== inbox.URI) { about3Pane.displayFolder(inbox.URI); return null; }
              const index = about3Pane.gDBView.findIndexOfMsgHdr(hdr, true);
              if (about3Pane.threadTree.selectedIndex !== index) {
                about3Pane.threadTree.selectedIndex = index; return null;
              }
              const pane = about3Pane.messageBrowser.contentWindow.getMessagePaneBrowser();
              return pane?.contentDocument?.body?.textContent ?? null;
            }
            return null;
            """,
            script_args=[subject],
        )
        return body

    def addon_page(self, page: str) -> str:
        host = self.client.execute_script(
            f'return WebExtensionPolicy.getByID("{ADDON_ID}").mozExtensionHostname;'
        )
        return f"moz-extension://{host}/{page}"

    def read_page(self, url: str, script: str, timeout: float = 30.0) -> Any:
        """Open `url` in a tab (once) and poll `script` (given the page's document) until truthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.client.execute_script(
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
            if last:
                return last
            time.sleep(0.3)
        raise AssertionError(f"{url}: nothing to read within {timeout} s (last: {last!r})")

    def show_tab(self, url: str) -> None:
        self.client.execute_script(
            """
            const tabmail = Services.wm.getMostRecentWindow("mail:3pane")
              .document.getElementById("tabmail");
            const info = tabmail.tabInfo.find(t => t.browser?.currentURI?.spec === arguments[0]);
            tabmail.switchToTab(info);
            """,
            script_args=[url],
        )

    def send(self, message: dict[str, Any], timeout: float = 30.0) -> Any:
        """runtime.sendMessage from the add-on's popup page to its background; the answer."""
        url = self.addon_page("popup/popup.html")
        self.read_page(url, "return true;", timeout)
        self.client.timeout.script = timeout
        return self.client.execute_async_script(
            """
            const [url, message, resolve] = arguments;
            const tabmail = Services.wm.getMostRecentWindow("mail:3pane")
              .document.getElementById("tabmail");
            const info = tabmail.tabInfo.find(t => t.browser?.currentURI?.spec === url);
            const page = info.browser.contentWindow.wrappedJSObject;
            page.browser.runtime.sendMessage(Cu.cloneInto(message, page)).then(
              r => resolve(JSON.parse(JSON.stringify(r ?? null))),
              e => resolve({ok: false, error: {code: "send_failed", message: String(e)}}));
            """,
            script_args=[url, message],
        )

    def call_host(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        """Ask this Thunderbird's host, through the add-on's background and its native port
        (the path the popup takes), and return the result or raise with the host's error."""
        reply = self.send({"type": "call", "method": method, "params": params}, timeout)
        if not (reply and reply.get("ok")):
            raise AssertionError(f"{method} on {self.home.name}'s host: {reply!r}")
        return reply["result"]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.client.screenshot(format="binary"))

    def quit(self) -> None:
        runner = getattr(self.client.instance, "runner", None)
        profile = getattr(runner, "profile", None)
        try:
            self.client.cleanup()
            if profile is not None:
                # Already removed; without this, its __del__ tries again at interpreter exit
                # and prints a traceback.
                profile.restore = False
        finally:
            shutil.rmtree(self.home / ".cache", ignore_errors=True)
