// OpenPgpSync against a fake of the Experiment API that keeps a key store the way Thunderbird's
// does (secret keys, personal acceptance, per-address acceptance that a later import never
// downgrades), and a scripted host.

import test from "node:test";
import assert from "node:assert/strict";

import { OpenPgpSync, SETTING_KEY, APPLIED_KEY_PREFIX, ACCOUNT_KEYS_PREFIX } from "../background/openpgp_sync.js";
import { fakeMessenger } from "./fakes.mjs";

const ACCOUNT = "me@example.org";
const FPR = "A".repeat(40);
const OLD = "B".repeat(40);
const CAROL = "C".repeat(40);
const DAVE = "D".repeat(40);
const ARMORED = (fpr) => `-----BEGIN PGP PRIVATE KEY BLOCK-----\n${fpr}\n-----END PGP PRIVATE KEY BLOCK-----\n`;

function fakeOpenPGP({ supported = true, identities = [ACCOUNT] } = {}) {
  const keys = new Map(); // fpr -> {secret, personal, acceptance: Map(email -> level)}
  const ids = identities.map((email, i) => ({ id: `id${i + 1}`, email, keyId: null }));
  const calls = [];
  return {
    keys,
    ids,
    calls,
    async support() {
      return supported ? { supported: true, version: "153.7.0" } : { supported: false, version: "160.0", reason: "Thunderbird 160.0 lacks OpenPGP internals autocrypt-sma uses: RNP.deleteKey" };
    },
    async identityState(email) {
      return {
        email,
        identities: ids.filter((i) => i.email === email).map((i) => {
          const fingerprint = [...keys.keys()].find((f) => f.endsWith(i.keyId ?? "-")) ?? null;
          return { ...i, fingerprint, secret: Boolean(fingerprint && keys.get(fingerprint).secret) };
        }),
      };
    },
    async keyStatus(fingerprint, email) {
      const k = keys.get(fingerprint);
      return { fingerprint, present: Boolean(k), secret: Boolean(k?.secret), personal: Boolean(k?.personal), acceptance: email ? k?.acceptance.get(email) ?? "undecided" : null };
    },
    async importSecretKey({ armored, fingerprint, personalFor }) {
      calls.push(["importSecretKey", fingerprint, personalFor ?? null]);
      assert.match(armored, /BEGIN PGP PRIVATE KEY BLOCK/);
      keys.set(fingerprint, { secret: true, personal: true, acceptance: new Map() });
      const changed = [];
      for (const i of ids) if (personalFor && i.email === personalFor && i.keyId !== fingerprint.slice(-16)) { i.keyId = fingerprint.slice(-16); changed.push(i.id); }
      return { fingerprint, identitiesChanged: changed };
    },
    async forgetAccountKeys({ email, fingerprints }) {
      calls.push(["forgetAccountKeys", email, [...fingerprints].sort()]);
      const identitiesCleared = [];
      for (const i of ids) {
        if (i.email === email && fingerprints.some((f) => f.slice(-16) === i.keyId)) { i.keyId = null; identitiesCleared.push(i.id); }
      }
      const keysDeleted = fingerprints.filter((f) => keys.delete(f));
      return { identitiesCleared, keysDeleted };
    },
    async importPublicKey({ email, keyData, fingerprint }) {
      calls.push(["importPublicKey", email, fingerprint]);
      assert.equal(typeof keyData, "string");
      const k = keys.get(fingerprint) ?? { secret: false, personal: false, acceptance: new Map() };
      keys.set(fingerprint, k);
      if ((k.acceptance.get(email) ?? "undecided") === "undecided") k.acceptance.set(email, "unverified");
      return { fingerprint, present: true, acceptance: k.acceptance.get(email), outcome: "imported" };
    },
  };
}

function fakeHost({ key = FPR, previous = [], peers = [] } = {}) {
  const state = { key, previous, peers, calls: [] };
  state.call = async (method, params) => {
    state.calls.push([method, params]);
    if (method === "account.key") {
      if (!state.key) throw Object.assign(new Error("no account key yet"), { code: "not_joined" });
      return { fingerprint: state.key, public_key: "-----BEGIN PGP PUBLIC KEY BLOCK-----" };
    }
    if (method === "account.secret_key") {
      return { fingerprint: state.key, secret_key: ARMORED(state.key), previous: state.previous.map((f) => ({ fingerprint: f, secret_key: ARMORED(f) })) };
    }
    if (method === "peers.get") return { peer: state.peers.find((p) => p.addr === params.addr) ?? null };
    if (method === "peers.list") {
      const start = params.cursor ? Number(params.cursor) : 0;
      const page = state.peers.slice(start, start + params.limit);
      return { peers: page, cursor: start + params.limit < state.peers.length ? String(start + params.limit) : null };
    }
    throw new Error(`unexpected ${method}`);
  };
  return state;
}

const peer = (addr, fpr) => ({ addr, public_key: Buffer.from(fpr).toString("base64"), public_key_fingerprint: fpr });

function setup(options = {}) {
  const api = fakeMessenger();
  api.autocryptOpenPGP = fakeOpenPGP(options);
  const host = fakeHost(options);
  const sync = new OpenPgpSync({ api, call: host.call, now: () => 1000 });
  return { api, host, sync, openpgp: api.autocryptOpenPGP };
}

test("after pairing the account key becomes the identity's personal key, old keys come along", async () => {
  const { sync, openpgp, host } = setup({ previous: [OLD] });
  const status = await sync.schedule(ACCOUNT, { key: true });
  assert.equal(status.state, "ok");
  assert.equal(status.fingerprint, FPR);
  assert.deepEqual(openpgp.calls, [["importSecretKey", OLD, null], ["importSecretKey", FPR, ACCOUNT]]);
  assert.equal(openpgp.ids[0].keyId, FPR.slice(-16));
  assert.equal(host.calls.filter(([m]) => m === "account.secret_key").length, 1);

  // Thunderbird already holds it: the secret is not asked for again.
  await sync.schedule(ACCOUNT, { key: true });
  assert.equal(host.calls.filter(([m]) => m === "account.secret_key").length, 1);
});

test("after a key roll every identity switches to the new key and keeps the old one", async () => {
  const { sync, openpgp, host } = setup();
  await sync.schedule(ACCOUNT, { key: true });
  host.key = "E".repeat(40);
  host.previous = [FPR];
  await sync.onHostEvent("account.key_rolled", { account: ACCOUNT, fingerprint: host.key });
  assert.equal(openpgp.ids[0].keyId, host.key.slice(-16));
  assert.ok(openpgp.keys.get(FPR).secret, "the old key stays: old mail must stay readable");
  assert.deepEqual(openpgp.calls.map((c) => c[1]), [FPR, host.key]); // the old key was held already
});

test("the secret never reaches storage", async () => {
  const { sync, api, host } = setup({ previous: [OLD], peers: [peer("carol@example.net", CAROL)] });
  await sync.schedule(ACCOUNT, { key: true, peers: "all" });
  const everything = JSON.stringify(api.stored);
  assert.doesNotMatch(everything, /PRIVATE KEY/);
  assert.ok(host.calls.some(([m]) => m === "account.secret_key"));
});

test("correspondents' keys are imported as unverified, once per fingerprint", async () => {
  const { sync, openpgp, host, api } = setup({ peers: [peer("carol@example.net", CAROL), { addr: "nokey@example.net", public_key: null, public_key_fingerprint: null }] });
  const status = await sync.schedule(ACCOUNT, { peers: "all" });
  assert.equal(status.imported, 1);
  assert.equal(openpgp.keys.get(CAROL).acceptance.get("carol@example.net"), "unverified");
  assert.deepEqual(api.stored[APPLIED_KEY_PREFIX + ACCOUNT], { "carol@example.net": CAROL });

  // The user deletes Carol's key in Thunderbird: it is not pushed back...
  openpgp.keys.delete(CAROL);
  await sync.schedule(ACCOUNT, { peers: "all" });
  assert.equal(openpgp.keys.has(CAROL), false);
  // ...until her key changes.
  host.peers[0] = peer("carol@example.net", DAVE);
  await sync.onHostEvent("peers.updated", { account: ACCOUNT, source: "sync", count: 1, addrs: ["carol@example.net"] });
  assert.ok(openpgp.keys.has(DAVE));
  assert.deepEqual(host.calls.at(-1), ["peers.get", { account: ACCOUNT, addr: "carol@example.net" }]);
});

test("a decision the user made in Thunderbird is never downgraded", async () => {
  const { sync, openpgp } = setup({ peers: [peer("carol@example.net", CAROL)] });
  openpgp.keys.set(CAROL, { secret: false, personal: false, acceptance: new Map([["carol@example.net", "verified"]]) });
  await sync.schedule(ACCOUNT, { peers: "all" });
  assert.equal(openpgp.keys.get(CAROL).acceptance.get("carol@example.net"), "verified");
});

test("more changes than the event names: a full pass over peers.list", async () => {
  const peers = Array.from({ length: 450 }, (_, i) => peer(`p${i}@example.net`, String(i).padStart(40, "0")));
  const { sync, openpgp, host } = setup({ peers });
  await sync.onHostEvent("peers.updated", { account: ACCOUNT, source: "sync", count: 450, addrs: peers.slice(0, 100).map((p) => p.addr) });
  assert.equal(openpgp.keys.size, 450);
  assert.equal(host.calls.filter(([m]) => m === "peers.list").length, 3);
});

test("the setting turns it all off; switching it on again applies everything", async () => {
  const { sync, openpgp, api } = setup({ peers: [peer("carol@example.net", CAROL)] });
  await api.storage.local.set({ [SETTING_KEY]: false });
  const status = await sync.schedule(ACCOUNT, { key: true, peers: "all" });
  assert.equal(status.state, "disabled");
  assert.deepEqual(openpgp.calls, []);
  await api.storage.local.set({ [SETTING_KEY]: true });
  await sync.onSettingChanged([ACCOUNT]);
  await sync.schedule(ACCOUNT, {});
  assert.deepEqual(openpgp.calls.map((c) => c[0]).sort(), ["importPublicKey", "importSecretKey"]);
});

test("an unsupported Thunderbird, an unpaired device, no identity: said, not thrown", async () => {
  let s = setup({ supported: false });
  assert.deepEqual(await s.sync.schedule(ACCOUNT, { key: true }), { state: "unsupported", message: "Thunderbird 160.0 lacks OpenPGP internals autocrypt-sma uses: RNP.deleteKey", at: 1000 });
  s = setup({ key: null });
  assert.equal((await s.sync.schedule(ACCOUNT, { key: true })).state, "not_paired");
  s = setup({ identities: ["other@example.org"] });
  const status = await s.sync.schedule(ACCOUNT, { key: true });
  assert.equal(status.state, "no_identity");
  assert.deepEqual(s.openpgp.calls, []);
  s = setup();
  delete s.api.autocryptOpenPGP;
  assert.equal((await s.sync.schedule(ACCOUNT, { key: true })).state, "error");
});

test("a failing import is reported and the next job still runs", async () => {
  const { sync, openpgp } = setup({ peers: [peer("carol@example.net", CAROL)] });
  openpgp.importSecretKey = async () => { throw new Error("Thunderbird refused to import the secret key: boom"); };
  const failed = await sync.schedule(ACCOUNT, { key: true });
  assert.equal(failed.state, "error");
  assert.match(failed.message, /boom/);
  assert.equal((await sync.schedule(ACCOUNT, { peers: "all" })).state, "ok");
});

test("a removed device: the account keys leave Thunderbird's identities and key store, and key sync stops", async () => {
  const { sync, openpgp, api, host } = setup({ previous: [OLD], peers: [peer("carol@example.net", CAROL)] });
  await sync.schedule(ACCOUNT, { key: true, peers: "all" });
  assert.deepEqual(api.stored[ACCOUNT_KEYS_PREFIX + ACCOUNT], [FPR, OLD]); // public: fingerprints only
  const mine = { id: "id9", email: ACCOUNT, keyId: "F".repeat(16) }; // a key the user chose: not ours
  openpgp.ids.push(mine);

  const status = await sync.onHostEvent("device.removed", { account: ACCOUNT, device_id: "a".repeat(16), by: "b".repeat(16), account_keys: [FPR] });
  assert.equal(status.state, "removed");
  assert.deepEqual(openpgp.calls.at(-1), ["forgetAccountKeys", ACCOUNT, [FPR, OLD]]);
  assert.equal(openpgp.ids[0].keyId, null);
  assert.equal(mine.keyId, "F".repeat(16));
  assert.ok(!openpgp.keys.has(FPR) && !openpgp.keys.has(OLD), "no account secret stays on the removed device");
  assert.ok(openpgp.keys.has(CAROL), "correspondents' public keys stay");
  assert.equal(api.stored[ACCOUNT_KEYS_PREFIX + ACCOUNT], undefined);

  // Key sync stopped: a late event imports nothing; a new pairing starts it again.
  const before = openpgp.calls.length;
  host.peers.push(peer("dave@example.net", DAVE));
  assert.equal(sync.onHostEvent("peers.updated", { account: ACCOUNT, source: "sync", count: 1, addrs: ["dave@example.net"] }), null);
  assert.equal(sync.onHostEvent("account.key_rolled", { account: ACCOUNT, fingerprint: FPR }), null);
  assert.equal(openpgp.calls.length, before);
  await sync.onHostEvent("pairing.completed", { account: ACCOUNT, pairing: {} });
  assert.equal(openpgp.ids[0].keyId, FPR.slice(-16));
});

test("a removal whose event was missed is finished at the next connect; a failure is retried", async () => {
  const { sync, openpgp, api } = setup();
  await sync.schedule(ACCOUNT, { key: true });
  const forget = openpgp.forgetAccountKeys;
  openpgp.forgetAccountKeys = async () => { throw new Error("rnp_key_remove failed"); };
  const failed = await sync.forgetIfRemoved(ACCOUNT);
  assert.equal(failed.state, "error");
  assert.match(failed.message, /rnp_key_remove failed/);
  assert.deepEqual(api.stored[ACCOUNT_KEYS_PREFIX + ACCOUNT], [FPR]); // kept for the retry
  openpgp.forgetAccountKeys = forget;
  assert.equal((await sync.forgetIfRemoved(ACCOUNT)).state, "removed");
  assert.ok(!openpgp.keys.has(FPR));
  assert.equal(await sync.forgetIfRemoved(ACCOUNT), null); // nothing left to do
});
