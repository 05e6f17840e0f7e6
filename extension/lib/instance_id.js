// Per-profile instance id: lets the one native host tell apart several Thunderbird profiles using it.

export const INSTANCE_ID_KEY = "instanceId";
const INSTANCE_ID_BYTES = 8; // 16 hex chars: enough to never collide between a user's profiles
const INSTANCE_ID_RE = /^[0-9a-f]{16}$/;

export function newInstanceId(getRandomValues = (a) => globalThis.crypto.getRandomValues(a)) {
  const bytes = getRandomValues(new Uint8Array(INSTANCE_ID_BYTES));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Return the stored id, creating and storing one on first use.
 * @param {{get: Function, set: Function}} storage  `storage.local` or a test double with the same promise API
 */
export async function getOrCreateInstanceId(storage, getRandomValues) {
  const stored = (await storage.get(INSTANCE_ID_KEY))?.[INSTANCE_ID_KEY];
  // A malformed value (hand-edited, older format) is replaced rather than sent to the host.
  if (typeof stored === "string" && INSTANCE_ID_RE.test(stored)) return stored;
  const id = newInstanceId(getRandomValues);
  await storage.set({ [INSTANCE_ID_KEY]: id });
  return id;
}
