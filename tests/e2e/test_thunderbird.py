"""Two real headless Thunderbirds on one account: set up from the add-on's options page, pair from
the popups (A's "Add a device" shows a one-time code, the user types it into B's popup; a mistyped
code first fails on both), then a correspondent's key that Thunderbird A sees in new mail reaches
B's host through the SMA.

Everything is real: Dovecot on loopback, Debian's Thunderbird driven by Marionette, the packed
.xpi, the manifest from `autocrypt-sma install`, the hosts Thunderbird starts from it, and the
Secret Service of the test's D-Bus session. Screenshots of both popups (the code on A, the typed
code on B, the wrong-code failure on B) go to artifacts/e2e/ (or $SMA_ARTIFACTS).
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from native_host.adapters.pgp import generate_account_key, peer_key_fingerprint
from tests.e2e.thunderbird import ROOT, Thunderbird, build_xpi, install_host
from tests.host.test_keysync_imap import correspondent_mail
from tests.servers.dovecot_server import DovecotServer

ARTIFACTS = Path(os.environ.get("SMA_ARTIFACTS", ROOT / "artifacts" / "e2e"))
CAROL = "carol@example.net"
SECRET_SUBJECT = "for your eyes only"
PLAINTEXT = "The shared key works: xylophone-42."

OPTIONS = "options/options.html"
POPUP = "popup/popup.html"


@pytest.fixture
def two_thunderbirds(tmp_path: Path) -> Iterator[tuple[Thunderbird, Thunderbird]]:
    homes = [tmp_path / "laptop", tmp_path / "desktop"]
    for home in homes:
        home.mkdir()
        install_host(home)
    a, b = Thunderbird.start_many(homes)
    try:
        yield a, b
    finally:
        for tb in (a, b):
            tb.quit()


def page(tb: Thunderbird, name: str, script: str, timeout: float = 30.0) -> Any:
    return tb.read_page(tb.addon_page(name), script, timeout)


def set_up_and_join(
    tb: Thunderbird,
    server: DovecotServer,
    user: str,
    password: str,
    address: str,
    device_name: str,
    *,
    first_device: bool,
) -> None:
    """What the user does on the options page: pick the account, enter the IMAP settings, answer
    "Is this the first device you set up for this account?", join."""
    page(
        tb,
        OPTIONS,
        f"""
        const sel = doc.getElementById("account");
        if (doc.getElementById("status").dataset.state !== "connected") return null;
        if (![...sel.options].some(o => o.value === "{address}")) return null;
        sel.value = "{address}"; sel.dispatchEvent(new Event("change"));
        return true;""",
    )
    page(
        tb,
        OPTIONS,
        f"""
        const q = id => doc.getElementById(id);
        if (q("imap-form").hidden) return null;
        q("imap-host").value = "{server.host}"; q("imap-port").value = "{server.port}";
        q("imap-security").value = "none"; q("imap-username").value = "{user}";
        q("imap-password").value = "{password}"; q("save").click(); return true;""",
    )
    saved = page(
        tb,
        OPTIONS,
        """
        const r = doc.getElementById("save-result");
        return r.className ? [r.className, r.textContent, doc.getElementById("imap-password").value]
                           : null;""",
        60,
    )
    assert saved[0] == "ok", f"saving the IMAP settings: {saved[1]}"
    assert saved[2] == "", "the password field must be emptied once the host holds the password"
    page(
        tb,
        OPTIONS,
        f"""
        const q = id => doc.getElementById(id);
        if (q("join-section").hidden || q("join").disabled) return null;
        q("device-name").value = "{device_name}";
        doc.querySelector('input[name="first_device"][value="{"yes" if first_device else "no"}"]').click();
        q("join").click(); return true;""",
    )
    joined = page(
        tb,
        OPTIONS,
        """
        const q = id => doc.getElementById(id);
        const r = q("join-result");
        return r.className ? [r.className, r.textContent, q("no-other-device").hidden,
                              q("new-identity").hidden] : null;""",
        60,
    )
    assert joined[0] == "ok", f"joining: {joined[1]}"
    # A found the identity on an empty SMA; B found A there: neither notice applies.
    assert joined[2], f"'no other device found' on a device that found one: {joined[1]}"
    assert joined[3], f"'new identity' on a device that founded on an empty SMA: {joined[1]}"
    expected = "first device" if first_device else "Now pair this device"
    assert expected in joined[1], joined[1]


def add_a_device(address: str) -> str:
    """Press "Add a device" in the popup of a paired device."""
    return f"""
        const b = doc.querySelector('button[data-action="invite"][data-account="{address}"]');
        if (!b || b.hidden || b.disabled) return null; b.click(); return true;"""


def shown_code() -> str:
    """Read the one-time code from the popup's card once it shows one."""
    return """
        const card = doc.querySelector('.pairing[data-role="inviter"][data-state="inviting"]');
        const code = card && card.querySelector(".code");
        if (!code) return null;
        return {code: code.textContent, expiry: card.querySelector(".code-expiry").textContent,
                buttons: [...card.querySelectorAll("button")].map(b => b.textContent),
                page: doc.body.innerText.replace(/\\s+/g, " ")};"""


def type_code(address: str, typed: str) -> str:
    """Type the code into the new device's field (as typed, spaces and all), leave it unsent."""
    return f"""
        const input = doc.querySelector('input.code-input[data-account="{address}"]');
        if (!input) return null;
        input.focus(); input.value = "{typed}"; input.dispatchEvent(new Event("input"));
        return input.value;"""


def press_pair(address: str) -> str:
    return f"""
        const form = doc.querySelector('form[data-action="join"][data-account="{address}"]');
        const b = form && form.querySelector('button[type="submit"]');
        if (!b || b.disabled) return null; b.click(); return true;"""


def outcome(role: str, result: str) -> str:
    """The popup's text once its `role` card shows `result` (success or failure)."""
    return f"""
        const c = doc.querySelector('.pairing[data-role="{role}"][data-outcome="{result}"]');
        return c ? {{card: c.innerText.replace(/\\s+/g, " "), failure: c.dataset.failure || null,
                    page: doc.body.innerText.replace(/\\s+/g, " ")}} : null;"""


def deliver(server: DovecotServer, user: str, password: str, raw: bytes) -> None:
    """A mail arriving in the account's INBOX, appended over IMAP as a delivery agent would."""
    conn = imaplib.IMAP4(server.host, server.port)
    conn.login(user, password)
    conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
    conn.logout()


def encrypted_mail(sender: str, to: str, public_armored: str, subject: str, text: str) -> bytes:
    """A PGP/MIME (RFC 3156) mail encrypted to `public_armored` by Sequoia, as Delta Chat and
    other Sequoia- or rPGP-based clients send it: they pick SEIPD v2 for a key whose Features
    carry it, which Thunderbird 153's RNP cannot open ("Bad format"), and SEIPD v1 otherwise.
    The account key's Features say v1 only, so this mail must open in Thunderbird."""
    import pysequoia
    from pysequoia.packet import PacketPile, Tag

    inner = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    sealed = pysequoia.encrypt(
        inner.encode(), [pysequoia.Cert.from_bytes(public_armored.encode())], armor=True
    ).decode("ascii")
    seipd = [p.body[0] for p in PacketPile.from_bytes(sealed.encode()) if p.tag == Tag.SEIP]
    assert seipd == [1], f"Sequoia chose SEIPD v{seipd} for the account key"
    boundary = "sma-e2e-boundary"
    return (
        f"From: Carol <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\nMessage-ID: <e2e-{time.time_ns()}@example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        f'\r\n--{boundary}\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        f"{sealed.replace(chr(10), chr(13) + chr(10))}\r\n--{boundary}--\r\n"
    ).encode()


def shows_decrypted(tb: Thunderbird, subject: str, plaintext: str, what: str) -> None:
    """Thunderbird fetches mail, and the message pane shows this mail's plaintext, not the armor."""
    tb.check_mail()
    shown = wait_for(
        what, lambda: (text := tb.message_body(subject)) and plaintext in text and text, 60
    )
    assert "BEGIN PGP MESSAGE" not in shown


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def test_two_thunderbirds_pair_and_share_what_they_learn(
    dovecot: DovecotServer, two_thunderbirds: tuple[Thunderbird, Thunderbird]
) -> None:
    steps: list[tuple[str, float]] = []
    started = time.monotonic()

    def step(name: str) -> None:
        steps.append((name, round(time.monotonic() - started, 1)))

    a, b = two_thunderbirds
    user, password = dovecot.new_account()
    address = f"{user}@example.org"
    xpi = build_xpi()
    for tb, fetches_mail in ((a, True), (b, False)):
        # B never fetches mail itself: whatever B's host learns about correspondents comes from A.
        tb.add_imap_account(
            user=user,
            password=password,
            address=address,
            host=dovecot.host,
            port=dovecot.port,
            check_mail=fetches_mail,
        )
        tb.install_addon(xpi)
    step("add-on installed in both")

    set_up_and_join(a, dovecot, user, password, address, "Laptop", first_device=True)
    set_up_and_join(b, dovecot, user, password, address, "Desktop", first_device=False)
    step("both set up and joined")
    a_key = a.call_host("account.key", {"account": address})["fingerprint"]
    with pytest.raises(AssertionError, match="not_joined"):
        b.call_host("account.key", {"account": address})

    # A (paired) adds a device: its popup shows a one-time code. First the user mistypes it on B:
    # both devices end that pairing, B says to start again on the other device.
    page(a, POPUP, add_a_device(address), 60)
    first = page(a, POPUP, shown_code(), 60)
    digits = first["code"].replace("-", "")
    wrong = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    page(b, POPUP, type_code(address, wrong), 60)
    page(b, POPUP, press_pair(address))
    failed_b = page(b, POPUP, outcome("joiner", "failure"), 60)
    failed_a = page(a, POPUP, outcome("inviter", "failure"), 60)
    assert failed_b["failure"] == "wrong-code", failed_b
    assert "The code did not match: start again on your other device." in failed_b["card"], failed_b
    assert failed_a["failure"] == "wrong-code", failed_a
    assert "did not match, so nothing was shared" in failed_a["card"], failed_a
    b.show_tab(b.addon_page(POPUP))
    b.screenshot(ARTIFACTS / "pairing-b-desktop-wrong-code.png")
    with pytest.raises(AssertionError, match="not_joined"):
        b.call_host("account.key", {"account": address})
    step("a mistyped code failed on both")

    # Start again: a new code on A, typed on B (with spaces, as people do), then Pair.
    page(a, POPUP, add_a_device(address), 60)
    on_a = page(a, POPUP, shown_code(), 60)
    assert on_a["code"] != first["code"], "a new invitation has a new code"
    typed = on_a["code"].replace("-", " ")
    on_b = page(b, POPUP, type_code(address, typed), 60)
    step("A shows the code, typed on B")
    for tb, name in ((a, "a-laptop-code"), (b, "b-desktop-typed-code")):
        tb.show_tab(tb.addon_page(POPUP))
        tb.screenshot(ARTIFACTS / f"pairing-{name}.png")
    assert re.fullmatch(r"[0-9]{3}-[0-9]{3}-[0-9]{4}", on_a["code"]), on_a
    assert on_b == typed, on_b
    assert on_a["expiry"].startswith("Works once, within the next "), on_a
    assert on_a["buttons"] == ["Cancel"], on_a
    for text in (on_a["page"], page(b, POPUP, "return doc.body.innerText;")):
        assert "Approve" not in text, text

    page(b, POPUP, press_pair(address))
    done_b = page(b, POPUP, outcome("joiner", "success"), 60)
    assert "This device is paired." in done_b["card"], done_b
    done_a = page(a, POPUP, outcome("inviter", "success"), 60)
    assert "“Desktop” is now paired." in done_a["card"], done_a
    b_key = wait_for(
        "B's host holds the account key",
        lambda: b.call_host("account.key", {"account": address})["fingerprint"],
        30,
    )
    assert b_key == a_key
    step("paired: B holds A's account key")

    # Thunderbird's own OpenPGP uses the shared key on both, as the identity's personal key.
    for tb in (a, b):
        held = wait_for(
            f"{tb.home.name}'s Thunderbird uses the account key",
            lambda tb=tb: (s := tb.openpgp_key(a_key, address))["secret"] and s,
            30,
        )
        assert held["personal"] is True, held
        assert held["identity_key_ids"] == [a_key[-16:]], held
    step("both Thunderbirds use the account key")

    # A correspondent's mail arrives; Thunderbird A sees it; B's host learns the key.
    carol = generate_account_key(CAROL, int(time.time()) - 3600).keydata()
    raw = base64.b64decode(correspondent_mail(CAROL, carol, int(time.time()) - 60))
    deliver(dovecot, user, password, raw)
    a.check_mail()
    on_a_host = wait_for(
        "A's host ingests the new mail (onNewMailReceived)",
        lambda: a.call_host("peers.get", {"account": address, "addr": CAROL}).get("peer"),
        60,
    )
    step("A ingested the mail")
    on_b_host = wait_for(
        "Carol's key reaches B's host",
        lambda: b.call_host("peers.get", {"account": address, "addr": CAROL}).get("peer"),
        60,
    )
    step("B's host knows Carol's key")
    assert b.inbox_size() == 0, "B fetched the mail itself: the key did not come through the SMA"
    assert a.inbox_size() == 1
    expected = peer_key_fingerprint(carol)
    assert expected is not None
    assert on_b_host["public_key_fingerprint"] == expected, on_b_host
    assert on_b_host == on_a_host, (on_a_host, on_b_host)

    # The backlog scan (options page) reads what is already in Thunderbird A's inbox.
    page(
        a,
        OPTIONS,
        f"""
        const sel = doc.getElementById("account");
        if (sel.value !== "{address}") {{ sel.value = "{address}";
                                         sel.dispatchEvent(new Event("change")); return null; }}
        const b = doc.getElementById("scan-start");
        if (doc.getElementById("scan-section").hidden || b.hidden || b.disabled) return null;
        b.click(); return true;""",
    )
    scanned = page(
        a,
        OPTIONS,
        """
        const r = doc.getElementById("scan-result");
        return ["ok", "error"].includes(r.className) ? [r.className, r.textContent] : null;""",
        60,
    )
    assert scanned[0] == "ok", scanned
    assert "Messages read: 1;" in scanned[1], scanned
    step("backlog scan on A")
    # B's Thunderbird key store has Carol's key, accepted as unverified (never verified).
    in_b = wait_for(
        "Carol's key in B's Thunderbird "
        f"(add-on: {b.send({'type': 'openpgp.status', 'account': address})})",
        lambda: (s := b.openpgp_key(expected, CAROL))["present"] and s,
        30,
    )
    assert in_b["acceptance"] == "unverified", in_b
    assert in_b["secret"] is False, in_b
    step("Carol's key in B's Thunderbird")

    # Carol writes encrypted to the account key; B's Thunderbird shows the mail decrypted.
    public = a.call_host("account.key", {"account": address})["public_key"]
    deliver(
        dovecot, user, password, encrypted_mail(CAROL, address, public, SECRET_SUBJECT, PLAINTEXT)
    )
    shows_decrypted(b, SECRET_SUBJECT, PLAINTEXT, "B's Thunderbird shows the mail decrypted")
    b.screenshot(ARTIFACTS / "decrypted-on-b-desktop.png")
    step("B's Thunderbird decrypts mail to the account key")

    # A removes B: the account key rolls; A's Thunderbird switches to the new key and still reads
    # the mail encrypted to the old one.
    devices = a.call_host("devices.list", {"account": address})["devices"]
    b_id = next(d["device_id"] for d in devices if not d["self"])
    rolled = a.call_host("device.remove", {"account": address, "device_id": b_id})["account_key"]
    assert rolled != a_key
    now_a = wait_for(
        "A's Thunderbird switches to the rolled key",
        lambda: (s := a.openpgp_key(rolled, address))["identity_key_ids"] == [rolled[-16:]] and s,
        30,
    )
    assert now_a["secret"] is True, now_a
    assert a.openpgp_key(a_key, address)["secret"] is True, "the old key must stay for old mail"
    shows_decrypted(a, SECRET_SUBJECT, PLAINTEXT, "A's Thunderbird still shows the old mail")
    new_public = a.call_host("account.key", {"account": address})["public_key"]
    deliver(
        dovecot,
        user,
        password,
        encrypted_mail(CAROL, address, new_public, "after the roll", "Rolled: quokka-7."),
    )
    shows_decrypted(a, "after the roll", "Rolled: quokka-7.", "A decrypts mail to the rolled key")
    step("after removing B, A's Thunderbird uses the rolled key and reads old and new mail")
    print("timeline (s):", steps)


def test_a_missing_thunderbird_is_a_failure_that_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.e2e import thunderbird

    monkeypatch.setattr(thunderbird, "THUNDERBIRD", str(tmp_path / "no-thunderbird"))
    with pytest.raises(AssertionError, match="apt-get install thunderbird"):
        Thunderbird(tmp_path)
