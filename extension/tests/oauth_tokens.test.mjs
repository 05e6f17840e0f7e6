// OAuth2 accounts from Thunderbird: the host's `account.token_needed` is answered with
// `account.token` carrying Thunderbird's token (through the background, a fake `messenger` with a
// stand-in for the autocryptAccounts Experiment, and a scripted host); "rejected" asks Thunderbird
// for a fresh token; one request at a time; `sync.state` with `waiting: "token"` is not an outage.

import { test } from "node:test";
import assert from "node:assert/strict";

import { FakeHost, FakeTimers, fakeMessenger, until } from "./fakes.mjs";
import { Background } from "../background/controller.js";
import { tokenParams } from "../background/oauth_tokens.js";

const ACCOUNT = "alice@gmail.example";
console.info = () => {};
console.warn = () => {};

function experiment({ auth = "oauth2", fail = null, expiresIn = 3599, gate = null } = {}) {
  const calls = [];
  const exp = {
    calls,
    fail, // changeable: the next sign-in's outcome
    incomingServer: async (id) => ({ accountId: id, host: "imap.gmail.example", port: 993, security: "tls", username: ACCOUNT, auth: id === "account2" ? auth : "password", savedPassword: false }),
    accessToken: async (id, refresh) => {
      calls.push([id, refresh]);
      if (gate) await gate;
      if (exp.fail) throw new Error(exp.fail);
      return { token: `token-${calls.length}`, expiresIn };
    },
  };
  return exp;
}

async function started(exp, accounts) {
  const host = new FakeHost({ "account.list": () => ({ accounts: [] }), "account.token": () => ({}) });
  const api = fakeMessenger({
    connect: host.connect,
    accounts: accounts ?? [
      { id: "account1", type: "imap", identities: [{ email: ACCOUNT }] }, // a password account with the same address
      { id: "account2", type: "imap", identities: [{ email: ACCOUNT.toUpperCase() }] },
      { id: "account3", type: "pop3", identities: [{ email: ACCOUNT }] },
    ],
  });
  api.autocryptAccounts = exp;
  const bg = await new Background(api, { timers: new FakeTimers(), now: () => 1_700_000_000_000 }).start();
  await until(() => host.callsOf("ping").length === 1, "connected");
  return { host, bg, api };
}

test("token_needed at connect: Thunderbird's token for the OAuth2 account with that address goes to the host", async () => {
  const exp = experiment();
  const { host } = await started(exp);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await until(() => host.callsOf("account.token").length === 1, "account.token");
  assert.deepEqual(host.callsOf("account.token")[0].params, { account: ACCOUNT, token: "token-1", expires_in: 3599 });
  assert.deepEqual(exp.calls, [["account2", false]]);
});

test("rejected: Thunderbird is asked to drop the token it holds and get a fresh one", async () => {
  const exp = experiment();
  const { host } = await started(exp);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "rejected" });
  await until(() => host.callsOf("account.token").length === 1, "account.token");
  assert.deepEqual(exp.calls, [["account2", true]]);
});

test("one answer at a time per account: a re-emitted request while Thunderbird signs in asks once", async () => {
  let open;
  const exp = experiment({ gate: new Promise((resolve) => { open = resolve; }) });
  const { host } = await started(exp);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  host.emit("account.token_needed", { account: ACCOUNT, reason: "expiring" });
  await until(() => exp.calls.length === 1, "asked Thunderbird");
  open();
  await until(() => host.callsOf("account.token").length === 1, "account.token");
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(exp.calls.length, 1);
  assert.equal(host.callsOf("account.token").length, 1);
});

test("no token to be had (sign-in cancelled, no OAuth2 account): no call, the reason kept for the popup", async () => {
  const exp = experiment({ fail: "Thunderbird could not sign in to imap.gmail.example with OAuth2 (cancelled or refused)" });
  const { host, bg } = await started(exp);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await until(() => bg.tokens.lastError.has(ACCOUNT), "failure recorded");
  assert.match(bg.tokens.lastError.get(ACCOUNT), /cancelled or refused/);
  host.emit("account.token_needed", { account: "nobody@example.org", reason: "connect" });
  await until(() => bg.tokens.lastError.has("nobody@example.org"), "failure recorded");
  assert.match(bg.tokens.lastError.get("nobody@example.org"), /no Thunderbird IMAP account for nobody@example.org signs in with OAuth2/);
  assert.equal(host.callsOf("account.token").length, 0);
});

test("expires_in only when known, capped at 86400", () => {
  assert.deepEqual(tokenParams("a", { token: "t", expiresIn: null }), { account: "a", token: "t" });
  assert.deepEqual(tokenParams("a", { token: "t", expiresIn: 0 }), { account: "a", token: "t" });
  assert.deepEqual(tokenParams("a", { token: "t", expiresIn: 999999 }), { account: "a", token: "t", expires_in: 86400 });
});

test("sync.state waiting for a token: offline without an error; the host's auth_failed kept; online clears both", async () => {
  const { host, bg } = await started(experiment(), []);
  host.emit("sync.state", { account: ACCOUNT, online: false, waiting: "token" });
  await until(() => bg.syncState(ACCOUNT).waiting === "token", "waiting");
  assert.equal(bg.syncState(ACCOUNT).error, null);
  const refused = { code: "auth_failed", message: "the server refused the OAuth2 token from Thunderbird; sign in again in Thunderbird (Account Settings → Server Settings)" };
  host.emit("sync.state", { account: ACCOUNT, online: false, waiting: "token", error: refused });
  await until(() => bg.syncState(ACCOUNT).error?.code === "auth_failed", "error");
  host.emit("sync.state", { account: ACCOUNT, online: true });
  await until(() => bg.syncState(ACCOUNT).online === true, "online");
  assert.equal(bg.syncState(ACCOUNT).waiting, null);
  assert.equal(bg.syncState(ACCOUNT).error, null);
});

const CANCELLED = "Thunderbird could not sign in to imap.gmail.example with OAuth2 (cancelled or refused)";
const settle = async () => { for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r)); };
const told = (api) => api.sent.filter((m) => m.type === "signin.changed" && m.account === ACCOUNT).length;

/** A background whose first sign-in (for a "rejected" token) gave nothing, and is now held. */
async function cancelledOnce() {
  const exp = experiment({ fail: CANCELLED });
  const started_ = await started(exp);
  started_.host.emit("account.token_needed", { account: ACCOUNT, reason: "rejected" });
  await until(() => started_.bg.tokens.held.has(ACCOUNT), "held");
  return { exp, ...started_ };
}

test("a cancelled sign-in is not retried on the host's next token_needed; the popup is told at once", async () => {
  const { exp, host, bg, api } = await cancelledOnce();
  assert.equal(told(api), 1, "signin.changed broadcast when the failure was recorded");
  for (const reason of ["connect", "rejected", "expiring"]) host.emit("account.token_needed", { account: ACCOUNT, reason });
  await settle();
  assert.deepEqual(exp.calls, [["account2", true]], "no second Thunderbird window");
  assert.equal(host.callsOf("account.token").length, 0);
  const view = await bg.accountOverview({ account: ACCOUNT, device_id: null });
  assert.equal(view.sign_in_held, true);
  assert.match(view.token_error, /cancelled or refused/);
});

test("Sign in again asks Thunderbird once (with the host's last reason); a success sends the token and clears it", async () => {
  const { exp, host, bg, api } = await cancelledOnce();
  host.emit("account.token_needed", { account: ACCOUNT, reason: "expiring" });
  await settle();
  exp.fail = CANCELLED; // closed again: held again, one window per press
  assert.deepEqual(await bg.handleMessage({ type: "sign_in_again", account: ACCOUNT }), { ok: true, result: { asked: true } });
  await until(() => exp.calls.length === 2 && bg.tokens.held.has(ACCOUNT), "held again");
  assert.deepEqual(exp.calls[1], ["account2", false], "the host's latest reason (expiring) decides refresh");
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await settle();
  assert.equal(exp.calls.length, 2);

  exp.fail = null;
  const before = told(api);
  await bg.handleMessage({ type: "sign_in_again", account: ACCOUNT });
  await until(() => host.callsOf("account.token").length === 1, "account.token");
  assert.deepEqual(host.callsOf("account.token")[0].params, { account: ACCOUNT, token: "token-3", expires_in: 3599 });
  await until(() => told(api) === before + 1, "popup told of the success");
  const view = await bg.accountOverview({ account: ACCOUNT, device_id: null });
  assert.deepEqual([view.sign_in_held, view.token_error], [false, null]);
  // Not held any more: the host's next request is answered as usual.
  host.emit("account.token_needed", { account: ACCOUNT, reason: "expiring" });
  await until(() => host.callsOf("account.token").length === 2, "answered again");
  assert.deepEqual(await bg.handleMessage({ type: "sign_in_again", account: ACCOUNT }), { ok: true, result: { asked: false } });
  await settle();
  assert.equal(exp.calls.length, 4, "the button does nothing when nothing is held");
});

test("settings changed (the add-on's account.configure, or Thunderbird's accounts or identities): asking resumes", async () => {
  const { exp, host, bg, api } = await cancelledOnce();
  host.handlers["account.configure"] = () => ({}); // the options page saved the account's settings
  const reply = await bg.handleMessage({ type: "call", method: "account.configure", params: { account: ACCOUNT } });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.equal(bg.tokens.held.has(ACCOUNT), false);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await until(() => exp.calls.length === 2 && bg.tokens.held.has(ACCOUNT), "asked once more, held again");

  for (const event of [api.accounts.onUpdated, api.identities.onUpdated, api.accounts.onCreated]) {
    const asked = exp.calls.length;
    event.fire("account2", { name: "Gmail" });
    assert.equal(bg.tokens.held.has(ACCOUNT), false);
    host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
    await until(() => exp.calls.length === asked + 1 && bg.tokens.held.has(ACCOUNT), "asked once more");
  }
});

test("a failure with no sign-in (no OAuth2 account in Thunderbird) is not held: the next request tries again", async () => {
  const exp = experiment();
  const { host, bg } = await started(exp, [{ id: "account1", type: "imap", identities: [{ email: ACCOUNT }] }]);
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await until(() => bg.tokens.lastError.has(ACCOUNT), "failure recorded");
  assert.equal(bg.tokens.held.has(ACCOUNT), false);
  bg.tokens.lastError.clear();
  host.emit("account.token_needed", { account: ACCOUNT, reason: "connect" });
  await until(() => bg.tokens.lastError.has(ACCOUNT), "tried again");
  assert.equal(exp.calls.length, 0, "Thunderbird's sign-in was never involved");
});
