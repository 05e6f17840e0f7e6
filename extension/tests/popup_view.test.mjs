// The popup's view model (and lib/pairing_view.js) for every state, with a translator that fails on unknown message keys.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { popupView, relativeTime } from "../popup/view.js";
import { pairingView, visiblePairings, expiryText } from "../lib/pairing_view.js";
import { STATES, NOW, CODE, pairing } from "./popup_states.mjs";
import { fakeMessenger } from "./fakes.mjs";

const MESSAGES = JSON.parse(readFileSync(new URL("../_locales/en/messages.json", import.meta.url), "utf8"));
const i18n = fakeMessenger({ messages: MESSAGES }).i18n;
const used = new Set();
const t = (key, subs) => {
  assert.ok(MESSAGES[key], `missing message key ${key}`);
  used.add(key);
  return i18n.getMessage(key, subs);
};
const view = (name) => popupView(STATES[name], NOW, t);

test("every state renders with known message keys only", () => {
  for (const name of Object.keys(STATES)) view(name);
  assert.ok(used.size > 30);
});

test("host missing: install command shown, no accounts, check-again offered", () => {
  const v = view("host-missing");
  assert.equal(v.showInstall, true);
  assert.equal(v.showCheckAgain, true);
  assert.equal(v.lastError, null, "the install hint says it all");
  assert.deepEqual(v.accounts, []);
  assert.equal(v.statusText, "Not installed");
});

test("disconnected: the port's error is shown", () => {
  const v = view("host-disconnected");
  assert.equal(v.lastError, "native host exited");
  assert.equal(v.showInstall, false);
});

test("no account: set-up prompt; not joined: join hint, nothing to pair with yet", () => {
  assert.equal(view("no-account").setupNeeded, true);
  const [a] = view("not-joined").accounts;
  assert.equal(a.needsJoin, true);
  assert.equal(a.canJoin, false);
  assert.equal(a.canInvite, false);
  assert.deepEqual(a.rows.map((r) => r.value), ["No", "—", "—", "—"]);
});

test("joined, not paired: the code field, no Add a device; paired: Add a device, no code field", () => {
  const [unpaired] = view("joined-unpaired").accounts;
  assert.equal(unpaired.rows[1].value, "Not paired yet");
  assert.deepEqual([unpaired.canJoin, unpaired.canInvite], [true, false]);
  const [paired] = view("paired").accounts;
  assert.deepEqual([paired.canJoin, paired.canInvite], [false, true]);
  assert.equal(paired.unsolicitedNotice, null);
});

test("the popup has no Approve anywhere: only Cancel, and only before anything secret moves", () => {
  const actions = Object.keys(STATES).flatMap((name) => view(name).accounts.flatMap((a) => a.pairings.flatMap((p) => p.actions)));
  assert.ok(actions.length >= 2);
  assert.deepEqual([...new Set(actions.map((a) => [a.action, a.label].join("=")))], ["cancel=Cancel"]);
});

test("the existing device shows the one-time code with what is left of its ten minutes, and Cancel", () => {
  const [a] = view("inviter-code").accounts;
  const [p] = a.pairings;
  assert.equal(p.code, CODE);
  assert.equal(p.codeLabel, "One-time code");
  assert.equal(p.expiry, "Works once, within the next 9 min.");
  assert.equal(p.title, "Add a device");
  assert.match(p.text, /On the new device, .*“Pair with my other device” and type this code/);
  assert.equal(p.busy, false);
  assert.equal(a.canInvite, false, "one open invitation at a time: the button hides while the code is shown");
});

test("then the new device used the code: progress named after it, Cancel still offered; completed", () => {
  const [confirming] = view("inviter-confirming").accounts[0].pairings;
  assert.equal(confirming.code, null, "the code is used up once a device used it");
  assert.equal(confirming.busy, true);
  assert.equal(confirming.title, "Adding “Phone”");
  assert.equal(confirming.text, "“Phone” typed the code. Checking it…");
  const [done] = view("inviter-completed").accounts[0].pairings;
  assert.deepEqual([done.outcome, done.text, done.actions.length], ["success", "“Phone” is now paired.", 0]);
});

test("the new device: asking, receiving, paired", () => {
  const [joining] = view("joiner-joining").accounts[0].pairings;
  assert.deepEqual([joining.title, joining.busy, joining.code], ["Pairing this device", true, null]);
  assert.deepEqual(joining.actions.map((x) => x.action), ["cancel"]);
  assert.equal(view("joiner-joining").accounts[0].canJoin, false, "no second code field while a join runs");
  const [receiving] = view("joiner-receiving").accounts[0].pairings;
  assert.equal(receiving.text, "The code matched. Receiving the account key from “Desktop”…");
  assert.deepEqual(receiving.actions, []);
  const [a] = view("joiner-completed").accounts;
  assert.deepEqual([a.pairings[0].outcome, a.pairings[0].text], ["success", "This device is paired."]);
  assert.deepEqual([a.canJoin, a.canInvite], [false, true]);
});

test("a wrong code: both sides say so and how to start again; the new device gets the field back", () => {
  const [a] = view("joiner-wrong-code").accounts;
  const [p] = a.pairings;
  assert.deepEqual([p.outcome, p.wrongCode], ["failure", true]);
  assert.equal(p.text, "The code did not match: start again on your other device.");
  assert.equal(a.canJoin, true);
  const [i] = view("inviter-wrong-code").accounts[0].pairings;
  assert.equal(i.wrongCode, true);
  assert.match(i.text, /did not match, so nothing was shared\. Choose “Add a device” to start again/);
});

test("other endings: another failure gives the host's reason; cancelled; expired", () => {
  const ended = (over) => pairingView(pairing({ code: null, ...over }), NOW, t).text;
  assert.equal(ended({ state: "failed", reason: "the key transfer did not verify: bad tag" }), "The pairing failed: the key transfer did not verify: bad tag");
  assert.equal(ended({ state: "failed", reason: null }), "The pairing failed: no reason given");
  assert.equal(ended({ state: "rejected", reason: "the new device cancelled" }), "The pairing was cancelled.");
  assert.match(ended({ state: "expired" }), /expired\. Choose “Add a device”/);
  assert.match(ended({ role: "joiner", state: "expired" }), /Start again on your other device/);
});

test("pairings nobody started were ignored: a calm notice with the count", () => {
  const [a] = view("paired-unsolicited").accounts;
  assert.equal(a.unsolicitedNotice, "Pairing requests that nobody started on this device were ignored (3). Nothing was shared, and there is nothing you need to do.");
  assert.deepEqual(a.errors, [], "not an error");
});

test("visiblePairings: open ones, plus the newest recent finished one per role", () => {
  const old = pairing({ pairing_id: "1".repeat(32), state: "expired", expires_at: NOW / 1000 - 10 });
  const recent = pairing({ pairing_id: "2".repeat(32), state: "completed" });
  const open = pairing({ pairing_id: "3".repeat(32), role: "joiner", state: "joining" });
  assert.deepEqual(visiblePairings([open, recent, old], NOW).map((p) => p.pairing_id), [open.pairing_id, recent.pairing_id]);
  assert.deepEqual(visiblePairings([old], NOW), []);
});

test("expiryText rounds down and says when less than a minute is left", () => {
  assert.equal(expiryText(NOW / 1000 + 600, NOW, t), "Works once, within the next 10 min.");
  assert.equal(expiryText(NOW / 1000 + 119, NOW, t), "Works once, within the next 1 min.");
  assert.equal(expiryText(NOW / 1000 + 59, NOW, t), "Works once, for less than a minute more.");
  assert.equal(expiryText(NOW / 1000 - 5, NOW, t), "Works once, for less than a minute more.");
});

test("errors: sync offline with the server's words, security alerts, scan progress", () => {
  const v = view("paired-errors");
  const [a] = v.accounts;
  assert.deepEqual(a.errors, [
    "Cannot reach the mail server: imap.example.org: connection refused",
    "Security alert: a message in this device's inbox failed its signature check",
  ]);
  assert.equal(a.rows[3].value, "2 h ago");
  assert.match(v.scanText, /150 of at most 5000/);
});

test("relativeTime", () => {
  assert.equal(relativeTime(null, NOW, t), "—");
  assert.equal(relativeTime(NOW - 10_000, NOW, t), "just now");
  assert.equal(relativeTime(NOW - 5 * 60000, NOW, t), "5 min ago");
  assert.equal(relativeTime(NOW - 3 * 86400000, NOW, t), "3 days ago");
});

test("OAuth2 waiting for Thunderbird's token: said as such, not as an unreachable server", () => {
  const waiting = view("waiting-token").accounts[0];
  assert.equal(waiting.waiting, "Waiting for Thunderbird to sign in");
  assert.deepEqual(waiting.errors, []);
  const refused = view("token-refused").accounts[0];
  assert.equal(refused.waiting, "Waiting for Thunderbird to sign in");
  assert.deepEqual(refused.errors, ["the server refused the OAuth2 token from Thunderbird; sign in again in Thunderbird (Account Settings → Server Settings)"]);
  const noToken = popupView({ ...STATES["waiting-token"], accounts: [{ ...STATES["waiting-token"].accounts[0], token_error: "sign-in cancelled" }] }, NOW, t).accounts[0];
  assert.deepEqual(noToken.errors, ["Thunderbird gave no sign-in token: sign-in cancelled"]);
  assert.equal(view("paired").accounts[0].waiting, null);
  assert.equal(noToken.canSignInAgain, false, "a failure that is retried by itself offers no button");
});

test("a cancelled sign-in, held: waiting with the reason and Sign in again; the button only then", () => {
  const [held] = view("sign-in-cancelled").accounts;
  assert.equal(held.waiting, "Waiting for Thunderbird to sign in");
  assert.deepEqual(held.errors, ["Thunderbird gave no sign-in token: Thunderbird could not sign in to imap.gmail.example with OAuth2 (cancelled or refused)"]);
  assert.equal(held.canSignInAgain, true);
  // Held before the host's sync.state reached the background: still said as waiting, not as fine.
  const early = popupView({ ...STATES.paired, accounts: [{ ...STATES.paired.accounts[0], token_error: "closed", sign_in_held: true }] }, NOW, t).accounts[0];
  assert.equal(early.waiting, "Waiting for Thunderbird to sign in");
  assert.deepEqual([early.canSignInAgain, early.errors], [true, ["Thunderbird gave no sign-in token: closed"]]);
  for (const name of ["waiting-token", "token-refused", "paired"]) assert.equal(view(name).accounts[0].canSignInAgain, false, name);
  assert.match(view("paired-errors").accounts[0].errors[0], /^Cannot reach the mail server/);
});
