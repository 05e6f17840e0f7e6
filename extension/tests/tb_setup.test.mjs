// The options page's set-up from Thunderbird's own settings, without the DOM: the accounts listed,
// their state, what one click needs, and the account.configure params (exactly one secret).

import { test } from "node:test";
import assert from "node:assert/strict";

import { imapAccountsOf, accountState, setupPlan, setupParams, formFromServer } from "../options/tb_setup.js";
import { TB_ACCOUNTS_SETUP, TB_SERVERS } from "./popup_states.mjs";

const server = (over = {}) => ({ accountId: "account1", host: "imap.example.org", port: 993, security: "tls", username: "alice", auth: "password", savedPassword: false, ...over });

test("only IMAP accounts with an address are listed, by their first identity's address", () => {
  const listed = imapAccountsOf([...TB_ACCOUNTS_SETUP, { id: "account9", type: "imap", name: "x", identities: [{ email: "" }] }]);
  assert.deepEqual(listed.map((a) => [a.accountId, a.email]), [["account1", "alice@example.org"], ["account4", "carol@gmail.example"], ["account5", "dave@example.com"], ["account6", "erin@example.edu"]]);
});

test("state: joined, configured (case-insensitive address) or new", () => {
  assert.equal(accountState("Alice@Example.org", [{ account: "alice@example.org", device_id: "a".repeat(16) }]), "joined");
  assert.equal(accountState("alice@example.org", [{ account: "alice@example.org", device_id: null }]), "configured");
  assert.equal(accountState("alice@example.org", []), "new");
});

test("one click needs: consent for a saved password, a token for OAuth2, a typed password, else the form", () => {
  assert.equal(setupPlan(server({ savedPassword: true })), "saved-password");
  assert.equal(setupPlan(server()), "password");
  assert.equal(setupPlan(server({ auth: "oauth2", savedPassword: true })), "oauth2");
  assert.equal(setupPlan(server({ auth: "other" })), "manual");
  assert.equal(setupPlan(server({ security: null })), "manual");
  assert.equal(setupPlan(null), "manual");
  for (const s of Object.values(TB_SERVERS)) assert.ok(["saved-password", "password", "oauth2", "manual"].includes(setupPlan(s)));
});

test("configure params carry exactly one secret: the password, or Thunderbird's OAuth2 token", () => {
  const imap = { host: "imap.example.org", port: 993, security: "tls", username: "alice", verify_tls: true };
  assert.deepEqual(setupParams("alice@example.org", server(), { password: "pw" }), { account: "alice@example.org", imap, password: "pw" });
  assert.deepEqual(setupParams("alice@example.org", server({ auth: "oauth2" }), { token: "tok" }), { account: "alice@example.org", imap, oauth2: { source: "thunderbird", token: "tok" } });
});

test("the form by hand starts from Thunderbird's settings where they fit", () => {
  assert.deepEqual(formFromServer(server({ security: "starttls", port: 143 })), { host: "imap.example.org", port: 143, security: "starttls", username: "alice", verify_tls: true, placeholder: "" });
  assert.equal(formFromServer(server({ security: null })), null);
  assert.equal(formFromServer(null), null);
});
