// OAuth2 accounts set up from Thunderbird ("oauth2": {"source": "thunderbird"}): the host keeps no
// token of its own and asks with the event `account.token_needed`; this answers with
// `account.token`, a token from Thunderbird's own OAuth2 module (through the autocryptAccounts
// Experiment), so Thunderbird refreshes it and shows its own sign-in window when it must.
// Tokens pass through and are never stored or logged here.

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
   */
  constructor({ api, call }) {
    this.api = api;
    this.call = call;
    this.pending = new Map(); // account -> the promise of the answer being prepared
    this.lastError = new Map(); // account -> why the last attempt gave no token (for the popup)
  }

  onHostEvent(name, data) {
    if (name !== "account.token_needed" || typeof data?.account !== "string") return;
    this.supply(data.account, data.reason).catch(() => {});
  }

  /** One answer at a time per account: the host re-asks (at most every 30 s) while it waits. */
  supply(account, reason) {
    if (this.pending.has(account)) return this.pending.get(account);
    const work = this.answer(account, reason).finally(() => this.pending.delete(account));
    this.pending.set(account, work);
    return work;
  }

  async answer(account, reason) {
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
      const answer = await experiment.accessToken(server.accountId, reason === "rejected");
      await this.call("account.token", tokenParams(account, answer), { timeoutMs: TOKEN_TIMEOUT_MS });
      this.lastError.delete(account);
      return true;
    } catch (err) {
      const message = String(err?.message ?? err);
      this.lastError.set(account, message);
      console.warn("autocrypt-sma: no OAuth2 token for", account, message);
      return false;
    }
  }
}
