// NativeClient against a fake port and fake clock: correlation, timeouts, events, reconnects, status.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  NativeClient,
  NativeError,
  NATIVE_HOST_NAME,
  Status,
} from "../lib/native_client.js";
import { FakeTimers, fakeConnector, flush } from "./fakes.mjs";

const INSTANCE = "0123456789abcdef";
const HOST_MISSING_MESSAGE = "No such native application org.autocrypt.sma";

function setup(options = {}) {
  const timers = new FakeTimers();
  const conn = fakeConnector();
  const statuses = [];
  const errors = [];
  const client = new NativeClient({
    connect: conn.connect,
    instanceId: INSTANCE,
    timers,
    onStatus: (status, info) => statuses.push({ status, ...info }),
    onError: (err) => errors.push(err),
    ...options,
  });
  return { client, timers, conn, statuses, errors };
}

/** Start the client and complete the hello handshake. */
async function connected(options) {
  const ctx = setup(options);
  ctx.client.start();
  ctx.conn.last.reply("hello", { host_version: "0.1.0", protocol_version: 1 });
  await flush();
  assert.equal(ctx.client.status, Status.CONNECTED);
  return ctx;
}

test("connects to org.autocrypt.sma and sends hello with the instance id first", async () => {
  const { client, conn, statuses } = setup();
  assert.equal(NATIVE_HOST_NAME, "org.autocrypt.sma");
  client.start();
  assert.equal(conn.ports.length, 1);
  assert.equal(conn.last.name, "org.autocrypt.sma");
  // A request made before hello is answered must still go out after hello.
  const pending = client.request("status", { verbose: true });
  assert.deepEqual(conn.last.posted[0], { id: 1, method: "hello", params: { instance: INSTANCE } });
  assert.deepEqual(conn.last.posted[1], { id: 2, method: "status", params: { verbose: true } });
  assert.equal(client.status, Status.CONNECTING);

  conn.last.reply("hello", { host_version: "0.1.0", protocol_version: 1 });
  await flush();
  assert.equal(client.status, Status.CONNECTED);
  assert.deepEqual(client.hostInfo, { host_version: "0.1.0", protocol_version: 1 });
  assert.deepEqual(statuses.map((s) => s.status), ["connecting", "connected"]);

  conn.last.receive({ id: 2, result: { ok: 1 } });
  assert.deepEqual(await pending, { ok: 1 });
});

test("responses resolve the request with the same id, with increasing integer ids", async () => {
  const { client, conn } = await connected();
  const a = client.request("ping");
  const b = client.request("echo", { x: 1 });
  const [reqA, reqB] = conn.last.posted.slice(1);
  assert.ok(Number.isInteger(reqA.id) && reqB.id === reqA.id + 1);
  assert.deepEqual(reqA, { id: reqA.id, method: "ping", params: {} });

  conn.last.receive({ id: reqA.id, result: { pong: true } });
  conn.last.receive({ id: reqB.id, result: { x: 1 } });
  assert.deepEqual(await a, { pong: true });
  assert.deepEqual(await b, { x: 1 });
});

test("out-of-order responses reach the right callers", async () => {
  const { client, conn } = await connected();
  const calls = ["a", "b", "c"].map((m) => client.request(m));
  const ids = conn.last.posted.slice(1).map((m) => m.id);
  conn.last.receive({ id: ids[2], result: { n: "c" } });
  conn.last.receive({ id: ids[0], result: { n: "a" } });
  conn.last.receive({ id: ids[1], result: { n: "b" } });
  assert.deepEqual(await Promise.all(calls), [{ n: "a" }, { n: "b" }, { n: "c" }]);
});

test("an error response rejects with its code and message", async () => {
  const { client, conn } = await connected();
  const call = client.request("pair.start", {});
  const { id } = conn.last.posted.at(-1);
  conn.last.receive({ id, error: { code: "not_configured", message: "no account set up" } });
  await assert.rejects(call, (err) => {
    assert.ok(err instanceof NativeError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, "not_configured");
    assert.equal(err.message, "no account set up");
    return true;
  });
});

test("a request times out after timeoutMs, and its late reply is dropped quietly", async () => {
  const { client, conn, timers, errors } = await connected();
  const slow = client.request("slow", {}, { timeoutMs: 1000 });
  let settled = false;
  slow.catch(() => {}).finally(() => { settled = true; });
  const { id } = conn.last.posted.at(-1);

  timers.advance(999);
  await flush();
  assert.equal(settled, false);

  timers.advance(1);
  await assert.rejects(slow, { code: "timeout" });

  conn.last.receive({ id, result: { late: true } });
  assert.deepEqual(errors, []);
  assert.equal(client.status, Status.CONNECTED);
});

test("the default timeout applies when none is given", async () => {
  const { client, timers } = await connected({ defaultTimeoutMs: 5000 });
  const call = client.request("x");
  timers.advance(5000);
  await assert.rejects(call, { code: "timeout" });
});

test("a reply clears its timer", async () => {
  const { client, conn, timers } = await connected();
  const before = timers.pendingDelays().length;
  const call = client.request("x", {}, { timeoutMs: 1000 });
  assert.equal(timers.pendingDelays().length, before + 1);
  conn.last.receive({ id: conn.last.posted.at(-1).id, result: {} });
  await call;
  assert.equal(timers.pendingDelays().length, before);
});

test("the port dropping rejects every pending request with code disconnected", async () => {
  const { client, conn, statuses } = await connected();
  const calls = [client.request("a"), client.request("b")];
  conn.last.drop(); // the host exited: EOF, no error
  for (const call of calls) await assert.rejects(call, { code: "disconnected" });
  assert.equal(client.status, Status.DISCONNECTED);
  assert.equal(statuses.at(-1).status, "disconnected");
  assert.equal(client.lastError.code, "disconnected");
});

test("a request while no port is open fails at once instead of hanging", async () => {
  const { client, conn } = await connected();
  conn.last.drop();
  await assert.rejects(client.request("a"), { code: "disconnected" });
});

test("events go to the subscribers of that name only, until they unsubscribe", async () => {
  const { client, conn, errors } = await connected();
  const seen = [];
  const off = client.onEvent("peer.updated", (data) => seen.push(["first", data]));
  client.onEvent("peer.updated", (data) => seen.push(["second", data]));
  client.onEvent("other", () => seen.push(["other"]));

  conn.last.receive({ event: "peer.updated", data: { addr: "a@example.org" } });
  assert.deepEqual(seen, [
    ["first", { addr: "a@example.org" }],
    ["second", { addr: "a@example.org" }],
  ]);

  off();
  seen.length = 0;
  conn.last.receive({ event: "peer.updated", data: { addr: "b@example.org" } });
  assert.deepEqual(seen, [["second", { addr: "b@example.org" }]]);
  conn.last.receive({ event: "nobody.listens", data: {} });
  assert.deepEqual(errors, []);
});

test('"*" subscribers get every event with its name, after the named ones', async () => {
  const { client, conn } = await connected();
  const seen = [];
  client.onEvent("*", (data, name) => seen.push(["any", name, data]));
  client.onEvent("pairing.updated", (data) => seen.push(["named", data]));
  conn.last.receive({ event: "pairing.updated", data: { n: 1 } });
  conn.last.receive({ event: "sync.state", data: { n: 2 } });
  assert.deepEqual(seen, [
    ["named", { n: 1 }],
    ["any", "pairing.updated", { n: 1 }],
    ["any", "sync.state", { n: 2 }],
  ]);
});

test("a throwing event listener does not stop the others and is reported", async () => {
  const { client, conn, errors } = await connected();
  const seen = [];
  client.onEvent("tick", () => { throw new Error("boom"); });
  client.onEvent("tick", (data) => seen.push(data));
  conn.last.receive({ event: "tick", data: { n: 1 } });
  assert.deepEqual(seen, [{ n: 1 }]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "listener_failed");
  assert.match(errors[0].message, /boom/);
});

test("an error with id null goes to the error listener and leaves requests pending", async () => {
  const { client, conn, errors, timers } = await connected();
  const call = client.request("a", {}, { timeoutMs: 1000 });
  conn.last.receive({ id: null, error: { code: "invalid_json", message: "frame is not JSON" } });
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof NativeError);
  assert.equal(errors[0].code, "invalid_json");
  assert.equal(errors[0].message, "frame is not JSON");
  assert.equal(client.lastError.code, "invalid_json");

  conn.last.receive({ id: conn.last.posted.at(-1).id, result: { still: "ok" } });
  assert.deepEqual(await call, { still: "ok" });
  timers.advance(1000);
  assert.equal(client.status, Status.CONNECTED);
});

test("malformed host messages are reported, not thrown", async () => {
  const { conn, errors } = await connected();
  conn.last.receive("just a string");
  conn.last.receive({ neither: "id nor event" });
  assert.deepEqual(errors.map((e) => e.code), ["bad_message", "bad_message"]);
});

test("reconnects with backoff doubling from 0.5 s to a 30 s cap while the host keeps exiting", async () => {
  const { client, conn, timers } = setup();
  client.start();
  const delays = [];
  for (let attempt = 0; attempt < 9; attempt++) {
    assert.equal(conn.ports.length, attempt + 1);
    conn.last.drop(); // exits before answering hello
    await flush();
    // Only the reconnect timer is left: the dropped hello's timeout must have been cleared.
    const pendingTimers = timers.pendingDelays();
    assert.equal(pendingTimers.length, 1);
    const [delay] = pendingTimers;
    delays.push(delay);
    timers.advance(delay - 1);
    assert.equal(conn.ports.length, attempt + 1, "must not reconnect before the delay");
    timers.advance(1);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);

  // A successful hello resets the schedule.
  conn.last.reply("hello", {});
  await flush();
  assert.equal(client.status, Status.CONNECTED);
  conn.last.drop();
  await flush();
  assert.equal(client.nextBackoffMs, 1000);
  assert.deepEqual(timers.pendingDelays(), [500]);
});

test("request ids keep increasing across reconnects", async () => {
  const { client, conn, timers } = await connected();
  client.request("a").catch(() => {});
  const lastId = conn.last.posted.at(-1).id;
  conn.last.drop();
  timers.advance(500);
  assert.equal(conn.ports.length, 2);
  assert.equal(conn.last.posted[0].method, "hello");
  assert.ok(conn.last.posted[0].id > lastId);
});

test("a reply arriving on an old port is ignored", async () => {
  const { client, conn, timers } = await connected();
  const oldPort = conn.last;
  oldPort.drop();
  timers.advance(500);
  const call = client.request("a");
  const { id } = conn.last.posted.at(-1);
  oldPort.receive({ id, result: { from: "old" } });
  conn.last.receive({ id, result: { from: "new" } });
  assert.deepEqual(await call, { from: "new" });
});

test("host_missing when Thunderbird cannot find the host, and it keeps retrying", async () => {
  const { client, conn, statuses, timers } = setup();
  client.start();
  conn.last.drop(HOST_MISSING_MESSAGE);
  await flush();
  assert.equal(client.status, Status.HOST_MISSING);
  assert.deepEqual(client.lastError, { code: "host_missing", message: HOST_MISSING_MESSAGE });
  assert.deepEqual(statuses.map((s) => s.status), ["connecting", "host_missing"]);
  assert.deepEqual(statuses.at(-1).lastError, { code: "host_missing", message: HOST_MISSING_MESSAGE });

  // After the user installs the host, the next attempt succeeds without reloading the add-on.
  timers.advance(500);
  assert.equal(conn.ports.length, 2);
  conn.last.reply("hello", { host_version: "0.1.0" });
  await flush();
  assert.equal(client.status, Status.CONNECTED);
  assert.equal(client.lastError, null);
});

test("other port errors give disconnected, not host_missing", async () => {
  const { client, conn } = setup();
  client.start();
  conn.last.drop("An unexpected error occurred");
  await flush();
  assert.equal(client.status, Status.DISCONNECTED);
  assert.deepEqual(client.lastError, { code: "disconnected", message: "An unexpected error occurred" });
});

test("a hello error drops the port and schedules a reconnect", async () => {
  const { client, conn, timers } = setup();
  client.start();
  const hello = conn.last.posted[0];
  conn.last.receive({ id: hello.id, error: { code: "unsupported_protocol", message: "too old" } });
  await flush();
  assert.equal(client.status, Status.DISCONNECTED);
  assert.deepEqual(client.lastError, { code: "unsupported_protocol", message: "too old" });
  assert.equal(conn.ports[0].disconnected, true);
  timers.advance(500);
  assert.equal(conn.ports.length, 2);
});

test("a host that never answers hello is dropped after the timeout", async () => {
  const { client, conn, timers } = setup({ defaultTimeoutMs: 3000 });
  client.start();
  timers.advance(3000);
  await flush();
  assert.equal(client.lastError.code, "timeout");
  assert.equal(client.status, Status.DISCONNECTED);
  assert.equal(conn.ports[0].disconnected, true);
});

test("stop() disconnects, rejects pending requests and does not reconnect", async () => {
  const { client, conn, timers } = await connected();
  const call = client.request("a");
  client.stop();
  await assert.rejects(call, { code: "disconnected" });
  assert.equal(conn.last.disconnected, true);
  assert.equal(client.status, Status.STOPPED);
  timers.advance(60000);
  assert.equal(conn.ports.length, 1);
});

test("reconnectNow() skips the remaining backoff", async () => {
  const { client, conn, timers } = setup();
  client.start();
  conn.last.drop(HOST_MISSING_MESSAGE);
  timers.advance(500);
  conn.last.drop(HOST_MISSING_MESSAGE);
  assert.deepEqual(timers.pendingDelays(), [1000]);
  client.reconnectNow();
  assert.equal(conn.ports.length, 3);
  assert.equal(client.status, Status.CONNECTING);
  timers.advance(1000);
  assert.equal(conn.ports.length, 3, "the cancelled backoff timer must not open a fourth port");
});

test("a connect() that throws is retried with backoff", async () => {
  const timers = new FakeTimers();
  let calls = 0;
  const client = new NativeClient({
    connect: () => { calls++; throw new Error("nativeMessaging not permitted"); },
    instanceId: INSTANCE,
    timers,
  });
  client.start();
  assert.equal(client.status, Status.DISCONNECTED);
  assert.equal(client.lastError.message, "nativeMessaging not permitted");
  timers.advance(500);
  assert.equal(calls, 2);
});

test("the constructor refuses a missing instance id", () => {
  assert.throws(() => new NativeClient({ connect: () => {}, instanceId: "" }), TypeError);
});
