"""Setting up from what Thunderbird already knows (issue 18), in a real headless Thunderbird: an IMAP
account on Dovecot whose password Thunderbird has saved in its login manager. The options page
lists the account; "Use with Autocrypt SMA" plus the consent sets it up and joins; no field is
typed; the host logs in with the password Thunderbird handed over. The consent is enforced by
Thunderbird itself: a click a script makes (not the user's) gets no password.

Real parts: Dovecot on loopback, Debian's Thunderbird under Marionette, the add-on with its
autocryptAccounts Experiment, the host from `autocrypt-sma install`, the test's Secret Service.
"""

from __future__ import annotations

import imaplib
import os
from pathlib import Path

from tests.e2e.options_page import OPTIONS, join_as_first_device, page
from tests.e2e.thunderbird import ROOT, Thunderbird
from tests.servers.dovecot_server import DovecotServer

ARTIFACTS = Path(os.environ.get("SMA_ARTIFACTS", ROOT / "artifacts" / "e2e"))


def user_click(tb: Thunderbird, selector: str) -> bool:
    """Click as a person does. A click dispatched from chrome code is a trusted event, and Gecko
    counts it as user input (what the Experiment's requireUserInput asks for), as a mouse click."""
    clicked: bool = page(
        tb,
        f"""
        const button = doc.querySelector('{selector}');
        if (!button || button.disabled) return null;
        button.click();
        return true;""",
    )
    return clicked


def test_saved_password_account_set_up_with_one_click_and_consent(
    tmp_path: Path, dovecot: DovecotServer, host_thunderbird: Thunderbird
) -> None:
    tb = host_thunderbird
    user, password = dovecot.new_account()
    address = f"{user}@example.org"
    tb.add_imap_account(
        user=user,
        password=None,
        address=address,
        host=dovecot.host,
        port=dovecot.port,
        check_mail=False,
    )
    found = tb.save_login(host=dovecot.host, user=user, password=password)
    assert found == password, f"Thunderbird's own lookup of the saved password: {found!r}"
    tb.install_addon()

    row = '#tb-accounts li[data-state="new"] button.use'
    listed = page(
        tb,
        f"""
        if (doc.getElementById("status").dataset.state !== "connected") return null;
        const li = doc.querySelector('{row}')?.closest("li");
        return li ? li.textContent : null;""",
        60,
    )
    assert address in listed, listed
    assert "Not set up" in listed, listed

    page(tb, f"doc.querySelector('{row}').click(); return true;")
    consent = page(
        tb,
        """
        const step = doc.querySelector("#tb-accounts .step");
        return step && step.querySelector("button.consent") ? step.textContent : null;""",
    )
    assert f"saved password for {dovecot.host}" in consent, consent
    assert "keyring" in consent, consent

    # Without the user's click, Thunderbird does not hand the password out: the page's own call
    # outside any input handler is refused by the Experiment's schema (requireUserInput).
    account_id = page(tb, 'return doc.querySelector("#tb-accounts li").dataset.accountId;')
    tb.client.timeout.script = 30
    refused = tb.client.execute_async_script(
        """
        const [url, id, resolve] = arguments;
        const tabmail = Services.wm.getMostRecentWindow("mail:3pane")
          .document.getElementById("tabmail");
        const info = tabmail.tabInfo.find(t => t.browser?.currentURI?.spec === url);
        const page = info.browser.contentWindow.wrappedJSObject;
        page.messenger.autocryptAccounts.savedPassword(id).then(
          r => resolve("handed out: " + typeof r?.password), e => resolve(String(e?.message ?? e)));
        """,
        script_args=[tb.addon_page(OPTIONS), account_id],
    )
    assert "user input" in refused, refused

    assert user_click(tb, "#tb-accounts button.consent"), "the consent button is not there"
    done = page(
        tb,
        """
        const r = doc.getElementById("tb-result");
        if (r.className === "error") return ["error", r.textContent];
        if (r.className !== "ok") return null;
        if (doc.getElementById("join-section").hidden) return null;
        return ["ok", r.textContent, doc.getElementById("account").value];""",
        60,
    )
    assert done[0] == "ok", f"one-click set-up: {done[1]}"
    assert done[2] == address

    # The host has the account with Thunderbird's settings; nothing was typed anywhere.
    listed_host = tb.call_host("account.list", {})["accounts"]
    assert [a["account"] for a in listed_host] == [address]
    imap = listed_host[0]["imap"]
    assert (imap["host"], imap["port"], imap["security"], imap["username"]) == (
        dovecot.host,
        dovecot.port,
        "none",
        user,
    )
    typed = page(
        tb,
        """
        const q = id => doc.getElementById(id);
        return {password: q("imap-password").value, manual_open: q("manual-settings").open,
                step: Boolean(doc.querySelector("#tb-accounts .step"))};""",
    )
    assert typed == {"password": "", "manual_open": False, "step": False}, typed

    # Join as the first device (the user's answer; the name is the page's default).
    join_as_first_device(tb)
    state = page(
        tb,
        """
        const li = doc.querySelector("#tb-accounts li");
        return li?.dataset.state === "joined" ? li.textContent : null;""",
    )
    assert "In use" in state, state
    tb.show_tab(tb.addon_page(OPTIONS))
    tb.screenshot(ARTIFACTS / "options-tb-account-joined.png")

    # The host logged in with Thunderbird's password: the SMA's folders are on the server.
    with imaplib.IMAP4(dovecot.host, dovecot.port) as imap_client:
        imap_client.login(user, password)
        _, folders = imap_client.list()
    names = b"\n".join(f for f in folders if isinstance(f, bytes))
    assert b"Autocrypt" in names, names
    assert [d["self"] for d in tb.call_host("devices.list", {"account": address})["devices"]] == [
        True
    ]
