// The real popup and options page rendered in headless Chromium against the fake API, one PNG per state (and dark
// variants) in artifacts/screenshots/ for review, plus DOM checks of what a person would see.
// Skipped, with the reason, where no Chromium is installed (Debian: apt-get install chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

import { startServer, chromium, findChromium, ROOT } from "./browser.mjs";
import { STATES, OPTIONS_STATES, NOW } from "./popup_states.mjs";

const BINARY = findChromium();
// Scenarios where the fake clicks buttons; the messages the page sent come back in the DOM.
const CLICKS = {
  "click-approve": { overview: STATES["responder-showing"], steps: [{ click: '[data-action="approve"]' }] },
  "click-reject": { overview: STATES["responder-showing"], steps: [{ click: '[data-action="reject"]' }] },
  "click-pair": { overview: STATES["joined-unpaired"], steps: [{ click: '[data-action="pair"]' }] },
  "click-confirm-fails": {
    overview: STATES["initiator-showing"],
    steps: [{ click: '[data-action="approve"]' }],
    replies: { "pairing.approve": { error: { code: "pairing_expired", message: "the pairing expired" } } },
  },
  "click-setup": { overview: STATES["no-account"], steps: [{ click: "#setup button" }] },
  "options-save": {
    ...OPTIONS_STATES["options-new"],
    steps: [
      { wait: '#account option[value="alice@example.org"]' },
      { fill: "#imap-host", value: "imap.example.org" },
      { fill: "#imap-password", value: "correct horse" },
      { click: "#save" },
      { probe: "#imap-password" },
    ],
  },
  "options-save-no-password": { ...OPTIONS_STATES["options-new"], steps: [{ wait: "#account option" }, { fill: "#imap-host", value: "imap.example.org" }, { click: "#save" }] },
  "options-remove": {
    ...OPTIONS_STATES["options-joined"],
    steps: [{ click: '#devices tr[data-device-id="bbbbbbbbbbbbbbbb"] button:last-child' }, { click: '#devices tr[data-device-id="bbbbbbbbbbbbbbbb"] button:nth-of-type(1)' }],
  },
};
const OUT = join(ROOT, "artifacts/screenshots");
const DARK = new Set(["host-missing", "initiator-showing", "responder-showing", "paired-errors"]);
// A missing browser is a failure, never a skip: the suite's bootstrap installs Chromium.
const skip = false;
test("Chromium is installed for the browser tests", () => {
  assert.ok(BINARY, "no Chromium found: apt-get install chromium (scripts/bootstrap test does), or set CHROMIUM");
});

let server;
let base;
const popupUrl = (state) => `${base}/popup/popup.html?scenario=${state}`;
const optionsUrl = (state) => `${base}/options/options.html?scenario=${state}`;

before(async () => {
  if (skip) return;
  const scenarios = Object.fromEntries(Object.entries(STATES).map(([name, overview]) => [name, { overview, now: NOW }]));
  for (const [name, scenario] of Object.entries(OPTIONS_STATES)) scenarios[name] = { ...scenario, now: NOW };
  for (const [name, scenario] of Object.entries(CLICKS)) scenarios[name] = { ...scenario, now: NOW };
  ({ server, base } = await startServer(scenarios));
  mkdirSync(OUT, { recursive: true });
});

after(() => server?.close());

/** Text of the elements not hidden, roughly as a person reads the page. */
function visibleText(dom) {
  const body = dom.replace(/<template[\s\S]*?<\/template>/g, "");
  const withoutHidden = body.replace(/<(\w+)\b[^>]*\shidden=""[^>]*>[\s\S]*?<\/\1>/g, "");
  return withoutHidden.replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").trim();
}

test("popup screenshots of every state, light and dark", { skip, timeout: 300000 }, async () => {
  const jobs = [];
  for (const state of Object.keys(STATES)) {
    jobs.push([state, false]);
    if (DARK.has(state)) jobs.push([state, true]);
  }
  // Two at a time: the machine has two cores.
  for (let i = 0; i < jobs.length; i += 2) {
    await Promise.all(
      jobs.slice(i, i + 2).map(async ([state, dark]) => {
        const file = join(OUT, `popup-${state}${dark ? "-dark" : ""}.png`);
        await chromium(BINARY, popupUrl(state), { screenshot: file, dark, height: 560 });
        assert.ok(statSync(file).size > 2000, `${file} looks empty`);
      }),
    );
  }
});

test("in the browser: the new device's code with Confirm, the existing device's with Approve/Reject", { skip, timeout: 60000 }, async () => {
  const [initiator, responder] = await Promise.all([
    chromium(BINARY, popupUrl("initiator-showing")).then(visibleText),
    chromium(BINARY, popupUrl("responder-showing")).then(visibleText),
  ]);
  assert.match(initiator, /Pairing this device .* Code on this device 4821 0937 5516 2284 Confirm Cancel/);
  assert.match(responder, /“Phone” wants to join .* Code for “Phone” 4821 0937 5516 2284 Approve Reject/);
  assert.match(responder, /Joined: Yes This device: Paired Devices: 3 Last sync: 3 min ago/);
});

test("in the browser: host missing shows the install command; errors are listed", { skip, timeout: 60000 }, async () => {
  const [missing, errors] = await Promise.all([
    chromium(BINARY, popupUrl("host-missing")).then(visibleText),
    chromium(BINARY, popupUrl("paired-errors")).then(visibleText),
  ]);
  assert.match(missing, /Not installed .* autocrypt-sma install Check again/);
  assert.doesNotMatch(missing, /alice@example\.org/);
  assert.match(errors, /Cannot reach the mail server: imap\.example\.org: connection refused/);
  assert.match(errors, /Security alert: /);
  assert.match(errors, /Scanning old mail for keys: 150 of at most 5000/);
});

test("options page screenshots and what they show", { skip, timeout: 120000 }, async () => {
  const names = Object.keys(OPTIONS_STATES);
  for (let i = 0; i < names.length; i += 2) {
    await Promise.all(
      names.slice(i, i + 2).map((name) =>
        chromium(BINARY, optionsUrl(name), { screenshot: join(OUT, `${name}.png`), width: 760, height: 1000, dark: name === "options-joined" }),
      ),
    );
  }
  const [fresh, joined] = await Promise.all([
    chromium(BINARY, optionsUrl("options-new")).then(visibleText),
    chromium(BINARY, optionsUrl("options-joined")).then(visibleText),
  ]);
  // A new account: its address as user name, port 993, no join or device sections yet.
  const freshDom = await chromium(BINARY, optionsUrl("options-new"));
  assert.match(freshDom, /<option value="alice@example\.org">Work — alice@example\.org<\/option>/);
  assert.match(freshDom, /id="imap-host"[^>]*placeholder="imap\.example\.org"/);
  assert.doesNotMatch(fresh, /Devices Name/);
  assert.match(joined, /Laptop \(this device\) Paired .* Rename Leave/);
  assert.match(joined, /Desktop Paired .* Rename Remove/);
  assert.match(joined, /Phone not paired, not seen for 90 days/);
  assert.match(joined, /Messages read: 340 of at most 5000; keys learned: 7/);
});

const sentBy = async (scenario, page = "popup/popup.html") => {
  const dom = await chromium(BINARY, `${base}/${page}?scenario=${scenario}`);
  const json = dom.match(/data-sent="([^"]*)"/)?.[1] ?? "[]";
  return { dom, sent: JSON.parse(json.replaceAll("&quot;", '"').replaceAll("&amp;", "&")) };
};

test("in the browser: the popup's buttons send the right host calls", { skip, timeout: 120000 }, async () => {
  const PAIRING_ID = "0123456789abcdef0123456789abcdef";
  const [approve, reject, pair] = await Promise.all([sentBy("click-approve"), sentBy("click-reject"), sentBy("click-pair")]);
  assert.deepEqual(approve.sent, [{ type: "call", method: "pairing.approve", params: { account: "alice@example.org", pairing_id: PAIRING_ID } }]);
  assert.deepEqual(reject.sent, [{ type: "call", method: "pairing.reject", params: { account: "alice@example.org", pairing_id: PAIRING_ID } }]);
  assert.deepEqual(pair.sent, [{ type: "call", method: "pairing.request", params: { account: "alice@example.org" } }]);
  const failed = await sentBy("click-confirm-fails");
  assert.equal(failed.sent[0].method, "pairing.approve");
  assert.match(visibleText(failed.dom), /That did not work: the pairing expired/);
  assert.deepEqual((await sentBy("click-setup")).sent, [{ type: "openOptionsPage" }]);
});

test("in the browser: options sends account.configure once with the password, then clears the field", { skip, timeout: 120000 }, async () => {
  const [saved, refused, removed] = await Promise.all([
    sentBy("options-save", "options/options.html"),
    sentBy("options-save-no-password", "options/options.html"),
    sentBy("options-remove", "options/options.html"),
  ]);
  const calls = saved.sent.filter((m) => m.type === "call" && m.method !== "account.list");
  assert.deepEqual(calls, [
    {
      type: "call",
      method: "account.configure",
      params: {
        account: "alice@example.org",
        imap: { host: "imap.example.org", port: 993, security: "tls", username: "alice@example.org", verify_tls: true },
        password: "correct horse",
      },
    },
  ]);
  assert.deepEqual(saved.sent.find((m) => m.probe), { probe: "#imap-password", value: "" });
  assert.equal(refused.sent.filter((m) => m.method === "account.configure").length, 0);
  assert.match(visibleText(refused.dom), /Enter the password\./);
  // Remove asks first; the second click (the "Yes" button) sends device.remove.
  assert.deepEqual(removed.sent.filter((m) => m.method === "device.remove"), [
    { type: "call", method: "device.remove", params: { account: "alice@example.org", device_id: "bbbbbbbbbbbbbbbb" } },
  ]);
});
