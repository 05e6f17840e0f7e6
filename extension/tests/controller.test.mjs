// The background controller against a fake `messenger` and a scripted host: fan-out, notifications,
// badge, overview, sync state, host missing.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { FakeHost, FakeTimers, fakeMessenger, hostError, until } from "./fakes.mjs";
import { Background } from "../background/controller.js";

const MESSAGES = JSON.parse(readFileSync(new URL("../_locales/en/messages.json", import.meta.url), "utf8"));
const ACCOUNT = "alice@example.org";
const SELF = { device_id: "aaaaaaaaaaaaaaaa", name: "Laptop", last_seen: 1700000000, paired: true, self: true, stale: false };
const OTHER = { device_id: "bbbbbbbbbbbbbbbb", name: "Desktop", last_seen: 1700000000, paired: true, self: false, stale: false };
// As pairing.list and the pairing.* events carry it (native_host/api/schemas/common.json).
const pairing = (over = {}) => ({
  pairing_id: "0123456789abcdef0123456789abcdef",
  role: "inviter",
  peer_device_id: null,
  peer_name: null,
  state: "inviting",
  code: "417-209-3551",
  expires_at: 1700000600,
  reason: null,
  ...over,
});

console.info = () => {};
console.warn = () => {};

async function started(handlers = {}, { missing = false } = {}) {
  const host = new FakeHost({
    "account.list": () => ({ accounts: [{ account: ACCOUNT, imap: {}, device_id: SELF.device_id }] }),
    "devices.list": () => ({ devices: [SELF, OTHER] }),
    "pairing.list": () => ({ pairings: [], unsolicited_requests: 0 }),
    sync: () => ({ announcements_read: 0, inbox_read: 0, devices: 2, rejected: 0 }),
    ...handlers,
  });
  host.missing = missing;
  const api = fakeMessenger({
    connect: host.connect,
    messages: MESSAGES,
    accounts: [{ id: "account1", type: "imap", identities: [{ email: ACCOUNT }] }],
    mail: { byId: { 7: { accountId: "account1", headers: { from: ["bob@example.net"], autocrypt: ["addr=bob@example.net; keydata=AAAA"] }, date: 1_699_999_000_000 } } },
  });
  const timers = new FakeTimers();
  let clock = 1_700_000_000_000;
  const bg = await new Background(api, { timers, now: () => clock }).start();
  return { host, api, bg, timers, tick: (ms) => { clock += ms; } };
}

test("connects, pings, then syncs each joined account once; status goes out to the pages", async () => {
  const { host, api, bg } = await started();
  await until(() => host.callsOf("sync").length === 1, "sync after connect");
  assert.deepEqual(host.calls.slice(0, 2).map((c) => c.method), ["hello", "ping"]);
  assert.deepEqual(host.callsOf("sync")[0].params, { account: ACCOUNT });
  await until(() => bg.syncState(ACCOUNT).last_sync !== null, "last sync");
  assert.equal(bg.syncState(ACCOUNT).online, true);
  assert.ok(api.sent.some((m) => m.type === "status" && m.status === "connected"));
});

test("host events are fanned out to the pages as {type: event}", async () => {
  const { host, api, bg } = await started();
  await until(() => bg.client.status === "connected", "connected");
  host.emit("peers.updated", { account: ACCOUNT, source: "mail", count: 1, addrs: ["bob@example.org"] });
  assert.deepEqual(api.sent.at(-1), {
    type: "event",
    event: "peers.updated",
    data: { account: ACCOUNT, source: "mail", count: 1, addrs: ["bob@example.org"] },
  });
});

test("a completed pairing notifies on both sides; clicking the notification opens the popup", async () => {
  const { host, api, bg } = await started();
  await until(() => bg.client.status === "connected", "connected");
  const done = pairing({ state: "completed", code: null, peer_device_id: "cccccccccccccccc", peer_name: "New phone" });
  host.emit("pairing.completed", { account: ACCOUNT, pairing: done });
  const [note] = api.notifications.created;
  assert.equal(note.id, "autocrypt-sma:pairing:0123456789abcdef0123456789abcdef");
  assert.equal(note.type, "basic");
  assert.equal(note.title, "Paired: alice@example.org");
  assert.equal(note.message, "“New phone” is now paired and holds the account key.");
  host.emit("pairing.completed", { account: ACCOUNT, pairing: { ...done, role: "joiner", pairing_id: "f".repeat(32), peer_name: "Laptop" } });
  assert.equal(api.notifications.created[1].message, "This device is paired and holds the account key.");

  api.notifications.onClicked.fire(note.id);
  await until(() => api.browserAction.popupsOpened === 1, "popup opened");
  assert.ok(api.notifications.cleared.includes(note.id));
  // A foreign notification id is none of our business.
  api.notifications.onClicked.fire("someone-else");
  await until(() => true);
  assert.equal(api.browserAction.popupsOpened, 1);
});

test("pairing.updated reaches the pages and counts as a sync, without a notification or a badge", async () => {
  const { host, api, bg, tick } = await started();
  await until(() => bg.syncState(ACCOUNT).last_sync !== null, "first sync");
  tick(7000);
  const data = { account: ACCOUNT, pairing: pairing({ state: "confirming", code: null, peer_name: "New phone" }) };
  host.emit("pairing.updated", data);
  assert.deepEqual(api.sent.at(-1), { type: "event", event: "pairing.updated", data });
  assert.equal(bg.syncState(ACCOUNT).last_sync, 1_700_000_007_000);
  host.emit("pairing.updated", { account: ACCOUNT, pairing: pairing({ state: "failed", code: null, reason: "the new device's code did not match" }) });
  await until(() => true);
  assert.equal(api.notifications.created.length, 0, "a failure is told by its security.alert, not twice");
  assert.equal(api.browserAction.badge, "", "nothing waits for an answer: no badge");
});

test("the pages' pairing calls go to the host as they are: invite, join with the code, cancel", async () => {
  const { host, bg } = await started({
    "pairing.invite": () => ({ pairing: pairing() }),
    "pairing.join": () => { throw hostError("invalid_params", "params.code: no device of this account has the number 999"); },
    "pairing.cancel": ({ pairing_id: id }) => ({ pairing: pairing({ pairing_id: id, state: "rejected", code: null }) }),
  });
  await until(() => bg.client.status === "connected", "connected");
  const invited = await bg.handleMessage({ type: "call", method: "pairing.invite", params: { account: ACCOUNT } });
  assert.equal(invited.result.pairing.code, "417-209-3551");
  const joined = await bg.handleMessage({ type: "call", method: "pairing.join", params: { account: ACCOUNT, code: "999-000-0000" } });
  assert.deepEqual(joined.error, { code: "invalid_params", message: "params.code: no device of this account has the number 999" });
  const cancelled = await bg.handleMessage({ type: "call", method: "pairing.cancel", params: { account: ACCOUNT, pairing_id: "a".repeat(32) } });
  assert.equal(cancelled.result.pairing.state, "rejected");
  assert.deepEqual(host.callsOf("pairing.join")[0].params, { account: ACCOUNT, code: "999-000-0000" });
});

test("sync.state offline keeps the error; online again clears it and moves last sync", async () => {
  const { host, bg, tick } = await started();
  await until(() => bg.syncState(ACCOUNT).last_sync !== null, "first sync");
  const first = bg.syncState(ACCOUNT).last_sync;
  host.emit("sync.state", { account: ACCOUNT, online: false, error: { code: "imap_unavailable", message: "refused" } });
  assert.equal(bg.syncState(ACCOUNT).online, false);
  assert.equal(bg.syncState(ACCOUNT).error.message, "refused");
  assert.equal(bg.syncState(ACCOUNT).last_sync, first);
  tick(5000);
  host.emit("sync.state", { account: ACCOUNT, online: true });
  assert.deepEqual(bg.syncState(ACCOUNT), { online: true, error: null, last_sync: first + 5000, waiting: null });
});

test("security alerts are kept (newest first, bounded) and notified", async () => {
  const { host, api, bg } = await started();
  await until(() => bg.client.status === "connected", "connected");
  for (let i = 0; i < 7; i++) host.emit("security.alert", { account: ACCOUNT, kind: "inbox", message: `bad ${i}` });
  const alerts = bg.alerts.get(ACCOUNT);
  assert.equal(alerts.length, 5);
  assert.equal(alerts[0].message, "bad 6");
  assert.ok(api.notifications.created.some((n) => n.message === "bad 0"));
});

test("a device removed elsewhere: the user is told to change the mailbox password; expiry proposals are shown", async () => {
  const { host, api, bg } = await started();
  await until(() => bg.client.status === "connected", "connected");
  host.emit("devices.member_removed", { account: ACCOUNT, device_id: OTHER.device_id, name: "Desktop", by: SELF.device_id, left: false, by_this_device: true });
  await until(() => api.notifications.created.length === 1, "notified");
  const [note] = api.notifications.created;
  assert.match(note.title, /A device was removed from alice@example\.org/);
  assert.match(note.message, /“Desktop”.*lost or stolen, change your mailbox password/);
  assert.equal(bg.alerts.get(ACCOUNT)[0].kind, "device_removed");
  host.emit("devices.expiry_proposed", { account: ACCOUNT, after_days: 90, devices: [{ device_id: OTHER.device_id, name: "Desktop", last_seen: 1, last_heard: null }] });
  await until(() => api.notifications.created.length === 2, "proposal notified");
  assert.match(api.notifications.created[1].message, /Desktop gave no sign of life for 90 days\. Nothing was removed/);
});

test("at connect, an account the host lists without a device has its remembered keys taken out of Thunderbird", async () => {
  const { host, bg } = await started({ "account.list": () => ({ accounts: [{ account: ACCOUNT, device_id: null }] }) });
  const forgotten = [];
  bg.openpgp.forgetIfRemoved = async (account) => { forgotten.push(account); return null; };
  await until(() => forgotten.length === 1, "checked at connect");
  assert.deepEqual(forgotten, [ACCOUNT]);
  assert.deepEqual(host.callsOf("sync"), [], "no sync for an account without a device");
});

test("overview: host status, accounts with devices, pairings, ignored requests, sync state and alerts", async () => {
  const { bg } = await started({ "pairing.list": () => ({ pairings: [pairing()], unsolicited_requests: 2 }) });
  await until(() => bg.syncState(ACCOUNT).last_sync !== null, "sync");
  const view = await bg.handleMessage({ type: "overview" });
  assert.equal(view.status, "connected");
  assert.equal(view.host_version, "0.1.0");
  assert.equal(view.accounts.length, 1);
  const [a] = view.accounts;
  assert.equal(a.account, ACCOUNT);
  assert.equal(a.joined, true);
  assert.equal(a.paired, true);
  assert.equal(a.devices.length, 2);
  assert.equal(a.pairings[0].code, "417-209-3551");
  assert.equal(a.unsolicited_requests, 2);
  assert.equal(a.sync.online, true);
  assert.equal(a.error, null);
});

test("overview: a configured account not joined yet skips the device calls; errors travel as data", async () => {
  const { host, bg } = await started({
    "account.list": () => ({ accounts: [{ account: ACCOUNT, imap: {}, device_id: null }, { account: "b@example.org", imap: {}, device_id: "dddddddddddddddd" }] }),
    "devices.list": ({ account }) => { if (account === "b@example.org") throw hostError("not_configured", "gone"); return { devices: [] }; },
  });
  await until(() => bg.client.status === "connected", "connected");
  const view = await bg.handleMessage({ type: "overview" });
  assert.equal(view.accounts[0].joined, false);
  assert.equal(view.accounts[0].unsolicited_requests, 0);
  assert.equal(host.callsOf("devices.list").filter((c) => c.params.account === ACCOUNT).length, 0);
  assert.deepEqual(view.accounts[1].error, { code: "not_configured", message: "gone" });
});

test("host not installed: status host_missing, the overview says so without calling, retries with backoff", async () => {
  const { bg, host, timers } = await started({}, { missing: true });
  await until(() => bg.client.status === "host_missing", "host_missing");
  const view = await bg.handleMessage({ type: "overview" });
  assert.equal(view.status, "host_missing");
  assert.equal(view.accounts, null);
  assert.match(view.last_error.message, /No such native application/);
  timers.advance(500);
  assert.equal(host.ports.length, 2);
});

test("call: the sync method marks last sync; errors come back with their code", async () => {
  const { bg, tick } = await started({ "pairing.cancel": () => { throw hostError("pairing_expired", "too late"); } });
  await until(() => bg.syncState(ACCOUNT).last_sync !== null, "sync");
  tick(1000);
  const before = bg.syncState(ACCOUNT).last_sync;
  const reply = await bg.handleMessage({ type: "call", method: "sync", params: { account: ACCOUNT } });
  assert.equal(reply.ok, true);
  assert.equal(bg.syncState(ACCOUNT).last_sync, before + 1000);
  const refused = await bg.handleMessage({ type: "call", method: "pairing.cancel", params: { account: ACCOUNT, pairing_id: "x" } });
  assert.deepEqual(refused, { ok: false, error: { code: "pairing_expired", message: "too late" } });
});

test("a request the host never answers times out with code timeout", async () => {
  const { bg, timers } = await started({ "devices.list": undefined });
  await until(() => bg.client.status === "connected", "connected");
  const reply = bg.handleMessage({ type: "call", method: "devices.list", params: { account: ACCOUNT } });
  timers.advance(20000);
  assert.deepEqual((await reply).error.code, "timeout");
});

test("new mail in a matching account reaches peers.ingest as a base64 header block", async () => {
  const { host, api, bg } = await started({ "peers.ingest": () => ({ updated: true, addr: "bob@example.net" }) });
  await until(() => bg.client.status === "connected", "connected");
  const [listener] = api.messages.onNewMailReceived.fns;
  await listener({ accountId: "account1" }, api.messages.page(["7"]));
  const [ingest] = host.callsOf("peers.ingest");
  assert.equal(ingest.params.account, ACCOUNT);
  assert.equal(
    Buffer.from(ingest.params.message, "base64").toString(),
    "From: bob@example.net\r\nAutocrypt: addr=bob@example.net; keydata=AAAA\r\n\r\n",
  );
});

test("scan.start / scan.status / scan.cancel through the page messages", async () => {
  const { host, bg } = await started({ "peers.ingest": () => ({ updated: false, addr: "bob@example.net" }) });
  await until(() => bg.client.status === "connected", "connected");
  const scan = await bg.handleMessage({ type: "scan.start", account: ACCOUNT });
  assert.equal(scan.running, true);
  await bg.mail.scanDone;
  const status = await bg.handleMessage({ type: "scan.status" });
  assert.equal(status.scanned, 1);
  assert.equal(status.running, false);
  assert.equal(host.callsOf("peers.ingest").length, 1);
  assert.equal((await bg.handleMessage({ type: "scan.cancel" })).cancelled, false);
});

test("where openPopup is refused or missing, a notification click opens the popup page in a window", async () => {
  const { host, api, bg } = await started();
  await until(() => bg.client.status === "connected", "connected");
  api.browserAction.openPopup = async () => { throw new Error("openPopup requires a user gesture"); };
  host.emit("pairing.completed", { account: ACCOUNT, pairing: pairing({ state: "completed", code: null }) });
  api.notifications.onClicked.fire(api.notifications.created[0].id);
  await until(() => api.windows.created.length === 1, "window");
  assert.deepEqual(api.windows.created[0], { url: "moz-extension://fake/popup/popup.html", type: "popup", width: 460, height: 620 });
  delete api.browserAction.openPopup;
  api.notifications.onClicked.fire(api.notifications.created[0].id);
  await until(() => api.windows.created.length === 2, "second window");
});

test("pages cannot ask for the account's secret key; the background's OpenPGP import can", async () => {
  const { host, bg, api } = await started({
    "account.key": () => ({ fingerprint: "A".repeat(40), public_key: "-----BEGIN PGP PUBLIC KEY BLOCK-----" }),
    "account.secret_key": () => ({ fingerprint: "A".repeat(40), secret_key: "-----BEGIN PGP PRIVATE KEY BLOCK-----\n", previous: [] }),
    "peers.list": () => ({ peers: [], cursor: null }),
  });
  await until(() => bg.client.status === "connected", "connected");
  const refused = await bg.handleMessage({ type: "call", method: "account.secret_key", params: { account: ACCOUNT } });
  assert.equal(refused.error.code, "invalid_method");
  assert.equal(host.callsOf("account.secret_key").length, 0);

  const imported = [];
  api.autocryptOpenPGP = {
    support: async () => ({ supported: true, version: "153.7.0" }),
    identityState: async (email) => ({ email, identities: [{ id: "id1", email, keyId: null, fingerprint: null, secret: false }] }),
    keyStatus: async (fingerprint) => ({ fingerprint, present: false, secret: false, personal: false, acceptance: null }),
    importSecretKey: async (key) => { imported.push(key.fingerprint); return { fingerprint: key.fingerprint, identitiesChanged: ["id1"] }; },
    importPublicKey: async () => ({}),
  };
  host.emit("pairing.completed", { account: ACCOUNT, pairing: pairing({ role: "joiner", state: "completed", code: null }) });
  await until(() => imported.length === 1, "secret key imported after pairing");
  assert.equal(host.callsOf("account.secret_key").length, 1);
  await until(async () => (await bg.overview()).accounts?.[0]?.openpgp?.state === "ok", "status in the overview");
});
