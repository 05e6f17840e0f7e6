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
