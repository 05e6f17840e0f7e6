/* Thunderbird Experiment API `autocryptOpenPGP` (parent process): the only code of the add-on that
 * touches Thunderbird internals. It reaches Thunderbird's OpenPGP modules (RNP key store, the
 * acceptance database, the key cache) and identity prefs, which are not a stable API. They are
 * checked by feature, not by version number (the monthly release channel runs ahead of every ESR):
 * each module must load and offer each function used here, and whatever is missing is named in the
 * error every function then fails with. Nothing here stores a secret: the armored key is handed to
 * Thunderbird's importer, which protects it with Thunderbird's own passphrase.
 */
/* global ChromeUtils, Services */
"use strict";

var { ExtensionCommon } = ChromeUtils.importESModule("resource://gre/modules/ExtensionCommon.sys.mjs");
var { ExtensionUtils } = ChromeUtils.importESModule("resource://gre/modules/ExtensionUtils.sys.mjs");
var { ExtensionError } = ExtensionUtils;

const MODULES = {
  RNP: "chrome://openpgp/content/modules/RNP.sys.mjs",
  EnigmailKeyRing: "chrome://openpgp/content/modules/keyRing.sys.mjs",
  PgpSqliteDb2: "chrome://openpgp/content/modules/sqliteDb.sys.mjs",
  MailServices: "resource:///modules/MailServices.sys.mjs",
};
// Every function called on each module. The deletions are needed too: a secret key this add-on
// could not delete again (when the device is removed) is better never imported.
const NEEDED = {
  RNP: ["importSecKeyBlockImpl", "importPubkeyBlockAutoAcceptImpl", "deleteKey"],
  EnigmailKeyRing: ["getKeyById", "updateKeys", "clearCache", "getKeyAcceptanceForEmail"],
  PgpSqliteDb2: ["acceptAsPersonalKey", "isAcceptedAsPersonalKey", "deletePersonalKeyAcceptance"],
  MailServices: [],
};

let internals = null; // {support, modules} once probed

// What of the above this Thunderbird lacks, each named ("RNP.deleteKey", or a module's URL and why
// it did not load), and the modules that loaded.
function missingInternals() {
  const missing = [];
  const modules = {};
  for (const [name, url] of Object.entries(MODULES)) {
    let mod;
    try {
      mod = ChromeUtils.importESModule(url)[name];
    } catch (err) {
      missing.push(`${url} (${err.message})`);
      continue;
    }
    if (!mod) {
      missing.push(`${name} in ${url}`);
      continue;
    }
    missing.push(...NEEDED[name].filter((fn) => typeof mod[fn] !== "function").map((fn) => `${name}.${fn}`));
    modules[name] = mod;
  }
  if (modules.MailServices && !modules.MailServices.accounts) missing.push("MailServices.accounts");
  if (typeof ChromeUtils.base64URLDecode !== "function") missing.push("ChromeUtils.base64URLDecode");
  return { missing, modules };
}

function probe() {
  if (internals) return internals;
  const version = Services.appinfo.version;
  const { missing, modules } = missingInternals();
  const support = { supported: missing.length === 0, version, reason: null, missing };
  if (missing.length) {
    support.reason = `Thunderbird ${version} lacks OpenPGP internals autocrypt-sma uses: ${missing.join("; ")}`;
  }
  internals = { support, modules };
  return internals;
}

function required() {
  const { support, modules } = probe();
  if (!support.supported) throw new ExtensionError(support.reason);
  return modules;
}

const norm = (email) => String(email).trim().toLowerCase();
const keyIdOf = (fingerprint) => fingerprint.slice(-16).toUpperCase(); // v4: the last 64 bits

function identitiesFor(modules, email) {
  return [...modules.MailServices.accounts.allIdentities].filter((id) => id.email && norm(id.email) === norm(email));
}

async function keyStatus(modules, fingerprint, email) {
  const fpr = fingerprint.toUpperCase();
  const key = modules.EnigmailKeyRing.getKeyById("0x" + fpr);
  const status = { fingerprint: fpr, present: Boolean(key), secret: Boolean(key?.secretAvailable), acceptance: null, personal: false };
  if (!key) return status;
  status.personal = Boolean(await modules.PgpSqliteDb2.isAcceptedAsPersonalKey(fpr));
  if (email) {
    const emails = (key.userIds ?? []).map((u) => norm(u.userId.match(/<([^>]+)>/)?.[1] ?? u.userId));
    status.acceptance = emails.includes(norm(email))
      ? ((await modules.EnigmailKeyRing.getKeyAcceptanceForEmail(key, norm(email))) ?? "unknown")
      : "address_not_in_key";
  }
  return status;
}

// The parent scope has no atob: decode with ChromeUtils (base64url alphabet, padding ignored).
function byteString(base64) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) throw new ExtensionError("keyData is not base64");
  const url = base64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const bytes = new Uint8Array(ChromeUtils.base64URLDecode(url, { padding: "ignore" }));
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return out;
}

function failed(what, result) {
  const detail = result?.errorMsg || `exit code ${result?.exitCode}`;
  return new ExtensionError(`Thunderbird refused to import ${what}: ${detail}`);
}

this.autocryptOpenPGP = class extends ExtensionCommon.ExtensionAPI {
  getAPI() {
    return {
      autocryptOpenPGP: {
        async support() {
          return { ...probe().support };
        },

        async identityState(email) {
          const modules = required();
          const identities = [];
          for (const id of identitiesFor(modules, email)) {
            const keyId = id.getUnicharAttribute("openpgp_key_id") || null;
            const key = keyId ? modules.EnigmailKeyRing.getKeyById("0x" + keyId) : null;
            identities.push({
              id: id.key,
              email: id.email,
              keyId,
              fingerprint: key?.fpr ?? null,
              secret: Boolean(key?.secretAvailable),
            });
          }
          return { email, identities };
        },

        async keyStatus(fingerprint, email) {
          return keyStatus(required(), fingerprint, email);
        },

        async importSecretKey({ armored, fingerprint, personalFor }) {
          const modules = required();
          const fpr = fingerprint.toUpperCase();
          if (!armored.startsWith("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
            throw new ExtensionError("not an armored secret key");
          }
          let status = await keyStatus(modules, fpr);
          if (!status.secret) {
            const result = await modules.RNP.importSecKeyBlockImpl(null, null, false, armored, ["0x" + fpr]);
            if (!result || result.exitCode !== 0 || !result.importedKeys?.length) throw failed("the secret key", result);
            modules.EnigmailKeyRing.updateKeys(result.importedKeys);
            modules.EnigmailKeyRing.clearCache();
            status = await keyStatus(modules, fpr);
            if (!status.secret) throw new ExtensionError(`the secret key ${fpr} is not in Thunderbird's key store after the import`);
          }
          if (!status.personal) await modules.PgpSqliteDb2.acceptAsPersonalKey(fpr);
          const changed = [];
          if (personalFor) {
            for (const id of identitiesFor(modules, personalFor)) {
              if (id.getUnicharAttribute("openpgp_key_id") !== keyIdOf(fpr)) {
                id.setUnicharAttribute("openpgp_key_id", keyIdOf(fpr));
                id.setBoolAttribute("is_gnupg_key_id", false);
                changed.push(id.key);
              }
            }
          }
          return { fingerprint: fpr, identitiesChanged: changed };
        },

        // This device was removed from the SMA: the account's keys leave Thunderbird. Identities
        // with the address stop using them (only where one of them is set: a key the user chose
        // is theirs), and the secret keys are deleted, so the removed device no longer holds the
        // account secret. Old mail stays unreadable here until a new pairing brings the keys back
        // (pairing hands over the previous keys too).
        async forgetAccountKeys({ email, fingerprints }) {
          const modules = required();
          const fprs = fingerprints.map((f) => f.toUpperCase());
          const keyIds = new Set(fprs.map(keyIdOf));
          const identitiesCleared = [];
          for (const id of identitiesFor(modules, email)) {
            if (keyIds.has(String(id.getUnicharAttribute("openpgp_key_id")).toUpperCase())) {
              id.setUnicharAttribute("openpgp_key_id", "");
              identitiesCleared.push(id.key);
            }
          }
          const keysDeleted = [];
          for (const fpr of fprs) {
            if (!(await keyStatus(modules, fpr)).present) continue;
            await modules.RNP.deleteKey(fpr, true);
            await modules.PgpSqliteDb2.deletePersonalKeyAcceptance(fpr);
            keysDeleted.push(fpr);
          }
          if (keysDeleted.length) modules.EnigmailKeyRing.clearCache();
          return { identitiesCleared, keysDeleted };
        },

        async importPublicKey({ email, keyData, fingerprint }) {
          const modules = required();
          const fpr = fingerprint.toUpperCase();
          const before = await keyStatus(modules, fpr, email);
          if (before.secret) return { ...before, outcome: "own_key" }; // never touch a key we hold the secret of
          // Thunderbird's importer sets "unverified" only where nothing was decided yet: a key the
          // user verified or rejected keeps that decision; new key material (say, a new subkey) is
          // taken either way.
          const result = await modules.RNP.importPubkeyBlockAutoAcceptImpl(null, byteString(keyData), "unverified", ["0x" + fpr]);
          if (!result || result.exitCode !== 0) throw failed(`the key ${fpr}`, result);
          modules.EnigmailKeyRing.clearCache();
          const after = await keyStatus(modules, fpr, email);
          if (!after.present) throw new ExtensionError(`the key ${fpr} is not in Thunderbird's key store after the import`);
          return { ...after, outcome: before.present ? "updated" : "imported" };
        },
      },
    };
  }
};
