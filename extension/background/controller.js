// The background's logic, apart from the page globals so tests can build one against a fake API:
// owns the native port, answers the pages, fans host events out to them, notifies, ingests mail.
// Pairing needs nothing from it beyond the fan-out: the pages start it (pairing.invite on a paired
// device, pairing.join with the typed code on the new one) and no event asks for an answer.

import { NativeClient, Status } from "../lib/native_client.js";
import { getOrCreateInstanceId } from "../lib/instance_id.js";
import { MailIngest } from "./mail_ingest.js";
import { OpenPgpSync, SETTING_KEY as OPENPGP_SETTING } from "./openpgp_sync.js";
import { ThunderbirdTokens } from "./oauth_tokens.js";

const PING_TIMEOUT_MS = 5000;
const SYNC_TIMEOUT_MS = 60000; // one sync cycle talks to the IMAP server
const MAX_ALERTS = 5; // per account, newest first
// The client sends hello itself; letting a page send another could rebind the host to a different
// instance. The account's secret key is for the background's OpenPGP import only.
const METHODS_RESERVED_FOR_CLIENT = new Set(["hello", "account.secret_key"]);
// Host events after which the host has just heard from the server: they move "last sync".
const SYNC_EVIDENCE = new Set(["devices.changed", "pairing.updated", "pairing.completed"]);
const NOTIFICATION_PREFIX = "autocrypt-sma:";

function errorData(err) {
  return { code: err?.code ?? "internal", message: String(err?.message ?? err) };
}

export class Background {
  /**
   * @param {object} api  `messenger` (or `browser`), or a test double with the same shape
   * @param {object} [options]
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {() => number} [options.now]  milliseconds, like Date.now
   */
  constructor(api, { timers = globalThis, now = () => Date.now(), clientOptions = {} } = {}) {
    this.api = api;
    this.timers = timers;
    this.now = now;
    this.clientOptions = clientOptions;
    this.client = null;
    this.sync = new Map(); // account -> {online, error, last_sync}
    this.alerts = new Map(); // account -> [{kind, message, at}]
    this.mail = new MailIngest({
      api,
      call: (method, params, opts) => this.call(method, params, opts),
      broadcast: (message) => this.broadcast(message),
      now,
    });
    this.openpgp = new OpenPgpSync({ api, call: (method, params) => this.call(method, params), now });
    this.tokens = new ThunderbirdTokens({
      api,
      call: (method, params, opts) => this.call(method, params, opts),
      changed: (account) => this.broadcast({ type: "signin.changed", account }),
    });
  }

  async start() {
    const api = this.api;
    const instanceId = await getOrCreateInstanceId(api.storage.local);
    this.client = new NativeClient({
      connect: (hostName) => api.runtime.connectNative(hostName),
      instanceId,
      timers: this.timers,
      onStatus: (status, { lastError }) => this.onStatus(status, lastError),
      onError: (err) => console.warn("autocrypt-sma: native host error", err.code, err.message),
      ...this.clientOptions,
    });
    this.client.onEvent("*", (data, name) => this.onHostEvent(name, data));
    api.notifications?.onClicked?.addListener((id) => this.onNotificationClicked(id));
    api.messages?.onNewMailReceived?.addListener((folder, list) => this.mail.onNewMail(folder, list));
    // Thunderbird's account or identity settings changed: a held sign-in may work now. (No
    // WebExtension event reports Server Settings; "Sign in again" covers those.)
    for (const source of [api.accounts, api.identities]) {
      for (const event of ["onCreated", "onUpdated", "onDeleted"]) source?.[event]?.addListener(() => this.tokens.resumeAll());
    }
    api.storage.onChanged?.addListener((changes, area) => {
      if (area === "local" && OPENPGP_SETTING in changes) this.openpgpSettingChanged().catch(() => {});
    });
    this.client.start();
    return this;
  }

  /** A request to the host; rejects with a NativeError (`code`, `message`). */
  call(method, params = {}, options) {
    return this.client.request(method, params, options);
  }

  // --- status and fan-out -------------------------------------------------------------------

  onStatus(status, lastError) {
    console.info("autocrypt-sma: native host", status, lastError?.message ?? "");
    this.broadcast({ type: "status", ...this.statusReply() });
    if (status === Status.CONNECTED) {
      this.afterConnect();
      this.mail.retryPending();
    }
  }

  statusReply() {
    const info = this.client.hostInfo ?? {};
    return {
      status: this.client.status,
      host_version: info.host_version ?? null,
      protocol_version: info.protocol_version ?? null,
      last_error: this.client.lastError,
    };
  }

  /** Tell every open page (popup, options); nobody listening is normal, not an error. */
  broadcast(message) {
    try {
      Promise.resolve(this.api.runtime.sendMessage(message)).catch(() => {});
    } catch { /* no receiver */ }
  }

  // A ping checks the host answers a plain request, not only the handshake; then one sync per
  // joined account gives "last sync" a value.
  async afterConnect() {
    try {
      await this.call("ping", {}, { timeoutMs: PING_TIMEOUT_MS });
    } catch (err) {
      console.warn("autocrypt-sma: ping failed", err.code, err.message);
      return;
    }
    let accounts = [];
    try {
      accounts = (await this.call("account.list")).accounts ?? [];
    } catch (err) {
      console.warn("autocrypt-sma: account.list failed", err.code, err.message);
    }
    for (const { account, device_id: deviceId } of accounts) {
      if (!deviceId) {
        this.openpgp.forgetIfRemoved(account).catch(() => {}); // removed while we were not listening
        continue;
      }
      this.syncNow(account).catch(() => {});
      this.openpgp.schedule(account, { key: true, peers: "all" });
    }
  }

  async openpgpSettingChanged() {
    const accounts = (await this.call("account.list")).accounts ?? [];
    await this.openpgp.onSettingChanged(accounts.filter((a) => a.device_id).map((a) => a.account));
  }

  async syncNow(account) {
    const result = await this.call("sync", { account }, { timeoutMs: SYNC_TIMEOUT_MS });
    this.markSynced(account, { online: true, error: null, waiting: null });
    return result;
  }

  syncState(account) {
    return this.sync.get(account) ?? { online: null, error: null, last_sync: null, waiting: null };
  }

  markSynced(account, changes = {}) {
    const state = { ...this.syncState(account), last_sync: this.now(), ...changes };
    this.sync.set(account, state);
  }

  onHostEvent(name, data) {
    const account = data?.account;
    if (name === "sync.state" && account) {
      // Waiting for a token from Thunderbird is not an outage: an error only when the host gives one.
      const waiting = data.waiting ?? null;
      const error = data.online ? null : data.error ?? (waiting ? null : { code: "imap_unavailable", message: "" });
      if (data.online) this.markSynced(account, { online: true, error: null, waiting: null });
      else this.sync.set(account, { ...this.syncState(account), online: false, error, waiting });
    } else if (SYNC_EVIDENCE.has(name) && account) {
      this.markSynced(account, { online: true, error: null, waiting: null });
    } else if (name === "security.alert" && account) {
      this.keepAlert(account, data.kind, data.message);
      this.notify(`alert:${this.now()}`, "notifyAlertTitle", [account], data.message);
    } else if (name === "device.removed" && account) {
      this.sync.delete(account);
    } else if (name === "devices.member_removed" && account) {
      // Once per removal (the host keeps track): the removed device still knows the password.
      const key = data.left ? "notifyMemberLeftBody" : "notifyMemberRemovedBody";
      this.keepAlert(account, "device_removed", this.msg(key, [data.name]));
      this.notify(`removed:${data.device_id}`, "notifyMemberRemovedTitle", [account], this.msg(key, [data.name]));
    } else if (name === "devices.expiry_proposed" && account) {
      const names = (data.devices ?? []).map((d) => d.name).join(", ");
      const text = this.msg("notifyExpiryBody", [names, String(data.after_days)]);
      this.keepAlert(account, "expiry", text);
      this.notify(`expiry:${this.now()}`, "notifyExpiryTitle", [account], text);
    }
    if (name === "pairing.completed" && account && data?.pairing) this.notifyPaired(account, data.pairing);
    this.openpgp.onHostEvent(name, data);
    this.tokens.onHostEvent(name, data);
    this.broadcast({ type: "event", event: name, data });
  }

  /** Shown in the popup's account view (newest first, bounded). */
  keepAlert(account, kind, message) {
    const list = [{ kind, message, at: this.now() }, ...(this.alerts.get(account) ?? [])];
    this.alerts.set(account, list.slice(0, MAX_ALERTS));
  }

  // --- notifications -------------------------------------------------------------------------

  msg(key, substitutions) {
    return this.api.i18n?.getMessage(key, substitutions) || key;
  }

  notify(id, titleKey, titleArgs, message) {
    const notifications = this.api.notifications;
    if (!notifications?.create) return;
    Promise.resolve(
      notifications.create(NOTIFICATION_PREFIX + id, {
        type: "basic",
        iconUrl: this.api.runtime.getURL?.("icons/icon.svg") ?? "icons/icon.svg",
        title: this.msg(titleKey, titleArgs),
        message,
      }),
    ).catch((err) => console.warn("autocrypt-sma: notification failed", err?.message ?? err));
  }

  /** The popup that started a pairing may be closed by the time it completes: say so. */
  notifyPaired(account, pairing) {
    const message =
      pairing.role === "inviter"
        ? this.msg("notifyPairedInviter", [pairing.peer_name || this.msg("unnamedDevice")])
        : this.msg("notifyPairedJoiner");
    this.notify(`pairing:${pairing.pairing_id}`, "notifyPairedTitle", [account], message);
  }

  clearNotification(id) {
    Promise.resolve(this.api.notifications?.clear?.(NOTIFICATION_PREFIX + id)).catch(() => {});
  }

  async onNotificationClicked(id) {
    if (typeof id !== "string" || !id.startsWith(NOTIFICATION_PREFIX)) return;
    this.clearNotification(id.slice(NOTIFICATION_PREFIX.length));
    // The toolbar popup where browserAction.openPopup works; else (missing, refused without a user
    // gesture, or no button in this window) the same page in a small window of its own.
    try {
      if ((await this.api.browserAction?.openPopup?.()) ?? false) return;
    } catch (err) {
      console.warn("autocrypt-sma: openPopup failed, opening a window instead", err?.message ?? err);
    }
    try {
      await this.api.windows?.create?.({ url: this.api.runtime.getURL("popup/popup.html"), type: "popup", width: 460, height: 620 });
    } catch (err) {
      console.warn("autocrypt-sma: could not open the popup", err?.message ?? err);
    }
  }

  // --- the pages' requests ------------------------------------------------------------------

  /** Everything the popup shows, in one answer. */
  async overview() {
    const reply = { ...this.statusReply(), accounts: null, error: null, scan: this.mail.scan };
    if (this.client.status !== Status.CONNECTED) return reply;
    try {
      const { accounts } = await this.call("account.list");
      reply.accounts = await Promise.all(accounts.map((a) => this.accountOverview(a)));
    } catch (err) {
      reply.error = errorData(err);
    }
    return reply;
  }

  async accountOverview(entry) {
    const account = entry.account;
    const view = {
      account,
      device_id: entry.device_id ?? null,
      joined: Boolean(entry.device_id),
      paired: false,
      devices: [],
      pairings: [],
      unsolicited_requests: 0,
      sync: this.syncState(account),
      openpgp: this.openpgp.status.get(account) ?? null,
      alerts: this.alerts.get(account) ?? [],
      token_error: this.tokens.lastError.get(account) ?? null,
      sign_in_held: this.tokens.held.has(account),
      error: null,
    };
    if (!view.joined) return view;
    try {
      const [{ devices }, { pairings, unsolicited_requests: unsolicited }] = await Promise.all([
        this.call("devices.list", { account }),
        this.call("pairing.list", { account }),
      ]);
      view.devices = devices;
      view.paired = devices.some((d) => d.self && d.paired);
      view.pairings = pairings;
      view.unsolicited_requests = unsolicited ?? 0;
    } catch (err) {
      view.error = errorData(err);
    }
    return view;
  }

  // Errors travel as data: an Error thrown across runtime.sendMessage loses its `code`.
  async forwardCall(method, params) {
    if (typeof method !== "string" || METHODS_RESERVED_FOR_CLIENT.has(method)) {
      return { ok: false, error: { code: "invalid_method", message: `method not allowed: ${method}` } };
    }
    try {
      const result =
        method === "sync" ? await this.syncNow(params?.account) : await this.call(method, params ?? {});
      if (method === "sma.join" && params?.account) this.openpgp.schedule(params.account, { key: true });
      if (method === "account.configure" && params?.account) this.tokens.resume(params.account);
      return { ok: true, result };
    } catch (err) {
      return { ok: false, error: errorData(err) };
    }
  }

  async handleMessage(message) {
    switch (message.type) {
      case "status":
        return this.statusReply();
      case "reconnect":
        this.client.reconnectNow();
        return this.statusReply();
      case "call":
        return this.forwardCall(message.method, message.params);
      case "overview":
        return this.overview();
      case "scan.start":
        return this.mail.startScan(message.account, message.options);
      case "scan.cancel":
        return this.mail.cancelScan();
      case "scan.status":
        return this.mail.scan;
      case "sign_in_again":
        return { ok: true, result: { asked: this.tokens.signInAgain(message.account) } };
      case "openpgp.status":
        return this.openpgp.status.get(message.account) ?? null;
      default:
        return { ok: false, error: { code: "unknown_type", message: `unknown message type: ${message.type}` } };
    }
  }
}
