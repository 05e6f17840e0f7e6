// The Experiment API's parent script, run in a Node vm with stand-ins for the Thunderbird globals it
// uses (ChromeUtils, Services, the OpenPGP modules, identities): the feature checks (no version
// gate), the clear errors naming what is missing, and what it asks of Thunderbird's importer. The real thing runs in tests/e2e/test_thunderbird.py.

import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const SOURCE = readFileSync(new URL("../experiments/openpgp/parent.js", import.meta.url), "utf8");
const FPR = "0123456789ABCDEF0123456789ABCDEF01234567";

class ExtensionError extends Error {}
// Arrays made inside the vm have the vm's Array prototype: compare their contents.
const plain = (value) => JSON.parse(JSON.stringify(value));

function identity(email) {
  const attrs = new Map();
  return {
    key: `id-${email}`,
    email,
    attrs,
    getUnicharAttribute: (name) => attrs.get(name) ?? "",
    setUnicharAttribute: (name, value) => attrs.set(name, value),
    setBoolAttribute: (name, value) => attrs.set(name, value),
  };
}

function load({ version = "153.7.0", drop = null, absent = [], identities = [identity("Me@Example.org"), identity("other@example.org")] } = {}) {
  const calls = [];
  const store = new Map(); // fpr -> {secretAvailable, userIds}
  const RNP = {
    async importSecKeyBlockImpl(win, passCB, keep, armored, limited) {
      calls.push(["importSecKeyBlockImpl", keep, limited]);
      store.set(FPR, { fpr: FPR, secretAvailable: true, userIds: [{ userId: "<me@example.org>" }] });
      return { exitCode: 0, importedKeys: ["0x" + FPR.slice(-16)], errorMsg: "" };
    },
    async deleteKey(fpr, deleteSecret) {
      calls.push(["deleteKey", fpr, deleteSecret]);
      store.delete(fpr);
    },
    async importPubkeyBlockAutoAcceptImpl(win, keyBlock, acceptance, limited) {
      calls.push(["importPubkeyBlockAutoAcceptImpl", keyBlock, acceptance, limited]);
      if (keyBlock === "bad") return { exitCode: -1, errorMsg: "RNP.importToFFI failed" };
      store.set(limited[0].slice(2), { fpr: limited[0].slice(2), secretAvailable: false, userIds: [{ userId: "Carol <carol@example.net>" }] });
      return { exitCode: 0, importedKeys: [limited[0]] };
    },
  };
  const EnigmailKeyRing = {
    getKeyById: (id) => store.get(id.replace(/^0x/, "")) ?? [...store.values()].find((k) => k.fpr.endsWith(id.replace(/^0x/, ""))) ?? null,
    updateKeys: (keys) => calls.push(["updateKeys", keys]),
    clearCache: () => calls.push(["clearCache"]),
    getKeyAcceptanceForEmail: async () => "unverified",
  };
  const PgpSqliteDb2 = {
    deletePersonalKeyAcceptance: async (fpr) => calls.push(["deletePersonalKeyAcceptance", fpr]),
    acceptAsPersonalKey: async (fpr) => calls.push(["acceptAsPersonalKey", fpr]),
    isAcceptedAsPersonalKey: async () => false,
    getFingerprintAcceptance: async () => null,
  };
  const modules = { RNP, EnigmailKeyRing, PgpSqliteDb2 };
  if (drop) delete modules[drop[0]][drop[1]];
  const byUrl = {
    "resource://gre/modules/ExtensionCommon.sys.mjs": { ExtensionCommon: { ExtensionAPI: class {} } },
    "resource://gre/modules/ExtensionUtils.sys.mjs": { ExtensionUtils: { ExtensionError } },
    "chrome://openpgp/content/modules/RNP.sys.mjs": { RNP },
    "chrome://openpgp/content/modules/keyRing.sys.mjs": { EnigmailKeyRing },
    "chrome://openpgp/content/modules/sqliteDb.sys.mjs": { PgpSqliteDb2 },
    "resource:///modules/MailServices.sys.mjs": { MailServices: { accounts: { allIdentities: identities } } },
  };
  const sandbox = {
    ChromeUtils: {
      importESModule: (url) => {
        if (!(url in byUrl) || absent.includes(url)) throw new Error(`no module ${url}`);
        return byUrl[url];
      },
      base64URLDecode: (text) => Uint8Array.from(Buffer.from(text, "base64url")).buffer,
    },
    Services: { appinfo: { version } },
  };
  vm.createContext(sandbox);
  vm.runInContext(SOURCE, sandbox); // the script sets `this.autocryptOpenPGP`: the context object
  const api = new sandbox.autocryptOpenPGP().getAPI().autocryptOpenPGP;
  return { api, calls, identities, store };
}

test("Thunderbird 153 with the known internals is supported", async () => {
  const { api } = load();
  const support = await api.support();
  assert.equal(support.supported, true);
  assert.equal(support.version, "153.7.0");
  assert.deepEqual(plain(support.missing), []);
});

// The monthly release channel is past the last ESR tested: a version number alone refuses nothing.
for (const version of ["154.0", "160.0a1", "200.1"]) {
  test(`Thunderbird ${version} with the known internals is supported`, async () => {
    const { api, calls } = load({ version });
    const support = await api.support();
    assert.equal(support.supported, true);
    assert.equal(support.version, version);
    await api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----", fingerprint: FPR });
    assert.equal(calls[0][0], "importSecKeyBlockImpl");
  });
}

const RNP_URL = "chrome://openpgp/content/modules/RNP.sys.mjs";

test("a module that does not load (Thunderbird 115 had RNP.jsm): named, and every function says so", async () => {
  const { api, calls } = load({ version: "115.18.0", absent: [RNP_URL] });
  const support = await api.support();
  assert.equal(support.supported, false);
  assert.deepEqual(plain(support.missing), [`${RNP_URL} (no module ${RNP_URL})`]);
  assert.match(support.reason, /^Thunderbird 115\.18\.0 lacks OpenPGP internals autocrypt-sma uses: chrome:\/\/openpgp\/content\/modules\/RNP\.sys\.mjs/);
  const named = (err) => err instanceof ExtensionError && err.message.includes(RNP_URL);
  await assert.rejects(api.identityState("me@example.org"), named);
  await assert.rejects(api.keyStatus(FPR), named);
  await assert.rejects(api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----", fingerprint: FPR }), named);
  await assert.rejects(api.importPublicKey({ email: "c@example.net", keyData: "AAAA", fingerprint: FPR }), named);
  await assert.rejects(api.forgetAccountKeys({ email: "me@example.org", fingerprints: [FPR] }), named);
  assert.deepEqual(calls, []);
});

for (const [module, fn] of [
  ["RNP", "importPubkeyBlockAutoAcceptImpl"],
  ["RNP", "deleteKey"],
  ["EnigmailKeyRing", "getKeyAcceptanceForEmail"],
  ["PgpSqliteDb2", "deletePersonalKeyAcceptance"],
]) {
  test(`a function gone (${module}.${fn}), even on a known version: named in the error, nothing imported`, async () => {
    const { api, calls } = load({ drop: [module, fn] });
    const support = await api.support();
    assert.equal(support.supported, false);
    assert.deepEqual(plain(support.missing), [`${module}.${fn}`]);
    assert.match(support.reason, new RegExp(`^Thunderbird 153\\.7\\.0 lacks OpenPGP internals autocrypt-sma uses: ${module}\\.${fn}$`));
    await assert.rejects(api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----", fingerprint: FPR }), new RegExp(`${module}\\.${fn}`));
    assert.deepEqual(calls, []);
  });
}

test("everything missing is named at once", async () => {
  const { api } = load({ drop: ["RNP", "deleteKey"], absent: ["chrome://openpgp/content/modules/sqliteDb.sys.mjs"] });
  const support = await api.support();
  assert.equal(support.missing.length, 2);
  assert.match(support.reason, /sqliteDb\.sys\.mjs.*; RNP\.deleteKey|RNP\.deleteKey; .*sqliteDb\.sys\.mjs/);
});

test("the secret key: imported for that fingerprint only, accepted as personal, set on the identities with the address", async () => {
  const { api, calls, identities } = load();
  const result = await api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----\n...", fingerprint: FPR.toLowerCase(), personalFor: "me@example.org" });
  assert.deepEqual(plain(calls[0]), ["importSecKeyBlockImpl", false, ["0x" + FPR]]);
  assert.ok(calls.some((c) => c[0] === "acceptAsPersonalKey" && c[1] === FPR));
  assert.deepEqual(plain(result.identitiesChanged), ["id-Me@Example.org"]);
  assert.equal(identities[0].attrs.get("openpgp_key_id"), FPR.slice(-16));
  assert.equal(identities[0].attrs.get("is_gnupg_key_id"), false);
  assert.equal(identities[1].attrs.get("openpgp_key_id"), undefined);
  await assert.rejects(api.importSecretKey({ armored: "-----BEGIN PGP PUBLIC KEY BLOCK-----", fingerprint: FPR }), /not an armored secret key/);
});

test("a correspondent's key: base64 decoded to bytes, imported as unverified for that fingerprint", async () => {
  const { api, calls } = load();
  const carol = "C".repeat(40);
  const bytes = Buffer.from([0x99, 0x00, 0xff, 0x10]);
  const result = await api.importPublicKey({ email: "carol@example.net", keyData: bytes.toString("base64"), fingerprint: carol });
  const [name, block, acceptance, limited] = calls[0];
  assert.equal(name, "importPubkeyBlockAutoAcceptImpl");
  assert.deepEqual([...block].map((c) => c.charCodeAt(0)), [...bytes]);
  assert.equal(acceptance, "unverified");
  assert.deepEqual(plain(limited), ["0x" + carol]);
  assert.equal(result.outcome, "imported");
  assert.equal(result.acceptance, "unverified");
  await assert.rejects(api.importPublicKey({ email: "x@example.net", keyData: "not base64!", fingerprint: carol }), /not base64/);
});

test("a key whose secret Thunderbird holds is never re-imported as a correspondent's", async () => {
  const { api, calls } = load();
  await api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----", fingerprint: FPR });
  const result = await api.importPublicKey({ email: "me@example.org", keyData: "AAAA", fingerprint: FPR });
  assert.equal(result.outcome, "own_key");
  assert.ok(!calls.some((c) => c[0] === "importPubkeyBlockAutoAcceptImpl"));
});

test("a refused import is an error with Thunderbird's reason", async () => {
  const { api } = load();
  await assert.rejects(
    api.importPublicKey({ email: "carol@example.net", keyData: Buffer.from("bad", "latin1").toString("base64"), fingerprint: "C".repeat(40) }),
    /refused to import the key C{40}: RNP.importToFFI failed/,
  );
});

test("a removed device: identities using an account key drop it, the keys are deleted with their secrets", async () => {
  const mine = { ...identity("me@example.org"), key: "id-mine" };
  const { api, calls, identities, store } = load({ identities: [identity("me@example.org"), mine, identity("other@example.org")] });
  await api.importSecretKey({ armored: "-----BEGIN PGP PRIVATE KEY BLOCK-----", fingerprint: FPR, personalFor: "me@example.org" });
  mine.attrs.set("openpgp_key_id", "FFFFFFFFFFFFFFFF"); // then the user chose another key here
  identities[2].attrs.set("openpgp_key_id", FPR.slice(-16)); // another address: left alone
  const gone = "E".repeat(40); // named by the log, never given to this Thunderbird
  const result = await api.forgetAccountKeys({ email: "Me@example.org", fingerprints: [FPR.toLowerCase(), gone] });
  assert.deepEqual(plain(result), { identitiesCleared: ["id-me@example.org"], keysDeleted: [FPR] });
  assert.equal(identities[0].attrs.get("openpgp_key_id"), "");
  assert.equal(mine.attrs.get("openpgp_key_id"), "FFFFFFFFFFFFFFFF");
  assert.equal(identities[2].attrs.get("openpgp_key_id"), FPR.slice(-16));
  assert.ok(calls.some((c) => c[0] === "deleteKey" && c[1] === FPR && c[2] === true));
  assert.ok(calls.some((c) => c[0] === "deletePersonalKeyAcceptance" && c[1] === FPR));
  assert.equal(store.has(FPR), false);
});
