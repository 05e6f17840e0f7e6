// getOrCreateInstanceId against an in-memory stand-in for storage.local.

import { test } from "node:test";
import assert from "node:assert/strict";

import { getOrCreateInstanceId, newInstanceId, INSTANCE_ID_KEY } from "../lib/instance_id.js";

/** Same promise API as storage.local: get(key) -> {key: value}, set(object). */
function memoryStorage(initial = {}) {
  const data = { ...initial };
  return {
    data,
    sets: 0,
    async get(key) {
      return key in data ? { [key]: data[key] } : {};
    },
    async set(items) {
      this.sets++;
      Object.assign(data, items);
    },
  };
}

test("creates a 16-hex-char id on first use and stores it", async () => {
  const storage = memoryStorage();
  const id = await getOrCreateInstanceId(storage);
  assert.match(id, /^[0-9a-f]{16}$/);
  assert.equal(storage.data[INSTANCE_ID_KEY], id);
  assert.equal(storage.sets, 1);
});

test("returns the stored id on later calls without writing", async () => {
  const storage = memoryStorage();
  const first = await getOrCreateInstanceId(storage);
  const second = await getOrCreateInstanceId(storage);
  assert.equal(second, first);
  assert.equal(storage.sets, 1);
});

test("keeps an id that was already in storage", async () => {
  const storage = memoryStorage({ [INSTANCE_ID_KEY]: "00112233445566ff" });
  assert.equal(await getOrCreateInstanceId(storage), "00112233445566ff");
  assert.equal(storage.sets, 0);
});

test("replaces a malformed stored value", async () => {
  const storage = memoryStorage({ [INSTANCE_ID_KEY]: "not-an-id" });
  const id = await getOrCreateInstanceId(storage, (a) => a.fill(0xab));
  assert.equal(id, "abababababababab");
  assert.equal(storage.data[INSTANCE_ID_KEY], id);
});

test("the id is built from the injected random source, zero-padded", () => {
  const bytes = [0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0xfe, 0xff];
  const id = newInstanceId((a) => { a.set(bytes); return a; });
  assert.equal(id, "00010f107f80feff");
});

test("two fresh profiles get different ids", async () => {
  const a = await getOrCreateInstanceId(memoryStorage());
  const b = await getOrCreateInstanceId(memoryStorage());
  assert.notEqual(a, b);
});
