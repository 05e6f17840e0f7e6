// Client for the native-messaging port to the Python host: request ids, timeouts, events, reconnects.

export const NATIVE_HOST_NAME = "org.autocrypt.sma";
export const DEFAULT_TIMEOUT_MS = 20000;
export const BACKOFF_INITIAL_MS = 500;
export const BACKOFF_MAX_MS = 30000;

// Gecko's wording when no host manifest is registered ("No such native application org.autocrypt.sma");
// Chrome's ("Specified native messaging host not found.") is matched too so the check is not Gecko-only.
const HOST_MISSING_RE = /no such native application|native messaging host not found/i;

export const Status = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  HOST_MISSING: "host_missing",
  DISCONNECTED: "disconnected",
  STOPPED: "stopped",
});

export class NativeError extends Error {
  constructor(code, message, data) {
    super(message);
    this.name = "NativeError";
    this.code = code;
    if (data !== undefined) this.data = data;
  }
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export class NativeClient {
  /**
   * @param {object} options
   * @param {(hostName: string) => object} options.connect  runtime.connectNative or a fake port factory
   * @param {string} options.instanceId  sent in `hello` so the host can tell profiles apart
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {(status: string, info: object) => void} [options.onStatus]
   * @param {(error: NativeError) => void} [options.onError]  errors tied to no request
   */
  constructor({
    connect,
    instanceId,
    hostName = NATIVE_HOST_NAME,
    timers = globalThis,
    onStatus = () => {},
    onError = () => {},
    defaultTimeoutMs = DEFAULT_TIMEOUT_MS,
    backoffInitialMs = BACKOFF_INITIAL_MS,
    backoffMaxMs = BACKOFF_MAX_MS,
  }) {
    if (typeof connect !== "function") throw new TypeError("connect must be a function");
    if (typeof instanceId !== "string" || !instanceId) throw new TypeError("instanceId must be a non-empty string");
    this._connect = connect;
    this._instanceId = instanceId;
    this._hostName = hostName;
    // Bound so a test's fake timers and the browser's globals are called the same way.
    this._setTimeout = (fn, ms) => timers.setTimeout(fn, ms);
    this._clearTimeout = (handle) => timers.clearTimeout(handle);
    this._onStatus = onStatus;
    this._onError = onError;
    this._defaultTimeoutMs = defaultTimeoutMs;
    this._backoffInitialMs = backoffInitialMs;
    this._backoffMaxMs = backoffMaxMs;

    this._nextId = 1; // never reset, so a reply from an old port can never match a new request
    this._pending = new Map(); // id -> {resolve, reject, timer, method}
    this._listeners = new Map(); // event name -> Set of fns
    this._port = null;
    this._running = false;
    this._reconnectTimer = null;
    this._backoffMs = backoffInitialMs;
    this._status = Status.STOPPED;
    this._hostInfo = null;
    this._lastError = null;
  }

  get status() { return this._status; }
  /** The host's `hello` result (host_version, protocol_version, ...), or null before the first one. */
  get hostInfo() { return this._hostInfo; }
  get lastError() { return this._lastError; }
  /** Delay the next reconnect will wait; exposed for diagnostics and tests. */
  get nextBackoffMs() { return this._backoffMs; }

  start() {
    if (this._running) return;
    this._running = true;
    this._openPort();
  }

  /** Close the port for good: pending requests fail and no reconnect is scheduled. */
  stop() {
    this._running = false;
    this._cancelReconnect();
    this._closePort();
    this._rejectAll(new NativeError("disconnected", "client stopped"));
    this._setStatus(Status.STOPPED);
  }

  /** Skip the remaining backoff, e.g. right after the user installed the host. */
  reconnectNow() {
    if (!this._running || this._port) return;
    this._cancelReconnect();
    this._openPort();
  }

  request(method, params = {}, { timeoutMs = this._defaultTimeoutMs } = {}) {
    if (typeof method !== "string" || !method) {
      return Promise.reject(new TypeError("method must be a non-empty string"));
    }
    if (!this._port) {
      return Promise.reject(new NativeError("disconnected", "native host is not connected"));
    }
    return this._send(method, params, timeoutMs);
  }

  /**
   * Subscribe to an unsolicited host event; returns an unsubscribe function.
   * The name "*" receives every event as `fn(data, name)`.
   */
  onEvent(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name)?.delete(fn);
  }

  _send(method, params, timeoutMs) {
    const id = this._nextId++;
    const port = this._port;
    return new Promise((resolve, reject) => {
      const timer = this._setTimeout(() => {
        this._pending.delete(id);
        reject(new NativeError("timeout", `${method} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, method });
      try {
        port.postMessage({ id, method, params });
      } catch (err) {
        // postMessage throws on a port that died between our check and the send.
        this._settle(id, null, new NativeError("disconnected", String(err?.message ?? err)));
      }
    });
  }

  _openPort() {
    this._reconnectTimer = null;
    this._setStatus(Status.CONNECTING);
    let port;
    try {
      port = this._connect(this._hostName);
    } catch (err) {
      this._lastError = { code: "connect_failed", message: String(err?.message ?? err) };
      this._setStatus(Status.DISCONNECTED);
      this._scheduleReconnect();
      return;
    }
    this._port = port;
    port.onMessage.addListener((msg) => {
      if (port === this._port) this._onMessage(msg);
    });
    port.onDisconnect.addListener((p) => {
      if (port === this._port) this._onDisconnect(p ?? port);
    });
    // hello goes first on every port so the host knows which profile it serves before anything else.
    this._send("hello", { instance: this._instanceId }, this._defaultTimeoutMs).then(
      (result) => {
        if (port !== this._port) return;
        this._hostInfo = isPlainObject(result) ? result : {};
        this._lastError = null;
        this._setStatus(Status.CONNECTED);
      },
      (err) => {
        if (port !== this._port) return;
        // A host that refuses or ignores hello is unusable; drop it and retry later.
        this._lastError = { code: err.code ?? "hello_failed", message: err.message };
        this._dropPort();
      },
    );
  }

  _onMessage(msg) {
    if (!isPlainObject(msg)) {
      this._reportError(new NativeError("bad_message", "host sent a non-object message"));
      return;
    }
    if (typeof msg.event === "string") {
      this._dispatchEvent(msg.event, isPlainObject(msg.data) ? msg.data : {});
      return;
    }
    if (!("id" in msg)) {
      this._reportError(new NativeError("bad_message", "host message has neither id nor event"));
      return;
    }
    const error = isPlainObject(msg.error)
      ? new NativeError(String(msg.error.code ?? "error"), String(msg.error.message ?? ""), msg.error.data)
      : null;
    if (msg.id === null) {
      // The host could not read a request well enough to know its id (e.g. invalid_json).
      this._reportError(error ?? new NativeError("bad_message", "response with id null and no error"));
      return;
    }
    if (!this._pending.has(msg.id)) return; // a reply after its timeout: the caller already gave up
    if (!error && !("result" in msg)) {
      this._settle(msg.id, null, new NativeError("bad_message", "response has neither result nor error"));
      return;
    }
    this._settle(msg.id, error ? null : msg.result, error);
  }

  _settle(id, result, error) {
    const entry = this._pending.get(id);
    if (!entry) return;
    this._pending.delete(id);
    this._clearTimeout(entry.timer);
    if (error) {
      entry.reject(error);
      return;
    }
    // An answered hello proves the host starts and speaks the protocol: the next outage starts from a short delay.
    if (entry.method === "hello") this._backoffMs = this._backoffInitialMs;
    entry.resolve(result);
  }

  _dispatchEvent(name, data) {
    const named = name === "*" ? [] : [...(this._listeners.get(name) ?? [])];
    for (const fn of [...named, ...(this._listeners.get("*") ?? [])]) {
      try {
        fn(data, name);
      } catch (err) {
        // One failing subscriber must not starve the others or break the port's listener.
        this._reportError(new NativeError("listener_failed", `${name} listener: ${err?.message ?? err}`));
      }
    }
  }

  _onDisconnect(port) {
    const message = port?.error?.message ?? "";
    const hostMissing = HOST_MISSING_RE.test(message);
    this._lastError = message
      ? { code: hostMissing ? "host_missing" : "disconnected", message }
      : { code: "disconnected", message: "native host exited" };
    this._dropPort(hostMissing ? Status.HOST_MISSING : Status.DISCONNECTED);
  }

  _dropPort(status = Status.DISCONNECTED) {
    this._closePort();
    this._rejectAll(new NativeError("disconnected", this._lastError?.message ?? "native host disconnected"));
    this._setStatus(status);
    this._scheduleReconnect();
  }

  // Our own port.disconnect() does not fire our onDisconnect, so every caller cleans up itself.
  _closePort() {
    const port = this._port;
    this._port = null;
    if (port) {
      try { port.disconnect(); } catch { /* already gone */ }
    }
  }

  _rejectAll(error) {
    for (const id of [...this._pending.keys()]) this._settle(id, null, error);
  }

  _scheduleReconnect() {
    if (!this._running || this._reconnectTimer !== null) return;
    const delay = this._backoffMs;
    this._backoffMs = Math.min(delay * 2, this._backoffMaxMs);
    this._reconnectTimer = this._setTimeout(() => this._openPort(), delay);
  }

  _cancelReconnect() {
    if (this._reconnectTimer !== null) this._clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }

  _reportError(error) {
    this._lastError = { code: error.code, message: error.message };
    try { this._onError(error); } catch { /* the error sink itself must not break the port */ }
  }

  _setStatus(status) {
    if (status === this._status) return;
    this._status = status;
    try {
      this._onStatus(status, { hostInfo: this._hostInfo, lastError: this._lastError });
    } catch { /* a broken status sink must not break the port */ }
  }
}
