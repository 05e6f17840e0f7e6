// Test doubles: a native port, a controllable clock and a fake `messenger` API for the pages and background.

/** Timers that only fire when the test advances the clock. */
export class FakeTimers {
  constructor() {
    this.now = 0;
    this._nextHandle = 1;
    this._timers = new Map(); // handle -> {at, fn, ms}
    this.scheduled = []; // every delay ever requested, in order
  }

  setTimeout(fn, ms) {
    const handle = this._nextHandle++;
    this._timers.set(handle, { at: this.now + ms, fn, ms });
    this.scheduled.push(ms);
    return handle;
  }

  clearTimeout(handle) {
    this._timers.delete(handle);
  }

  /** Delays of the timers still waiting, shortest first. */
  pendingDelays() {
    return [...this._timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Move the clock forward, firing due timers in time order (timers they add fire too if due). */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [handle, t] of this._timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [handle, t];
      }
      if (next === null) break;
      this._timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
}

function fakeEvent() {
  const listeners = [];
  return {
    addListener: (fn) => listeners.push(fn),
    fire: (...args) => listeners.forEach((fn) => fn(...args)),
  };
}

/** A port shaped like runtime.Port as returned by connectNative. */
export class FakePort {
  constructor(name) {
    this.name = name;
    this.posted = [];
    this.error = null;
    this.disconnected = false;
    this.onMessage = fakeEvent();
    this.onDisconnect = fakeEvent();
  }

  postMessage(msg) {
    if (this.disconnected) throw new Error("Attempt to postMessage on disconnected port");
    // Structured like the real port: the receiver gets a copy, not our object.
    this.posted.push(JSON.parse(JSON.stringify(msg)));
  }

  disconnect() {
    this.disconnected = true;
  }

  /** The host sends a message to the add-on. */
  receive(msg) {
    this.onMessage.fire(msg);
  }

  /** The host goes away; `errorMessage` mimics port.error as Thunderbird sets it. */
  drop(errorMessage) {
    this.disconnected = true;
    this.error = errorMessage ? { message: errorMessage } : null;
    this.onDisconnect.fire(this);
  }

  /** Answer the most recent request for `method` (the hello handshake, usually). */
  reply(method, result) {
    const req = this.posted.findLast((m) => m.method === method);
    if (!req) throw new Error(`no ${method} request was posted`);
    this.receive({ id: req.id, result });
    return req;
  }
}

/** Records every connectNative call and hands out fresh ports. */
export function fakeConnector() {
  const ports = [];
  const connect = (name) => {
    const port = new FakePort(name);
    ports.push(port);
    return port;
  };
  return { connect, ports, get last() { return ports.at(-1); } };
}

/** Let pending promise callbacks run (the client's hello handling is promise-based). */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A fake `messenger` object with the pieces the add-on uses. Everything it was asked to do is
 * recorded on it (`sent`, `notifications.created`, `badge`, ...); `i18n` reads the real messages.json.
 */
export function fakeMessenger({ connect = fakeConnector().connect, messages: localeMessages = {}, accounts = [], mail = {} } = {}) {
  const stored = {};
  const listeners = () => {
    const fns = [];
    return { addListener: (fn) => fns.push(fn), fire: (...args) => fns.map((fn) => fn(...args)), fns };
  };
  const api = {
    sent: [],
    stored,
    runtime: {
      id: "autocrypt-sma@autocrypt.org",
      connectNative: connect,
      onMessage: listeners(),
      sendMessage: async (message) => { api.sent.push(message); },
      getURL: (path) => `moz-extension://fake/${path}`,
      openOptionsPage: async () => { api.optionsOpened = (api.optionsOpened ?? 0) + 1; },
      getPlatformInfo: async () => ({ os: "linux", arch: "x86-64" }),
    },
    storage: {
      local: {
        get: async (key) => {
          if (key == null) return { ...stored };
          const keys = typeof key === "string" ? [key] : Array.isArray(key) ? key : Object.keys(key);
          return Object.fromEntries(keys.filter((k) => k in stored).map((k) => [k, stored[k]]));
        },
        set: async (items) => { Object.assign(stored, items); },
        remove: async (keys) => { for (const k of [].concat(keys)) delete stored[k]; },
      },
    },
    i18n: {
      getMessage: (key, subs) => {
        const entry = localeMessages[key];
        if (!entry) return "";
        const args = [].concat(subs ?? []);
        return entry.message.replace(/\$(\w+)\$/g, (_, name) => {
          const content = entry.placeholders?.[name.toLowerCase()]?.content ?? "";
          const n = Number(content.replace(/^\$/, ""));
          return n ? String(args[n - 1] ?? "") : content;
        });
      },
    },
    notifications: {
      created: [],
      cleared: [],
      create: async (id, options) => { api.notifications.created.push({ id, ...options }); return id; },
      clear: async (id) => { api.notifications.cleared.push(id); return true; },
      onClicked: listeners(),
    },
    browserAction: {
      badge: "",
      popupsOpened: 0,
      setBadgeText: async ({ text }) => { api.browserAction.badge = text; },
      setBadgeBackgroundColor: async () => {},
      openPopup: async () => { api.browserAction.popupsOpened++; return true; },
    },
    windows: {
      created: [],
      create: async (info) => { api.windows.created.push(info); return { id: 1 }; },
    },
    accounts: {
      list: async () => accounts,
      get: async (id) => accounts.find((a) => a.id === id) ?? null,
      onCreated: listeners(),
      onUpdated: listeners(),
      onDeleted: listeners(),
    },
    identities: { onCreated: listeners(), onUpdated: listeners(), onDeleted: listeners() },
    messages: fakeMessages(mail),
  };
  return api;
}

/**
 * messages.* over a map of message id -> {headers: {name: [values]}, raw: string, accountId, date
 * (ms), size (default: the raw length)}.
 * `getHeaders: false` leaves getHeaders out, as in Thunderbird before 147.
 */
export function fakeMessages({ byId = {}, getHeaders = true, pageSize = 2 } = {}) {
  const lists = new Map();
  let nextList = 1;
  const header = (id) => ({
    id: Number(id),
    folder: { accountId: byId[id].accountId },
    ...(byId[id].date !== undefined && { date: new Date(byId[id].date) }),
    size: byId[id].size ?? byId[id].raw?.length,
  });
  const page = (ids) => {
    const now = ids.slice(0, pageSize);
    const rest = ids.slice(pageSize);
    let id = null;
    if (rest.length) {
      id = `list-${nextList++}`;
      lists.set(id, rest);
    }
    return { id, messages: now.map(header) };
  };
  const messages = {
    onNewMailReceived: { fns: [], addListener(fn) { this.fns.push(fn); } },
    queries: [],
    aborted: [],
    page,
    continueList: async (id) => {
      const rest = lists.get(id);
      lists.delete(id);
      if (!rest) throw new Error(`no list ${id}`);
      return page(rest);
    },
    abortList: async (id) => { messages.aborted.push(id); lists.delete(id); },
    query: async (info) => {
      messages.queries.push(info);
      const ids = Object.keys(byId).filter(
        (id) => byId[id].accountId === info.accountId && (!info.fromDate || (byId[id].date ?? Infinity) >= +info.fromDate),
      );
      return page(ids);
    },
    getRaw: async (id, options) => {
      const raw = byId[id].raw;
      if (options?.data_format !== "File") return raw;
      const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
      return new Blob([bytes]);
    },
  };
  if (getHeaders) messages.getHeaders = async (id) => byId[id].headers;
  return messages;
}

/** A host error for FakeHost handlers to throw. */
export function hostError(code, message = code) {
  return Object.assign(new Error(message), { code });
}

/**
 * A scripted native host: each request is answered (asynchronously) by `handlers[method](params)`;
 * a handler that throws answers with an error of its `code`. Unhandled methods get no answer.
 */
export class FakeHost {
  constructor(handlers = {}) {
    this.handlers = { hello: () => ({ instance: "x", host_version: "0.1.0", protocol_version: 1 }), ping: () => ({}), ...handlers };
    this.calls = [];
    this.ports = [];
    this.missing = false; // true: connecting fails as when the host manifest is not installed
    this.connect = (name) => this._connect(name);
  }

  _connect(name) {
    const port = new FakePort(name);
    this.ports.push(port);
    if (this.missing) {
      Promise.resolve().then(() => port.drop("No such native application org.autocrypt.sma"));
      return port;
    }
    const post = port.postMessage.bind(port);
    port.postMessage = (msg) => {
      post(msg);
      this.calls.push(msg);
      const handler = this.handlers[msg.method];
      if (!handler) return;
      Promise.resolve().then(async () => {
        try {
          port.receive({ id: msg.id, result: await handler(msg.params ?? {}) });
        } catch (err) {
          port.receive({ id: msg.id, error: { code: err.code ?? "internal_error", message: err.message } });
        }
      });
    };
    return port;
  }

  get port() { return this.ports.at(-1); }
  emit(event, data) { this.port.receive({ event, data }); }
  callsOf(method) { return this.calls.filter((c) => c.method === method); }
}

/** Wait until `predicate()` holds, letting promises and I/O callbacks run in between. */
export async function until(predicate, what = "condition", rounds = 200) {
  for (let i = 0; i < rounds; i++) {
    if (await predicate()) return;
    await flush();
  }
  throw new Error(`timed out waiting for ${what}`);
}
