// The background page driven through a fake `messenger` global: startup, status and call forwarding.

import { test, before } from "node:test";
import assert from "node:assert/strict";

import { fakeConnector, flush } from "./fakes.mjs";

const ADDON_ID = "autocrypt-sma@autocrypt.org";
const conn = fakeConnector();
const stored = {};
let onMessage = null;

globalThis.messenger = {
  runtime: {
    id: ADDON_ID,
    connectNative: conn.connect,
    onMessage: { addListener: (fn) => { onMessage = fn; } },
  },
  storage: {
    local: {
      get: async (key) => (key in stored ? { [key]: stored[key] } : {}),
      set: async (items) => Object.assign(stored, items),
    },
  },
};

const fromPopup = { id: ADDON_ID, url: `moz-extension://x/popup/popup.html` };
const send = (message, sender = fromPopup) => onMessage(message, sender);

/** Answer the newest request for `method` on the current port. */
function answer(method, reply) {
  const req = conn.last.posted.findLast((m) => m.method === method);
  assert.ok(req, `no ${method} request was sent`);
  conn.last.receive({ id: req.id, ...reply });
}

before(async () => {
  console.info = () => {}; // keep the status log out of the test report
  await import("../background/background.js");
  await flush();
});

test("starts the native host with a stored instance id and reports connecting", async () => {
  assert.equal(typeof onMessage, "function");
  assert.equal(conn.ports.length, 1);
  assert.equal(conn.last.name, "org.autocrypt.sma");
  const hello = conn.last.posted[0];
  assert.equal(hello.method, "hello");
  assert.match(hello.params.instance, /^[0-9a-f]{16}$/);
  assert.equal(stored.instanceId, hello.params.instance);

  const reply = await send({ type: "status" });
  assert.equal(reply.status, "connecting");
  assert.equal(reply.host_version, null);
});

test("after hello it pings, and status carries the host and protocol versions", async () => {
  answer("hello", { result: { host_version: "0.1.0", protocol_version: 1 } });
  await flush();
  const ping = conn.last.posted.at(-1);
  assert.equal(ping.method, "ping");
  answer("ping", { result: {} });
  assert.deepEqual(await send({ type: "status" }), {
    status: "connected",
    host_version: "0.1.0",
    protocol_version: 1,
    last_error: null,
  });
});

test("call forwards to the host and returns its result", async () => {
  const replyPromise = send({ type: "call", method: "accounts.list", params: { all: true } });
  await flush();
  const req = conn.last.posted.at(-1);
  assert.deepEqual({ method: req.method, params: req.params }, { method: "accounts.list", params: { all: true } });
  conn.last.receive({ id: req.id, result: { accounts: [] } });
  assert.deepEqual(await replyPromise, { ok: true, result: { accounts: [] } });
});

test("a host error comes back as data with its code", async () => {
  const replyPromise = send({ type: "call", method: "pair.start" });
  await flush();
  const req = conn.last.posted.at(-1);
  assert.deepEqual(req.params, {});
  conn.last.receive({ id: req.id, error: { code: "not_configured", message: "no account" } });
  assert.deepEqual(await replyPromise, { ok: false, error: { code: "not_configured", message: "no account" } });
});

test("pages cannot send hello themselves", async () => {
  const before = conn.last.posted.length;
  const reply = await send({ type: "call", method: "hello", params: { instance: "ffffffffffffffff" } });
  assert.equal(reply.ok, false);
  assert.equal(reply.error.code, "invalid_method");
  assert.equal(conn.last.posted.length, before);
});

test("messages from other senders or of unknown type are not acted on", async () => {
  assert.equal(send({ type: "status" }, { id: "someone-else@example.org" }), undefined);
  assert.equal(send("status"), undefined);
  const reply = await send({ type: "bogus" });
  assert.equal(reply.error.code, "unknown_type");
});
