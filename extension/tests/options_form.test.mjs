// The options page's logic: account choices, IMAP defaults, form checks, device rows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { accountChoices, imapDefaults, readImapForm, defaultDeviceName, deviceRow } from "../options/form.js";
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
});
