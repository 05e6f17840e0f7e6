// The popup's view model for every state, with a translator that fails on unknown message keys.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { popupView, visiblePairings, relativeTime } from "../popup/view.js";
import { STATES, NOW, pairing } from "./popup_states.mjs";
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

test("no account: set-up prompt; not joined: join hint, no pair button", () => {
  assert.equal(view("no-account").setupNeeded, true);
  const [a] = view("not-joined").accounts;
  assert.equal(a.needsJoin, true);
  assert.equal(a.canPair, false);
  assert.deepEqual(a.rows.map((r) => r.value), ["No", "—", "—", "—"]);
});

test("joined, not paired: Pair this device; while a request is open the button hides", () => {
  const [a] = view("joined-unpaired").accounts;
  assert.equal(a.canPair, true);
  assert.equal(a.rows[1].value, "Not paired yet");
  const [b] = view("initiator-requested").accounts;
  assert.equal(b.canPair, false);
  assert.equal(b.pairings[0].busy, true);
  assert.deepEqual(b.pairings[0].actions.map((x) => x.action), ["reject"]);
});

test("initiator showing: the code with Confirm (pairing.approve) and Cancel", () => {
  const [p] = view("initiator-showing").accounts[0].pairings;
  assert.equal(p.code, "4821 0937 5516 2284");
  assert.equal(p.title, "Pairing this device");
  assert.deepEqual(p.actions.map((a) => [a.action, a.label]), [["approve", "Confirm"], ["reject", "Cancel"]]);
});

test("responder showing: the code with Approve and Reject, the new device named", () => {
  const [p] = view("responder-showing").accounts[0].pairings;
  assert.equal(p.code, "4821 0937 5516 2284");
  assert.equal(p.title, "“Phone” wants to join");
  assert.equal(p.codeLabel, "Code for “Phone”");
  assert.deepEqual(p.actions.map((a) => [a.action, a.label]), [["approve", "Approve"], ["reject", "Reject"]]);
});

test("finished pairings show their outcome without buttons; a failure gives the reason", () => {
  const [done] = view("initiator-completed").accounts[0].pairings;
  assert.equal(done.outcome, "success");
  assert.deepEqual(done.actions, []);
  const [rejected] = view("responder-rejected").accounts[0].pairings;
  assert.equal(rejected.outcome, "failure");
  assert.equal(rejected.text, "The pairing was rejected.");
  const failed = popupView({ ...STATES["responder-rejected"], accounts: [{ ...STATES["responder-rejected"].accounts[0], pairings: [pairing({ state: "failed", sas: null, reason: "key check failed" })] }] }, NOW, t);
  assert.equal(failed.accounts[0].pairings[0].text, "The pairing failed: key check failed");
});

test("visiblePairings: open ones, plus the newest recent finished one per role", () => {
  const old = pairing({ pairing_id: "1".repeat(32), state: "expired", expires_at: NOW / 1000 - 10 });
  const recent = pairing({ pairing_id: "2".repeat(32), state: "completed" });
  const open = pairing({ pairing_id: "3".repeat(32), role: "initiator", state: "requested" });
  assert.deepEqual(visiblePairings([open, recent, old], NOW).map((p) => p.pairing_id), [open.pairing_id, recent.pairing_id]);
  assert.deepEqual(visiblePairings([old], NOW), []);
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
