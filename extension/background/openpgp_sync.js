// Thunderbird's own OpenPGP uses what the host holds: the account's secret key becomes the
// identity's personal key (after pairing, after a key roll, at every connect if Thunderbird lost
// it), and correspondents' keys learned by any device are imported as "unverified".
//
// The secret comes from the host (account.secret_key) over the native port, goes straight to the
// Experiment API's import and is dropped: nothing here writes it anywhere. What is remembered in
// storage.local is public: per account, the fingerprint last imported for each correspondent, so
// a key the user deleted in Thunderbird is not pushed back until the correspondent's key changes;
// and the fingerprints of the account keys given to Thunderbird, so that when this device is
// removed from the SMA they are taken out again (identities and key store), even if the
// device.removed event was missed (checked at every connect).

export const SETTING_KEY = "useThunderbirdOpenPGP"; // storage.local; absent means on
export const APPLIED_KEY_PREFIX = "openpgpApplied:"; // + account -> {addr: fingerprint}
export const ACCOUNT_KEYS_PREFIX = "openpgpAccountKeys:"; // + account -> [fingerprint] given to Thunderbird
const PEER_PAGE = 200;
const MAX_PEER_PAGES = 250; // 50,000 correspondents per full pass
const ADDRS_IN_EVENT = 100; // peers.updated names at most this many addresses

const errorData = (err) => ({ code: err?.code ?? "internal", message: String(err?.message ?? err) });

export class OpenPgpSync {
  /**
   * @param {object} deps
   * @param {object} deps.api  `messenger`: storage.local, and the experiment `autocryptOpenPGP`
   * @param {Function} deps.call  host request (method, params) -> result
   * @param {() => number} [deps.now]
   */
  constructor({ api, call, now = () => Date.now() }) {
    this.api = api;
    this.call = call;
    this.now = now;
    this.status = new Map(); // account -> {state, message, fingerprint, imported, at}
    this.removed = new Set(); // accounts whose device was removed: nothing is imported for them
    this._tail = Promise.resolve(); // one job at a time: imports write Thunderbird's key rings
  }

  get openpgp() {
    return this.api.autocryptOpenPGP ?? null;
  }

  async enabled() {
    const stored = await this.api.storage.local.get(SETTING_KEY);
    return stored?.[SETTING_KEY] !== false;
  }

  /** Queue work for an account: the secret key, and all peers or just `addrs`. */
  schedule(account, { key = false, peers = null } = {}) {
    const job = this._tail.then(() => this._run(account, key, peers));
    this._tail = job.catch(() => {});
    return job;
  }

  async _run(account, key, peers) {
    const status = { ...(this.status.get(account) ?? {}), at: this.now() };
    try {
      if (!(await this.enabled())) {
        this.status.set(account, { state: "disabled", at: this.now() });
        return this.status.get(account);
      }
      if (!this.openpgp) throw Object.assign(new Error("the add-on's OpenPGP bridge is missing"), { code: "unsupported" });
      const support = await this.openpgp.support();
      if (!support.supported) {
        this.status.set(account, { state: "unsupported", message: support.reason, at: this.now() });
        return this.status.get(account);
      }
      if (key) Object.assign(status, await this.applyAccountKey(account));
      if (peers) status.imported = (status.imported ?? 0) + (await this.applyPeers(account, peers === "all" ? null : peers));
      status.state = status.state === "no_identity" ? "no_identity" : "ok";
      status.message = null;
    } catch (err) {
      if (err?.code === "not_joined") {
        status.state = "not_paired";
        status.message = null;
      } else {
        status.state = "error";
        status.message = errorData(err).message;
        console.warn("autocrypt-sma: OpenPGP import failed", account, status.message);
      }
    }
    this.status.set(account, status);
    return status;
  }

  /** The account key as the personal key of every identity with this address. */
  async applyAccountKey(account) {
    const { fingerprint } = await this.call("account.key", { account });
    const state = await this.openpgp.identityState(account);
    if (!state.identities.length) return { state: "no_identity", fingerprint };
    const held = await this.openpgp.keyStatus(fingerprint);
    const current = held.secret && state.identities.every((id) => id.fingerprint === fingerprint);
    if (current) {
      await this.remember(account, [fingerprint]);
      return { fingerprint };
    }
    // Scoped so the secret is unreachable once the import has it.
    {
      const secret = await this.call("account.secret_key", { account });
      // Remembered before the imports: a key in Thunderbird that nobody remembers could not be
      // taken out again when this device is removed.
      await this.remember(account, [secret.fingerprint, ...secret.previous.map((old) => old.fingerprint)]);
      for (const old of secret.previous) {
        if (!(await this.openpgp.keyStatus(old.fingerprint)).secret) {
          await this.openpgp.importSecretKey({ armored: old.secret_key, fingerprint: old.fingerprint });
        }
      }
      await this.openpgp.importSecretKey({ armored: secret.secret_key, fingerprint: secret.fingerprint, personalFor: account });
    }
    return { fingerprint };
  }

  async remembered(account) {
    const key = ACCOUNT_KEYS_PREFIX + account;
    return (await this.api.storage.local.get(key))?.[key] ?? [];
  }

  async remember(account, fingerprints) {
    const known = await this.remembered(account);
    const more = fingerprints.filter((f) => !known.includes(f));
    if (more.length) await this.api.storage.local.set({ [ACCOUNT_KEYS_PREFIX + account]: [...known, ...more] });
  }

  /**
   * This device was removed from the SMA (device.removed names the keys the log had): the account
   * keys leave Thunderbird's identities and key store, whatever the OpenPGP setting (they may
   * have been imported while it was on), and nothing more is imported for the account until it
   * pairs again. What is remembered goes only once Thunderbird has done it, so a failure is
   * retried at the next connect (`forgetIfRemoved`).
   */
  forget(account, fingerprints = []) {
    this.removed.add(account);
    const job = this._tail.then(() => this._forget(account, fingerprints));
    this._tail = job.catch(() => {});
    return job;
  }

  async _forget(account, fingerprints) {
    const status = { state: "removed", message: null, at: this.now() };
    try {
      const all = [...new Set([...fingerprints, ...(await this.remembered(account))])];
      if (!all.length) return this._set(account, status);
      if (!this.openpgp) throw new Error("the add-on's OpenPGP bridge is missing");
      const support = await this.openpgp.support();
      if (!support.supported) throw new Error(support.reason);
      const result = await this.openpgp.forgetAccountKeys({ email: account, fingerprints: all });
      await this.api.storage.local.remove([ACCOUNT_KEYS_PREFIX + account, APPLIED_KEY_PREFIX + account]);
      status.keysDeleted = result.keysDeleted.length;
      status.identitiesCleared = result.identitiesCleared.length;
    } catch (err) {
      status.state = "error";
      status.message = `could not take this account's keys out of Thunderbird: ${errorData(err).message}`;
      console.warn("autocrypt-sma: OpenPGP forget failed", account, status.message);
    }
    return this._set(account, status);
  }

  _set(account, status) {
    this.status.set(account, status);
    return status;
  }

  /** At connect: an account the host lists without a device (removed while the event was missed). */
  async forgetIfRemoved(account) {
    if ((await this.remembered(account)).length) return this.forget(account);
    return null;
  }

  /** Correspondents' keys, as unverified; `addrs` null means every peer (bounded pages). */
  async applyPeers(account, addrs) {
    const key = APPLIED_KEY_PREFIX + account;
    const applied = (await this.api.storage.local.get(key))?.[key] ?? {};
    let imported = 0;
    const consider = async (peer) => {
      if (!peer?.public_key || !peer.public_key_fingerprint) return;
      if (applied[peer.addr] === peer.public_key_fingerprint) return;
      await this.openpgp.importPublicKey({ email: peer.addr, keyData: peer.public_key, fingerprint: peer.public_key_fingerprint });
      applied[peer.addr] = peer.public_key_fingerprint;
      imported += 1;
    };
    try {
      if (addrs) {
        for (const addr of addrs) await consider((await this.call("peers.get", { account, addr })).peer);
      } else {
        let cursor = null;
        for (let page = 0; page < MAX_PEER_PAGES; page++) {
          const result = await this.call("peers.list", { account, limit: PEER_PAGE, cursor });
          for (const peer of result.peers) await consider(peer);
          cursor = result.cursor;
          if (!cursor) break;
        }
      }
    } finally {
      if (imported) await this.api.storage.local.set({ [key]: applied });
    }
    return imported;
  }

  /** Which host events mean Thunderbird should get something new. */
  onHostEvent(name, data) {
    const account = data?.account;
    if (!account) return null;
    if (name === "device.removed") return this.forget(account, data.account_keys ?? []);
    if (name === "pairing.completed") this.removed.delete(account);
    if (this.removed.has(account)) return null; // key sync stopped: nothing more goes into Thunderbird
    if (name === "pairing.completed" || name === "account.key_rolled") return this.schedule(account, { key: true, peers: "all" });
    if (name === "peers.updated") {
      const addrs = data.addrs ?? [];
      const partial = (data.count ?? addrs.length) <= addrs.length && addrs.length <= ADDRS_IN_EVENT;
      return this.schedule(account, { peers: partial ? addrs : "all" });
    }
    return null;
  }

  /** After the user switches the setting on again. */
  async onSettingChanged(accounts) {
    if (!(await this.enabled())) return;
    for (const account of accounts) this.schedule(account, { key: true, peers: "all" });
  }
}
