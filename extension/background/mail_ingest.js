// Keys from incoming mail: each new message goes to peers.ingest for every SMA account configured
// for the Thunderbird account it arrived in: its header block, or, for encrypted mail, the whole
// message (bounded), which the host decrypts for the headers inside. A backlog scan does the same
// for old mail once, on request, with progress and a bound. Each message carries the date
// Thunderbird holds for it (`received`), the host's time of receipt for a mail without a Date.

import { readIngestMessage } from "../lib/mail_headers.js";

export const SCAN_DEFAULT_DAYS = 365;
export const SCAN_MAX_MESSAGES = 5000;
const SCAN_PAGE_SIZE = 100;
const PROGRESS_EVERY = 25; // messages between progress broadcasts
export const SCAN_DONE_KEY_PREFIX = "backlogScanned:"; // storage.local key + account -> ms timestamp
// New mail that met a host down or busy is tried again after the next connect; bounded, oldest dropped.
export const RETRY_MAX = 500;
const RETRYABLE = new Set(["disconnected", "timeout", "busy"]);

/**
 * MessageHeader.date as UTC seconds, or null. Thunderbird fills it from the Date header and, for a
 * mail without one, with the time it received the mail, so for the host it is the best "time of
 * receipt" there is; in a backlog scan the host's clock would say "now" and let an old Date-less
 * mail override newer keys.
 */
export function receivedSeconds(date) {
  const ms = date instanceof Date ? date.getTime() : typeof date === "number" ? date : NaN;
  return Number.isFinite(ms) && ms >= 0 ? Math.floor(ms / 1000) : null;
}

const errorData = (err) => ({ code: err?.code ?? "internal", message: String(err?.message ?? err) });

export class MailIngest {
  constructor({ api, call, broadcast = () => {}, now = () => Date.now() }) {
    this.api = api;
    this.call = call;
    this.broadcast = broadcast;
    this.now = now;
    this.scan = null; // the current or last scan's progress, as the pages show it
    this.stats = { ingested: 0, updated: 0, failed: 0, last_error: null, encrypted: 0, decrypted: 0 };
    this._tail = Promise.resolve(); // ingests run one at a time: the host answers "busy" past 64
    this.retry = []; // [{messageId, account, header}] to send again once the host is back
  }

  /** After a (re)connect: send what could not be sent while the host was away. */
  retryPending() {
    const pending = this.retry.splice(0);
    if (!pending.length) return this._tail;
    const job = this._tail.then(async () => {
      for (const { messageId, account, header } of pending) {
        await this.ingestMessage(messageId, [account], { retry: true, header });
      }
    });
    this._tail = job.catch(() => {});
    return job;
  }

  /** messages.onNewMailReceived listener. */
  onNewMail(folder, messageList) {
    const job = this._tail.then(() => this._ingestNew(folder, messageList));
    this._tail = job.catch(() => {});
    return job;
  }

  async _ingestNew(folder, messageList) {
    const accounts = await this.smaAccountsFor(folder?.accountId);
    if (!accounts.length) return;
    for await (const header of this.pages(messageList)) {
      await this.ingestMessage(header.id, accounts, { retry: true, header });
    }
  }

  /** Every message of a MessageList, following its pages (messages.continueList). */
  async *pages(list) {
    let page = list;
    while (page) {
      yield* page.messages ?? [];
      page = page.id ? await this.api.messages.continueList(page.id) : null;
    }
  }

  /** SMA accounts (configured in the host) among the addresses of a Thunderbird account's identities. */
  async smaAccountsFor(tbAccountId) {
    if (!tbAccountId) return [];
    const [tbAccount, { accounts }] = await Promise.all([
      this.api.accounts.get(tbAccountId, false),
      this.call("account.list"),
    ]);
    const emails = new Set((tbAccount?.identities ?? []).map((i) => i.email?.toLowerCase()).filter(Boolean));
    return accounts.map((a) => a.account).filter((addr) => emails.has(addr.toLowerCase()));
  }

  /** Thunderbird accounts that have an identity with this address. */
  async tbAccountsFor(account) {
    const all = await this.api.accounts.list(false);
    const addr = account.toLowerCase();
    return all.filter((a) => (a.identities ?? []).some((i) => i.email?.toLowerCase() === addr)).map((a) => a.id);
  }

  /**
   * Returns how many of `accounts` learned something new; never throws. With `retry`, a message the
   * host could not take now (down, busy, timed out) is kept for retryPending(). `header` is the
   * MessageHeader when known: its size keeps large mail from being downloaded, its date is sent
   * as `received`.
   */
  async ingestMessage(messageId, accounts, { retry = false, header = null } = {}) {
    let read;
    try {
      read = await readIngestMessage(this.api.messages, messageId, { size: header?.size });
    } catch (err) {
      this._failed(err);
      return 0;
    }
    const params = { message: read.message };
    const received = receivedSeconds(header?.date);
    if (received !== null) params.received = received;
    let updated = 0;
    for (const account of accounts) {
      try {
        const result = await this.call("peers.ingest", { account, ...params });
        this.stats.ingested++;
        if (result?.encrypted) this.stats.encrypted++;
        if (result?.encrypted === "decrypted") this.stats.decrypted++;
        if (result?.updated) {
          this.stats.updated++;
          updated++;
        }
      } catch (err) {
        this._failed(err);
        if (retry && RETRYABLE.has(err?.code)) {
          this.retry.push({ messageId, account, header: header && { size: header.size, date: header.date } });
          if (this.retry.length > RETRY_MAX) this.retry.shift();
        }
      }
    }
    return updated;
  }

  _failed(err) {
    this.stats.failed++;
    this.stats.last_error = errorData(err);
    console.warn("autocrypt-sma: could not ingest a message", err?.code ?? "", err?.message ?? err);
  }

  // --- backlog scan -------------------------------------------------------------------------

  startScan(account, { days = SCAN_DEFAULT_DAYS, limit = SCAN_MAX_MESSAGES } = {}) {
    if (this.scan?.running) return this.scan;
    if (typeof account !== "string" || !account) {
      return { ok: false, error: { code: "invalid_params", message: "account is required" } };
    }
    const scan = {
      account,
      running: true,
      cancelled: false,
      scanned: 0,
      updated: 0,
      failed: 0,
      limit: Math.max(1, Math.min(Number(limit) || SCAN_MAX_MESSAGES, SCAN_MAX_MESSAGES)),
      days: Math.max(1, Number(days) || SCAN_DEFAULT_DAYS),
      started_at: this.now(),
      finished_at: null,
      error: null,
    };
    this.scan = scan;
    this.scanDone = this._tail.then(() => this._runScan(scan));
    this._tail = this.scanDone.catch(() => {}); // new mail waits for the scan rather than racing it
    this._progress(scan);
    return scan;
  }

  cancelScan() {
    if (this.scan?.running) this.scan.cancelled = true;
    return this.scan;
  }

  async _runScan(scan) {
    try {
      const fromDate = new Date(this.now() - scan.days * 86400 * 1000);
      for (const accountId of await this.tbAccountsFor(scan.account)) {
        const first = await this.api.messages.query({ accountId, fromDate, messagesPerPage: SCAN_PAGE_SIZE });
        let listId = first?.id ?? null;
        for await (const header of this.pages(first)) {
          if (scan.cancelled || scan.scanned >= scan.limit) break;
          const before = this.stats.failed;
          scan.updated += await this.ingestMessage(header.id, [scan.account], { header });
          scan.failed += this.stats.failed - before;
          scan.scanned++;
          if (this.stats.failed > before && this.stats.last_error?.code === "disconnected") {
            throw Object.assign(new Error(this.stats.last_error.message), { code: "disconnected" });
          }
          if (scan.scanned % PROGRESS_EVERY === 0) this._progress(scan);
        }
        // Stopping early leaves a query running in Thunderbird; end it (abortList: Thunderbird 120+).
        if (listId && (scan.cancelled || scan.scanned >= scan.limit)) {
          await Promise.resolve(this.api.messages.abortList?.(listId)).catch(() => {});
          listId = null;
        }
        if (scan.cancelled || scan.scanned >= scan.limit) break;
      }
    } catch (err) {
      scan.error = errorData(err);
    } finally {
      scan.running = false;
      scan.finished_at = this.now();
      if (!scan.error && !scan.cancelled) {
        await Promise.resolve(
          this.api.storage.local.set({ [SCAN_DONE_KEY_PREFIX + scan.account]: scan.finished_at }),
        ).catch(() => {});
      }
      this._progress(scan);
    }
  }

  _progress(scan) {
    this.broadcast({ type: "scan.progress", scan: { ...scan } });
  }
}
