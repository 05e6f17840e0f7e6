"""What a person does on the add-on's options page in a real Thunderbird, shared by the set-up tests."""

from __future__ import annotations

from typing import Any

from tests.e2e.thunderbird import Thunderbird

OPTIONS = "options/options.html"


def page(tb: Thunderbird, script: str, timeout: float = 30.0) -> Any:
    """Poll `script` (given the options page's `doc`) until it returns something truthy."""
    return tb.read_page(tb.addon_page(OPTIONS), script, timeout)


def join_as_first_device(tb: Thunderbird) -> None:
    """Answer "Yes, this is my first device" (the device name is the page's default) and join."""
    page(
        tb,
        """
        const q = id => doc.getElementById(id);
        if (q("join-section").hidden || q("join").disabled || !q("device-name").value) return null;
        doc.querySelector('input[name="first_device"][value="yes"]').click();
        q("join").click(); return true;""",
    )
    joined = page(
        tb,
        """
        const r = doc.getElementById("join-result");
        return r.className ? [r.className, r.textContent] : null;""",
        60,
    )
    assert joined[0] == "ok", f"joining: {joined[1]}"


def use_thunderbird_account(tb: Thunderbird) -> tuple[str, bool]:
    """Click "Use with Autocrypt SMA" on the first account not set up yet and wait until the page
    offers to join: (the result text, whether the page asked anything: consent or password)."""
    page(
        tb,
        """
        if (doc.getElementById("status").dataset.state !== "connected") return null;
        const button = doc.querySelector('#tb-accounts li[data-state="new"] button.use');
        if (!button || button.disabled) return null;
        button.click(); return true;""",
        60,
    )
    done = page(
        tb,
        """
        const r = doc.getElementById("tb-result");
        if (r.className === "error") return ["error", r.textContent];
        if (r.className !== "ok" || doc.getElementById("join-section").hidden) return null;
        return ["ok", r.textContent, Boolean(doc.querySelector("#tb-accounts .step"))];""",
        60,
    )
    assert done[0] == "ok", f"one-click set-up: {done[1]}"
    return done[1], done[2]
