// Test doubles for the browser pieces NativeClient needs: a native port and a controllable clock.

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
