// The real popup and options page rendered in headless Chromium against the fake API, one PNG per state (and dark
// variants) in artifacts/screenshots/ for review, plus DOM checks of what a person would see.
// Skipped, with the reason, where no Chromium is installed (Debian: apt-get install chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

import { startServer, chromium, findChromium, ROOT } from "./browser.mjs";
import { STATES, OPTIONS_STATES, NOW, ACCOUNT, PAIRING_ID, foundHereScenario } from "./popup_states.mjs";

const BINARY = findChromium();
const JOINED_UNPAIRED = STATES["joined-unpaired"];
const CODE_FIELD = "input.code-input";
const SUBMIT_CODE = 'form[data-action="join"] button[type="submit"]';
// Popup states reached by typing, screenshotted like STATES.
const TYPED = {
  "joiner-typing": { overview: JOINED_UNPAIRED, steps: [{ fill: CODE_FIELD, value: "417 209 3551" }, { focus: CODE_FIELD }] },
  "joiner-bad-code": { overview: JOINED_UNPAIRED, steps: [{ fill: CODE_FIELD, value: "417 209 35" }, { click: SUBMIT_CODE }] },
};
// Scenarios where the fake clicks buttons; the messages the page sent come back in the DOM.
const CLICKS = {
  "click-invite": { overview: STATES.paired, after: { "pairing.invite": STATES["inviter-code"] }, steps: [{ click: '[data-action="invite"]' }, { wait: ".code" }] },
  "click-invite-fails": {
    overview: STATES.paired,
    steps: [{ click: '[data-action="invite"]' }],
    replies: { "pairing.invite": { error: { code: "invalid_request", message: "only a paired device can add a device" } } },
  },
  "click-cancel": { overview: STATES["inviter-code"], steps: [{ click: '[data-action="cancel"]' }] },
  "join-typed": {
    overview: JOINED_UNPAIRED,
    after: { "pairing.join": STATES["joiner-joining"] },
    steps: [{ fill: CODE_FIELD, value: " 417 209-3551" }, { click: SUBMIT_CODE }, { wait: '.pairing[data-state="joining"]' }],
  },
  "join-bad-format": { overview: JOINED_UNPAIRED, steps: [{ fill: CODE_FIELD, value: "417-2O9-3551" }, { click: SUBMIT_CODE }, { wait: ".code-error:not([hidden])" }, { probe: CODE_FIELD }] },
  "join-unknown-device": {
    overview: JOINED_UNPAIRED,
    steps: [{ fill: CODE_FIELD, value: "999-209-3551" }, { click: SUBMIT_CODE }, { wait: ".code-error:not([hidden])" }, { probe: CODE_FIELD }],
    replies: { "pairing.join": { error: { code: "invalid_params", message: "params.code: no device of this account has the number 999" } } },
  },
  "click-setup": { overview: STATES["no-account"], steps: [{ click: "#setup button" }] },
  "click-sign-in-again": { overview: STATES["sign-in-cancelled"], steps: [{ click: '[data-action="sign-in-again"]' }] },
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
  // One click plus the consent: Thunderbird's saved password and settings go to account.configure.
  "options-tb-consent-given": {
    ...OPTIONS_STATES["options-tb-consent"],
    steps: [...OPTIONS_STATES["options-tb-consent"].steps, { click: "#tb-accounts button.consent" }, { wait: "#tb-result.ok" }],
  },
  "options-tb-consent-cancelled": {
    ...OPTIONS_STATES["options-tb-consent"],
    steps: [...OPTIONS_STATES["options-tb-consent"].steps, { click: '#tb-accounts .step button:not(.consent)' }, { wait: "#tb-accounts:not(:has(.step))" }],
  },
  // Counted as saved while the primary password was locked, but none for this user: type it.
  "options-tb-consent-none": {
    ...OPTIONS_STATES["options-tb-consent"],
    savedPasswords: { account5: null },
    steps: [...OPTIONS_STATES["options-tb-consent"].steps, { click: "#tb-accounts button.consent" }, { wait: '#tb-accounts .step input[type="password"]' }],
  },
  "options-tb-typed": {
    ...OPTIONS_STATES["options-tb-password"],
    steps: [
      ...OPTIONS_STATES["options-tb-password"].steps,
      { fill: '#tb-accounts .step input[type="password"]', value: "typed once" },
      { click: '#tb-accounts .step button[type="submit"]' },
      { wait: "#tb-result.ok" },
    ],
  },
  "options-tb-oauth2": {
    ...OPTIONS_STATES["options-tb-accounts"],
    steps: [{ click: '#tb-accounts li[data-account-id="account4"] button.use' }, { wait: "#tb-result.ok" }],
  },
  "options-tb-manual": {
    ...OPTIONS_STATES["options-tb-accounts"],
    steps: [{ click: '#tb-accounts li[data-account-id="account6"] button.use' }, { click: "#tb-accounts .step button.primary" }, { wait: "#manual-settings[open]" }, { probe: "#imap-host" }],
  },
  "options-save-no-password": { ...OPTIONS_STATES["options-new"], steps: [{ wait: "#account option" }, { fill: "#imap-host", value: "imap.example.org" }, { click: "#save" }] },
  "options-remove": {
    ...OPTIONS_STATES["options-joined"],
    steps: [{ click: '#devices tr[data-device-id="bbbbbbbbbbbbbbbb"] button:last-child' }, { click: '#devices tr[data-device-id="bbbbbbbbbbbbbbbb"] button:nth-of-type(1)' }],
  },
  "options-prefer": {
    ...OPTIONS_STATES["options-joined"],
    replies: {
      ...OPTIONS_STATES["options-joined"].replies,
      "account.key": { fingerprint: "F".repeat(40), public_key: "", prefer_encrypt: "nopreference", prefer_encrypt_set_at: null },
      "account.set_prefer_encrypt": { prefer_encrypt: "mutual", set_at: 1_700_000_000 },
    },
    steps: [{ click: "#prefer-mutual" }, { wait: "#prefer-result.ok" }],
  },
  "options-join-code": {
    ...OPTIONS_STATES["options-unpaired"],
    after: { "pairing.join": { status: "connected", accounts: STATES["joiner-joining"].accounts } },
    steps: [{ fill: `#pairing ${CODE_FIELD}`, value: "4172093551" }, { click: `#pairing ${SUBMIT_CODE}` }, { wait: '#pairing .pairing[data-state="joining"]' }],
  },
  "options-found-here": foundHereScenario(),
  "options-invite": {
    ...OPTIONS_STATES["options-joined"],
    overview: { status: "connected", accounts: STATES.paired.accounts },
    after: { "pairing.invite": { status: "connected", accounts: STATES["inviter-code"].accounts } },
    steps: [{ click: '#pairing [data-action="invite"]' }, { wait: "#pairing .code" }],
  },
};
const OUT = join(ROOT, "artifacts/screenshots");
const DARK = new Set(["host-missing", "inviter-code", "joiner-typing", "joiner-wrong-code", "paired-errors", "waiting-token", "sign-in-cancelled"]);
const OPTIONS_DARK = new Set(["options-join-new-identity", "options-join-no-other-device", "options-tb-accounts", "options-tb-consent"]);
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
  for (const [name, scenario] of Object.entries({ ...TYPED, ...CLICKS })) scenarios[name] = { ...scenario, now: NOW };
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
  for (const state of [...Object.keys(STATES), ...Object.keys(TYPED)]) {
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

test("in the browser: the existing device shows the code, the new device a field to type it, no Approve", { skip, timeout: 60000 }, async () => {
  const [inviter, joiner, unsolicited] = await Promise.all([
    chromium(BINARY, popupUrl("inviter-code")).then(visibleText),
    chromium(BINARY, popupUrl("joined-unpaired")).then(visibleText),
    chromium(BINARY, popupUrl("paired-unsolicited")).then(visibleText),
  ]);
  assert.match(inviter, /Add a device On the new device, .* type this code\. One-time code 417-209-3551 Works once, within the next 9 min\. Cancel/);
  assert.match(inviter, /Joined: Yes This device: Paired Devices: 2 Last sync: 3 min ago/);
  assert.match(joiner, /Pair with my other device On a device that is already paired, .*“Add a device”\. Type the code it shows here\. Code from your other device Pair/);
  assert.doesNotMatch(joiner, /Add a device Sync/);
  assert.match(unsolicited, /Pairing requests that nobody started on this device were ignored \(3\)\. .* Add a device/);
  for (const text of [inviter, joiner, unsolicited]) assert.doesNotMatch(text, /Approve|Reject|Confirm/);
});

test("in the browser: progress, success and a wrong code on both sides", { skip, timeout: 120000 }, async () => {
  const names = ["inviter-confirming", "inviter-completed", "inviter-wrong-code", "joiner-joining", "joiner-completed", "joiner-wrong-code"];
  const texts = {};
  for (let i = 0; i < names.length; i += 2) {
    await Promise.all(names.slice(i, i + 2).map(async (name) => { texts[name] = visibleText(await chromium(BINARY, popupUrl(name))); }));
  }
  assert.match(texts["inviter-confirming"], /Adding “Phone” “Phone” typed the code\. Checking it… Cancel/);
  assert.match(texts["inviter-completed"], /“Phone” is now paired\./);
  assert.match(texts["inviter-wrong-code"], /The code typed on the new device did not match, so nothing was shared\. Choose “Add a device” to start again\. Add a device/);
  assert.match(texts["joiner-joining"], /Asking your other device to check the code… Cancel/);
  assert.doesNotMatch(texts["joiner-joining"], /Code from your other device/, "no second field while the join runs");
  assert.match(texts["joiner-completed"], /This device is paired\. Add a device/);
  assert.match(texts["joiner-wrong-code"], /The code did not match: start again on your other device\. Pair with my other device .* Code from your other device/);
  const dom = await chromium(BINARY, popupUrl("joiner-wrong-code"));
  assert.match(dom, /<article class="pairing" data-role="joiner" data-state="failed" data-outcome="failure" data-failure="wrong-code">/);
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
  // [state, file, dark]: options-joined is shown dark only; the join notices light and dark.
  const jobs = [];
  for (const name of Object.keys(OPTIONS_STATES)) {
    jobs.push([name, `${name}.png`, name === "options-joined"]);
    if (OPTIONS_DARK.has(name)) jobs.push([name, `${name}-dark.png`, true]);
  }
  for (let i = 0; i < jobs.length; i += 2) {
    await Promise.all(
      jobs.slice(i, i + 2).map(async ([name, png, dark]) => {
        const file = join(OUT, png);
        await chromium(BINARY, optionsUrl(name), { screenshot: file, width: 760, height: 1000, dark });
        assert.ok(statSync(file).size > 2000, `${file} looks empty`);
      }),
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
  assert.match(joined, /Pairing Add a device .* One-time code 417-209-3551 Works once, within the next 9 min\. Cancel/);
  const unpaired = await chromium(BINARY, optionsUrl("options-unpaired")).then(visibleText);
  assert.match(unpaired, /Pairing Pair with my other device .* Code from your other device Pair/);
});

const sentBy = async (scenario, page = "popup/popup.html") => {
  const dom = await chromium(BINARY, `${base}/${page}?scenario=${scenario}`);
  const json = dom.match(/data-sent="([^"]*)"/)?.[1] ?? "[]";
  return { dom, sent: JSON.parse(json.replaceAll("&quot;", '"').replaceAll("&amp;", "&")) };
};

test("in the browser: Add a device sends pairing.invite and the code appears; Cancel sends pairing.cancel", { skip, timeout: 120000 }, async () => {
  const [invite, cancel, fails] = await Promise.all([sentBy("click-invite"), sentBy("click-cancel"), sentBy("click-invite-fails")]);
  assert.deepEqual(invite.sent, [{ type: "call", method: "pairing.invite", params: { account: ACCOUNT } }]);
  assert.match(visibleText(invite.dom), /One-time code 417-209-3551 Works once/);
  assert.doesNotMatch(visibleText(invite.dom), /Add a device Sync/, "one invitation at a time");
  assert.deepEqual(cancel.sent, [{ type: "call", method: "pairing.cancel", params: { account: ACCOUNT, pairing_id: PAIRING_ID } }]);
  assert.match(visibleText(fails.dom), /That did not work: only a paired device can add a device/);
  assert.deepEqual((await sentBy("click-setup")).sent, [{ type: "openOptionsPage" }]);
});

test("in the browser: a cancelled sign-in shows why, still waiting, and Sign in again asks the background", { skip, timeout: 60000 }, async () => {
  const [held, waiting] = await Promise.all([
    chromium(BINARY, popupUrl("sign-in-cancelled")).then(visibleText),
    chromium(BINARY, popupUrl("waiting-token")).then(visibleText),
  ]);
  assert.match(held, /Waiting for Thunderbird to sign in Thunderbird gave no sign-in token: Thunderbird could not sign in to imap\.gmail\.example with OAuth2 \(cancelled or refused\) .*Sign in again/);
  assert.doesNotMatch(waiting, /Sign in again/, "only once a sign-in gave nothing");
  const { sent } = await sentBy("click-sign-in-again");
  assert.deepEqual(sent, [{ type: "sign_in_again", account: ACCOUNT }]);
});

test("in the browser: the typed code goes to pairing.join in the host's form; a malformed one never leaves", { skip, timeout: 120000 }, async () => {
  const [typed, malformed] = await Promise.all([sentBy("join-typed"), sentBy("join-bad-format")]);
  assert.deepEqual(typed.sent, [{ type: "call", method: "pairing.join", params: { account: ACCOUNT, code: "417-209-3551" } }]);
  assert.match(visibleText(typed.dom), /Asking your other device to check the code…/);
  assert.deepEqual(malformed.sent, [{ probe: CODE_FIELD, value: "417-2O9-3551" }], "no host call, and what was typed stays to be fixed");
  assert.match(visibleText(malformed.dom), /A pairing code has only digits \(spaces and dashes are fine\), like 417-209-3551\./);
  assert.match(malformed.dom, /<input class="code-input"[^>]*aria-invalid="true"/);
  const unknown = await sentBy("join-unknown-device");
  assert.deepEqual(unknown.sent.map((m) => m.method ?? m.value), ["pairing.join", "999-209-3551"]);
  assert.match(visibleText(unknown.dom), /None of this account's devices has a code starting with those digits\./);
});

test("in the browser: the options page pairs too (the code field when unpaired, Add a device when paired)", { skip, timeout: 120000 }, async () => {
  const [join, invite] = await Promise.all([sentBy("options-join-code", "options/options.html"), sentBy("options-invite", "options/options.html")]);
  assert.deepEqual(join.sent.filter((m) => m.method?.startsWith("pairing.")), [
    { type: "call", method: "pairing.join", params: { account: ACCOUNT, code: "417-209-3551" } },
  ]);
  assert.match(visibleText(join.dom), /Pairing Pairing this device Asking your other device to check the code… Cancel/);
  assert.deepEqual(invite.sent.filter((m) => m.method?.startsWith("pairing.")), [{ type: "call", method: "pairing.invite", params: { account: ACCOUNT } }]);
  assert.match(visibleText(invite.dom), /Pairing Add a device .* One-time code 417-209-3551/);
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

test("in the browser: Thunderbird's accounts set up with one click: consent for a saved password, a typed one, OAuth2, or by hand", { skip, timeout: 120000 }, async () => {
  const page = "options/options.html";
  const [listed, consent, given, cancelled] = await Promise.all([
    chromium(BINARY, optionsUrl("options-tb-accounts")).then(visibleText),
    sentBy("options-tb-consent", page),
    sentBy("options-tb-consent-given", page),
    sentBy("options-tb-consent-cancelled", page),
  ]);
  assert.match(listed, /Your Thunderbird accounts .* Work — alice@example\.org In use Show Gmail — carol@gmail\.example Not set up Use with Autocrypt SMA Home — dave@example\.com Not set up Use with Autocrypt SMA University — erin@example\.edu Not set up/);
  assert.doesNotMatch(listed, /bob@example\.net Not set up/, "a POP3 account is not listed");
  // The page says where the password goes and asks; nothing is read before the consent click.
  assert.match(visibleText(consent.dom), /Thunderbird has a saved password for mail\.example\.com\. .* helper program, which keeps it in your system's keyring\. Hand it over\? Yes, hand over the password Cancel/);
  assert.deepEqual(consent.sent.filter((m) => m.experiment || m.method === "account.configure"), []);
  assert.deepEqual(given.sent.filter((m) => m.experiment || m.method === "account.configure"), [
    { experiment: "savedPassword", accountId: "account5" },
    {
      type: "call",
      method: "account.configure",
      params: { account: "dave@example.com", imap: { host: "mail.example.com", port: 143, security: "starttls", username: "dave", verify_tls: true }, password: "saved-in-thunderbird" },
    },
  ]);
  assert.match(visibleText(given.dom), /dave@example\.com is set up: the server accepted the login\. Now join below\./);
  assert.deepEqual(cancelled.sent.filter((m) => m.experiment || m.method === "account.configure"), []);
  const none = await sentBy("options-tb-consent-none", page);
  assert.deepEqual(none.sent.filter((m) => m.experiment || m.method === "account.configure"), [{ experiment: "savedPassword", accountId: "account5" }]);
  assert.match(visibleText(none.dom), /Thunderbird has no saved password for this account: type it below\./);
  assert.match(visibleText(none.dom), /Password for mail\.example\.com \(Thunderbird has none saved\)/);
  const [typed, oauth2, manual] = await Promise.all([sentBy("options-tb-typed", page), sentBy("options-tb-oauth2", page), sentBy("options-tb-manual", page)]);
  assert.deepEqual(typed.sent.filter((m) => m.experiment || m.method === "account.configure"), [
    {
      type: "call",
      method: "account.configure",
      params: { account: "alice@example.org", imap: { host: "imap.example.org", port: 993, security: "tls", username: "alice", verify_tls: true }, password: "typed once" },
    },
  ]);
  assert.doesNotMatch(typed.dom.replace(/data-sent="[^"]*"/, ""), /typed once/, "the typed password is not left in the page");
  assert.deepEqual(oauth2.sent.filter((m) => m.experiment || m.method === "account.configure" || m.method === "account.token"), [
    { experiment: "accessToken", accountId: "account4" },
    {
      type: "call",
      method: "account.configure",
      params: { account: "carol@gmail.example", imap: { host: "imap.gmail.example", port: 993, security: "tls", username: "carol@gmail.example", verify_tls: true }, oauth2: { source: "thunderbird", token: "token-from-thunderbird" } },
    },
    // The same token with its expiry (configure has none): the host renews before it runs out.
    { type: "call", method: "account.token", params: { account: "carol@gmail.example", token: "token-from-thunderbird", expires_in: 3599 } },
  ]);
  assert.deepEqual(manual.sent.filter((m) => m.probe || m.experiment || m.method === "account.configure"), [{ probe: "#imap-host", value: "imap.example.edu" }]);
});

test("in the browser: the prefer-encrypt checkbox sends account.set_prefer_encrypt and says it is saved for all devices", { skip, timeout: 120000 }, async () => {
  const { dom, sent } = await sentBy("options-prefer", "options/options.html");
  assert.deepEqual(sent.filter((m) => m.method === "account.set_prefer_encrypt"), [
    { type: "call", method: "account.set_prefer_encrypt", params: { account: "alice@example.org", value: "mutual" } },
  ]);
  assert.match(visibleText(dom), /Saved: encrypted mail preferred, on all your devices\./);
});

test("in the browser: the join step asks whether this is the first device and sends the answer", { skip, timeout: 120000 }, async () => {
  const [configured, unanswered] = await Promise.all([
    chromium(BINARY, optionsUrl("options-configured")),
    sentBy("options-join-unanswered", "options/options.html"),
  ]);
  // Neither answer chosen at first; Join needs one, and says so without calling the host.
  assert.match(
    visibleText(configured),
    /Name of this device Is this the first device you set up for this account\? Yes, this is my first device It creates the account's key\. No, I have another device with autocrypt-sma You will pair it with a code from that device\. Join/,
  );
  assert.doesNotMatch(configured, /<input type="radio"[^>]*checked/);
  assert.equal(unanswered.sent.filter((m) => m.method === "sma.join").length, 0);
  assert.match(visibleText(unanswered.dom), /Choose an answer first\. Join/);
  const joins = async (name) => (await sentBy(name, "options/options.html")).sent.filter((m) => m.method === "sma.join").map((m) => m.params);
  const [no, yes] = await Promise.all([joins("options-join-no-other-device"), joins("options-join-new-identity")]);
  assert.deepEqual(no, [{ account: ACCOUNT, device_name: "Thunderbird on Linux", first_device: false }]);
  assert.deepEqual(yes, [{ account: ACCOUNT, device_name: "Thunderbird on Linux", first_device: true }]);
});

test("in the browser: 'another device' that finds none is told so and can still be the first", { skip, timeout: 120000 }, async () => {
  const none = await chromium(BINARY, optionsUrl("options-join-no-other-device")).then(visibleText);
  assert.match(
    none,
    /Joined\. This device is waiting to be paired\. No other device of yours was found in this account yet\. Set up autocrypt-sma on your other device first, or, if you have none, choose “This is my first device”\. This is my first device/,
  );
  assert.doesNotMatch(none, /new identity/);
  const founded = await sentBy("options-found-here", "options/options.html");
  assert.deepEqual(founded.sent.filter((m) => m.method === "sma.join").map((m) => m.params.first_device), [false, true]);
  const text = visibleText(founded.dom);
  assert.match(text, /Joined\. This is the account's first device: it holds the account key\./);
  assert.doesNotMatch(text, /No other device of yours was found/);
});

test("in the browser: 'first device' over an existing setup says so plainly", { skip, timeout: 120000 }, async () => {
  const text = await chromium(BINARY, optionsUrl("options-join-new-identity")).then(visibleText);
  assert.match(
    text,
    /Joined\. This device created a new account key\. This account already had other devices, or an earlier setup\. This device started a new identity for the account, and the other devices will show a warning\. If they are yours, pair them again from this device \(“Add a device”\)\. If you did not expect other devices, someone else may have access to your mailbox: change its password\./,
  );
  assert.doesNotMatch(text, /No other device of yours was found/);
  assert.match(text, /Desktop not paired/);
});
