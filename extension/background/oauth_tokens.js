// OAuth2 accounts set up from Thunderbird ("oauth2": {"source": "thunderbird"}): the host keeps no
// token of its own and asks with the event `account.token_needed`; this answers with
// `account.token`, a token from Thunderbird's own OAuth2 module (through the autocryptAccounts
// Experiment), so Thunderbird refreshes it and shows its own sign-in window when it must.
// Tokens pass through and are never stored or logged here. A sign-in that gave no token is not
// retried on the host's next request (that would open a new window every ~30 s) until the user asks.

const TOKEN_TIMEOUT_MS = 120000; // an interactive sign-in in Thunderbird's window may take a while
const MAX_EXPIRES_IN = 86400; // seconds, what account.token accepts

/** The Thunderbird IMAP accounts whose identities carry this address (case-insensitive). */
export async function thunderbirdAccountsFor(api, address) {
  const wanted = String(address).toLowerCase();
  const accounts = await api.accounts.list(false);
  return accounts.filter((a) => a.type === "imap" && (a.identities ?? []).some((i) => (i.email ?? "").toLowerCase() === wanted));
}

/** `account.token` params from the Experiment's answer (expires_in only when known and in range). */
export function tokenParams(account, { token, expiresIn }) {
  const params = { account, token };
  if (Number.isInteger(expiresIn) && expiresIn >= 1) params.expires_in = Math.min(expiresIn, MAX_EXPIRES_IN);
  return params;
}

export class ThunderbirdTokens {
  /**
   * @param {object} options
   * @param {object} options.api  `messenger`, with the autocryptAccounts Experiment
   * @param {(method: string, params: object, options?: object) => Promise<object>} options.call
   * @param {(account: string) => void} [options.changed]  the popup's view of `account` changed
   */
  constructor({ api, call, changed = () => {} }) {
    this.api = api;
    this.call = call;
    this.changed = changed;
    this.pending = new Map(); // account -> the promise of the answer being prepared
    this.lastError = new Map(); // account -> why the last attempt gave no token (for the popup)
    // account -> the host's last reason: Thunderbird's sign-in gave no token (the user closed its
    // window, or the provider refused), so asking again would open a new window every time the
    // host re-asks (~30 s). Held until the user presses "Sign in again", the account's settings
    // change, or the add-on restarts (memory only); the host keeps waiting meanwhile.
    this.held = new Map();
  }

  onHostEvent(name, data) {
    if (name !== "account.token_needed" || typeof data?.account !== "string") return;
    if (this.held.has(data.account)) {
      this.held.set(data.account, data.reason); // answered by nobody: the user decides when
      console.info("autocrypt-sma: not asking Thunderbird to sign in again for", data.account, "until the user chooses Sign in again");
      return;
    }
    this.supply(data.account, data.reason).catch(() => {});
  }

  /** "Sign in again": ask Thunderbird once more (a new window) for a held account; false if not held. */
  signInAgain(account) {
    if (!this.held.has(account)) return false;
    const reason = this.held.get(account);
    this.held.delete(account);
    this.supply(account, reason).catch(() => {});
    return true;
  }

  /** The account's settings changed (here or in Thunderbird): the next request asks Thunderbird again. */
  resume(account) {
    if (!this.held.delete(account)) return;
    this.changed(account);
  }

  resumeAll() {
    for (const account of [...this.held.keys()]) this.resume(account);
  }

  /** One answer at a time per account: the host re-asks (at most every 30 s) while it waits. */
  supply(account, reason) {
    if (this.pending.has(account)) return this.pending.get(account);
    const work = this.answer(account, reason).finally(() => this.pending.delete(account));
    this.pending.set(account, work);
    return work;
  }

  async answer(account, reason) {
    let signingIn = false;
    try {
      const experiment = this.api.autocryptAccounts;
      if (!experiment?.accessToken) throw new Error("the autocryptAccounts Experiment is not available");
      let server = null;
      for (const candidate of await thunderbirdAccountsFor(this.api, account)) {
        const info = await experiment.incomingServer(candidate.id);
        if (info.auth === "oauth2") {
          server = info;
          break;
        }
      }
      if (!server) throw new Error(`no Thunderbird IMAP account for ${account} signs in with OAuth2`);
      // "rejected": the server refused the token Thunderbird still thinks valid; get a fresh one.
      signingIn = true;
      const answer = await experiment.accessToken(server.accountId, reason === "rejected");
      signingIn = false;
      await this.call("account.token", tokenParams(account, answer), { timeoutMs: TOKEN_TIMEOUT_MS });
      if (this.lastError.delete(account)) this.changed(account);
      return true;
    } catch (err) {
      const message = String(err?.message ?? err);
      this.lastError.set(account, message);
      // Only a sign-in that gave nothing is held: the other failures open no window, so the host's
      // next request may as well try again (and succeeds once the user fixed the setting).
      if (signingIn) this.held.set(account, reason);
      console.warn("autocrypt-sma: no OAuth2 token for", account, message);
      this.changed(account);
      return false;
    }
  }
}
