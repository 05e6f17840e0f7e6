// The options page's logic: account choices, IMAP defaults, form checks, device rows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  accountChoices, imapDefaults, readImapForm, defaultDeviceName, deviceRow, firstDeviceAnswer, joinOutcome, aloneUnpaired,
} from "../options/form.js";
import { fakeMessenger } from "./fakes.mjs";
import { TB_ACCOUNTS } from "./popup_states.mjs";

const MESSAGES = JSON.parse(readFileSync(new URL("../_locales/en/messages.json", import.meta.url), "utf8"));
const i18n = fakeMessenger({ messages: MESSAGES }).i18n;
const t = (key, subs) => {
  assert.ok(MESSAGES[key], `missing message key ${key}`);
  return i18n.getMessage(key, subs);
};


test("accountChoices: one per identity address of mail accounts, host-only accounts after, marks", () => {
  const host = [
    { account: "alice@example.org", imap: {}, device_id: "aaaaaaaaaaaaaaaa" },
    { account: "carol@example.com", imap: {}, device_id: null },
  ];
  const choices = accountChoices(TB_ACCOUNTS, host, t);
  assert.deepEqual(choices.map((c) => [c.value, c.label, c.configured, c.joined]), [
    ["alice@example.org", "Work — alice@example.org (joined)", true, true],
    ["a.l@example.org", "Work — a.l@example.org", false, false],
    ["bob@example.net", "bob@example.net", false, false],
    ["carol@example.com", "carol@example.com (set up)", true, false],
  ]);
});

test("imapDefaults: the host's settings when it knows the account, else the address and port 993", () => {
  assert.deepEqual(imapDefaults("bob@example.net", undefined), {
    host: "", port: 993, security: "tls", username: "bob@example.net", verify_tls: true, placeholder: "imap.example.net",
  });
  const known = { imap: { host: "mail.example.org", port: 143, security: "starttls", username: "alice", verify_tls: false } };
  assert.deepEqual(imapDefaults("alice@example.org", known), {
    host: "mail.example.org", port: 143, security: "starttls", username: "alice", verify_tls: false, placeholder: "",
  });
});

test("readImapForm: builds account.configure params, refuses bad fields with a message key", () => {
  const good = { host: " imap.example.org ", port: "993", security: "tls", username: "alice", verify_tls: true, password: "s3cret" };
  assert.deepEqual(readImapForm("alice@example.org", good), {
    ok: true,
    params: { account: "alice@example.org", imap: { host: "imap.example.org", port: 993, security: "tls", username: "alice", verify_tls: true }, password: "s3cret" },
  });
  const bad = (over) => readImapForm("alice@example.org", { ...good, ...over }).errorKey;
  assert.equal(bad({ host: "" }), "errorHost");
  assert.equal(bad({ host: "imap.example.org/x" }), "errorHost");
  assert.equal(bad({ port: "0" }), "errorPort");
  assert.equal(bad({ port: "99999" }), "errorPort");
  assert.equal(bad({ port: "1.5" }), "errorPort");
  assert.equal(bad({ security: "ssl" }), "errorSecurity");
  assert.equal(bad({ username: "  " }), "errorUsername");
  assert.equal(bad({ password: "" }), "errorPassword");
  for (const key of ["errorHost", "errorPort", "errorSecurity", "errorUsername", "errorPassword"]) t(key);
});

test("defaultDeviceName and deviceRow", () => {
  assert.equal(defaultDeviceName("linux", t), "Thunderbird on Linux");
  assert.equal(defaultDeviceName("mac", t), "Thunderbird on macOS");
  const row = deviceRow({ device_id: "a".repeat(16), name: "Laptop", last_seen: 0, paired: true, self: true, stale: false }, t, () => "then");
  assert.deepEqual(row, { id: "a".repeat(16), name: "Laptop (this device)", rawName: "Laptop", status: "Paired", lastSeen: "then", self: true });
  const other = deviceRow({ device_id: "b".repeat(16), name: "Old", last_seen: 0, paired: false, self: false, stale: true }, t, () => "");
  assert.equal(other.status, "not paired, not seen for 90 days");
  const hidden = deviceRow({ device_id: "c".repeat(16), name: "Phone", last_seen: 5, paired: true, self: false, stale: false, announced: false }, t, () => "then");
  assert.equal(hidden.status, "Paired, its announcement is missing from the server (it may be hidden): remove it if you do not know it");
  assert.equal(hidden.lastSeen, "");
});

test("firstDeviceAnswer: the radio's value, or null while neither is chosen", () => {
  assert.equal(firstDeviceAnswer("yes"), true);
  assert.equal(firstDeviceAnswer("no"), false);
  assert.equal(firstDeviceAnswer(undefined), null);
  assert.equal(firstDeviceAnswer(""), null);
  for (const key of ["firstDeviceQuestion", "firstDeviceYes", "firstDeviceYesHint", "firstDeviceNo", "firstDeviceNoHint", "firstDeviceMissing"]) t(key);
});

test("joinOutcome: what the page says after sma.join, for each answer and what the SMA held", () => {
  const result = (first_device, identity_found) => ({ device_id: "a".repeat(16), first_device, identity_found, devices: [] });
  // "Yes": founded; over an existing identity that is a reset, said plainly.
  assert.deepEqual(joinOutcome(true, result(true, false)), { messageKey: "joinedFirst", notice: null });
  assert.deepEqual(joinOutcome(true, result(true, true)), { messageKey: "joinedNewIdentity", notice: "new-identity" });
  // "No": pair next; with nobody there, say so and offer to be the first device.
  assert.deepEqual(joinOutcome(false, result(false, true)), { messageKey: "joinedPairNext", notice: null });
  assert.deepEqual(joinOutcome(false, result(false, false)), { messageKey: "joinedWaiting", notice: "no-other-device" });
  // Joining again on a device that founded earlier: nothing new to warn about.
  assert.deepEqual(joinOutcome(false, result(true, true)), { messageKey: "joinedFirst", notice: null });
  for (const key of ["joinedFirst", "joinedNewIdentity", "joinedPairNext", "joinedWaiting", "noOtherDeviceFound", "noOtherDeviceButton", "newIdentityTitle", "newIdentityText"]) t(key);
  assert.equal(
    t("noOtherDeviceFound"),
    "No other device of yours was found in this account yet. Set up autocrypt-sma on your other device first, or, if you have none, choose “This is my first device”.",
  );
  assert.match(t("newIdentityText"), /started a new identity .* other devices will show a warning\. If they are yours, pair them again .* someone else may have access to your mailbox: change its password\./);
});

test("aloneUnpaired: the offer to be the first device stands only while this device is unpaired and alone", () => {
  const me = { device_id: "a".repeat(16), name: "Laptop", last_seen: 0, paired: false, self: true, stale: false };
  const other = { ...me, device_id: "b".repeat(16), name: "Desktop", self: false };
  assert.equal(aloneUnpaired([me]), true);
  assert.equal(aloneUnpaired([me, other]), false, "another device is there: pair with it");
  assert.equal(aloneUnpaired([{ ...me, paired: true }]), false, "this device holds the key");
  assert.equal(aloneUnpaired([]), false);
  assert.equal(aloneUnpaired(undefined), false);
});
