"""The add-on in a real headless Thunderbird (Debian's 153 ESR) against real hosts and a real Dovecot:
set-up from the options page, join, both pairing roles from the popup, keys from a mail delivered to
the inbox reaching a paired device, and the backlog scan. Run by hand from the repository root:

    dbus-run-session -- scripts/with-test-keyring .venv/bin/python extension/tests/thunderbird_flow.py

It uses the Python test helpers (tests/e2e/thunderbird.py, tests/host, tests/servers); a candidate
for tests/e2e/ as a pytest test. Prints each step; ends with FLOW OK, or raises."""
import base64, imaplib, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.thunderbird import Thunderbird, install_host
from tests.host.harness import CheckedHost
from tests.servers.dovecot_server import DovecotServer
from tests.host.test_keysync_imap import correspondent_mail, T0
from native_host.adapters.pgp import generate_account_key

tmp = Path(tempfile.mkdtemp())
dove = DovecotServer().start()
userA, pwA = dove.new_account(); addrA = f"{userA}@example.org"
userB, pwB = dove.new_account(); addrB = f"{userB}@example.org"
install_host_manifest(tmp, tmp / "sma")
hosts = []
def pyhost(name):
    home = tmp / f"py-{name}"; home.mkdir()
    h = CheckedHost(home); hosts.append(h)
    h.call("hello", {"instance": name}); return h
def imap(user):
    return {"host": dove.host, "port": dove.port, "security": "none", "username": user}

tb = Thunderbird(tmp)
def page_js(page, body, timeout=30):
    return tb.read_page(tb.addon_page(page), body, timeout)
def step(msg): print(f"[{time.strftime('%X')}] {msg}", flush=True)
try:
    # Two IMAP accounts in Thunderbird itself, as a user would have them.
    tb.client.execute_script("""
      const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
      for (const [user, pw, addr, port] of arguments[0]) {
        const server = MailServices.accounts.createIncomingServer(user, "127.0.0.1", "imap");
        server.port = port; server.password = pw;
        const id = MailServices.accounts.createIdentity(); id.email = addr;
        const account = MailServices.accounts.createAccount();
        account.incomingServer = server; account.addIdentity(id);
      }""", script_args=[[[userA, pwA, addrA, dove.port], [userB, pwB, addrB, dove.port]]])
    tb.install_addon()
    step("add-on installed")

    # --- account A: Thunderbird is the first device ---------------------------------------------
    def configure_and_join(addr, user, pw, name):
        page_js("options/options.html", f"""
          const sel = doc.getElementById("account");
          if (doc.getElementById("status").dataset.state !== "connected") return null;
          if (![...sel.options].some(o => o.value === "{addr}")) return null;
          sel.value = "{addr}"; sel.dispatchEvent(new Event("change"));
          return true;""")
        time.sleep(0.5)
        page_js("options/options.html", f"""
          const q = id => doc.getElementById(id);
          q("imap-host").value = "127.0.0.1"; q("imap-port").value = "{dove.port}";
          q("imap-security").value = "none"; q("imap-username").value = "{user}";
          q("imap-password").value = "{pw}"; q("save").click(); return true;""")
        saved = page_js("options/options.html", """
          const r = doc.getElementById("save-result");
          return r.className ? [r.className, r.textContent, doc.getElementById("imap-password").value] : null;""", 60)
        step(f"save: {saved}")
        assert saved[0] == "ok" and saved[2] == "", saved
        page_js("options/options.html", f"""
          const q = id => doc.getElementById(id);
          if (q("join-section").hidden) return null;
          q("device-name").value = "{name}"; q("join").click(); return true;""")
        joined = page_js("options/options.html", """
          const r = doc.getElementById("join-result"); return r.className ? [r.className, r.textContent] : null;""", 60)
        step(f"join: {joined}")
        assert joined[0] == "ok", joined
        rows = page_js("options/options.html", """
          const rows = [...doc.querySelectorAll("#devices tbody tr")].map(r => r.innerText.replace(/\\s+/g, " "));
          return rows.length ? rows : null;""")
        step(f"devices: {rows}")

    configure_and_join(addrA, userA, pwA, "TB Laptop")
    phone = pyhost("phone")
    phone.call("account.configure", {"account": addrA, "imap": imap(userA), "password": pwA})
    phone.call("sma.join", {"account": addrA, "device_name": "Phone"})
    pid = phone.call("pairing.request", {"account": addrA})["pairing_id"]
    step("phone asked to pair")
    code = page_js("popup/popup.html", f"""
      const a = doc.querySelector('.pairing[data-role="responder"][data-state="showing"]');
      return a ? [a.querySelector(".code").textContent, a.innerText.replace(/\\s+/g, " ")] : null;""", 60)
    step(f"TB popup shows: {code}")
    shown = phone.wait_event("pairing.updated", 15, check=lambda d: d["pairing"]["sas"] is not None)["pairing"]
    assert shown["sas"] == code[0], (shown["sas"], code)
    page_js("popup/popup.html", """
      const b = doc.querySelector('.pairing[data-role="responder"] button[data-action="approve"]');
      if (!b) return null; b.click(); return true;""")
    phone.call("pairing.approve", {"account": addrA, "pairing_id": pid})
    phone.wait_event("pairing.completed", 20)
    done = page_js("popup/popup.html", """
      const a = doc.querySelector('.pairing[data-outcome="success"]');
      return a ? doc.body.innerText.replace(/\\s+/g, " ") : null;""", 30)
    step(f"TB popup after approve: {done}")
    assert "“Phone” is now paired." in done, done

    # --- keys from a mail delivered to A's inbox reach the paired phone ----------------------------
    key = generate_account_key("carol@example.net", T0).keydata()
    raw = base64.b64decode(correspondent_mail("carol@example.net", key, int(time.time()) - 100))
    conn = imaplib.IMAP4(dove.host, dove.port); conn.login(userA, pwA); conn.append("INBOX", None, None, raw); conn.logout()
    step("mail with an Autocrypt header appended to A's INBOX; asking TB to check mail")
    tb.client.execute_script("""
      const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
      for (const a of MailServices.accounts.accounts) {
        const inbox = a.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
        if (inbox) inbox.getNewMessages(null, null);
      }""")
    deadline = time.monotonic() + 60
    got = None
    while time.monotonic() < deadline:
        peers = phone.call("peers.list", {"account": addrA})["peers"]
        if peers: got = peers; break
        time.sleep(1)
    step(f"phone's peers after TB ingested the mail: {[p['addr'] for p in got] if got else None}")
    assert got and got[0]["addr"] == "carol@example.net", got

    # --- backlog scan from the options page ---------------------------------------------------------
    page_js("options/options.html", f"""
      const sel = doc.getElementById("account");
      if (![...sel.options].some(o => o.value === "{addrA}")) return null;
      sel.value = "{addrA}"; sel.dispatchEvent(new Event("change")); return true;""")
    page_js("options/options.html", """
      const b = doc.getElementById("scan-start");
      if (doc.getElementById("scan-section").hidden || b.hidden || b.disabled) return null;
      b.click(); return true;""")
    scanned = page_js("options/options.html", """
      const r = doc.getElementById("scan-result");
      return ["ok", "error"].includes(r.className) ? [r.className, r.textContent] : null;""", 60)
    step(f"scan: {scanned}")
    assert scanned[0] == "ok" and "Messages read: 1;" in scanned[1], scanned

    # --- account B: Thunderbird is the new device ----------------------------------------------------
    laptop = pyhost("laptopB")
    laptop.call("account.configure", {"account": addrB, "imap": imap(userB), "password": pwB})
    laptop.call("sma.join", {"account": addrB, "device_name": "Desktop"})
    configure_and_join(addrB, userB, pwB, "TB Newbie")
    page_js("popup/popup.html", f"""
      const b = doc.querySelector('button[data-action="pair"][data-account="{addrB}"]');
      if (!b || b.hidden) return null; b.click(); return true;""")
    req = laptop.wait_event("pairing.requested", 20)["pairing"]
    step(f"laptopB got request from {req['peer_name']}")
    laptop.call("pairing.approve", {"account": addrB, "pairing_id": req["pairing_id"]})
    code = page_js("popup/popup.html", """
      const a = doc.querySelector('.pairing[data-role="initiator"][data-state="showing"]');
      return a ? a.querySelector(".code").textContent : null;""", 60)
    step(f"TB (new device) shows {code}; laptop saw {req['sas']}")
    assert code == req["sas"], (code, req["sas"])
    page_js("popup/popup.html", """
      const b = doc.querySelector('.pairing[data-role="initiator"] button[data-action="approve"]');
      if (!b) return null; b.click(); return true;""")
    laptop.wait_event("pairing.completed", 30)
    done = page_js("popup/popup.html", f"""
      const a = doc.querySelector('.pairing[data-role="initiator"][data-outcome="success"]');
      return a ? doc.body.innerText.replace(/\\s+/g, " ") : null;""", 30)
    step(f"TB popup after confirm: {done}")
    assert "This device is paired." in done, done
    print("FLOW OK")
finally:
    tb.screenshot(tmp / "thunderbird-end.png")
    print(f"last screen: {tmp / 'thunderbird-end.png'}")
    tb.quit()
    for h in hosts: h.close()
    dove.stop()
