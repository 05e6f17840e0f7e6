// Header blocks for peers.ingest: only the fields the Autocrypt rules read, so a message with
// hundreds of Received lines still fits the host's bounds (64 KiB, 200 fields).

/** The fields the host's Autocrypt update rules look at (docs/protocol.md, Key sync). */
export const INGEST_FIELDS = ["from", "date", "content-type", "auto-submitted", "autocrypt", "to", "cc", "reply-to"];
const WANTED = new Set(INGEST_FIELDS);
// Dropped first when the block is too big: they matter for gossip only, and a huge To list is the usual culprit.
const DROPPABLE = new Set(["to", "cc", "reply-to"]);
export const MAX_BLOCK_BYTES = 64 * 1024;
/** How much of a raw message is read to find its header block. */
export const RAW_READ_BYTES = 256 * 1024;

const canonicalName = (name) => name.toLowerCase().replace(/(^|-)([a-z])/g, (_, dash, c) => dash + c.toUpperCase());

// A value must not smuggle in a header of its own: line breaks stay only where they fold.
const sanitize = (value) => value.replace(/\r?\n(?![ \t])/g, " ").replace(/\r(?!\n)/g, " ");

function assemble(fields) {
  let kept = fields;
  const size = (list) => list.reduce((n, f) => n + f.text.length + 2, 2);
  if (size(kept) > MAX_BLOCK_BYTES) kept = kept.filter((f) => !DROPPABLE.has(f.name));
  return kept.map((f) => f.text).join("\r\n") + "\r\n\r\n";
}

/**
 * From `messages.getHeaders` (a dictionary: header name -> array of raw values) to a header block.
 * @returns {string}
 */
export function headerBlockFromDict(dict) {
  const fields = [];
  for (const [name, values] of Object.entries(dict ?? {})) {
    const lower = name.toLowerCase();
    if (!WANTED.has(lower)) continue;
    for (const value of [].concat(values)) {
      fields.push({ name: lower, text: `${canonicalName(lower)}: ${sanitize(String(value))}` });
    }
  }
  return assemble(fields);
}

/** Bytes <-> a "binary string" with one char per byte, so raw 8-bit headers pass through unchanged. */
export function bytesToBinary(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return out;
}

export function binaryToBytes(text) {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

/**
 * The wanted fields of a raw message's header block (the message as bytes or a binary string;
 * only the start is needed). Folded lines stay with their field.
 * @returns {string} a binary string
 */
export function headerBlockFromRaw(raw) {
  const text = typeof raw === "string" ? raw : bytesToBinary(raw);
  const end = text.search(/\r?\n\r?\n/);
  // No blank line within what was read: keep the complete lines only.
  const head = end >= 0 ? text.slice(0, end) : text.slice(0, Math.max(0, text.lastIndexOf("\n"))).replace(/\r$/, "");
  const fields = [];
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && fields.length) {
      fields.at(-1).text += "\r\n" + line;
    } else {
      const colon = line.indexOf(":");
      fields.push({ name: colon > 0 ? line.slice(0, colon).trim().toLowerCase() : "", text: line });
    }
  }
  return assemble(fields.filter((f) => WANTED.has(f.name)));
}

export function utf8ToBase64(text) {
  return btoa(bytesToBinary(new TextEncoder().encode(text)));
}

/** The largest encrypted message sent whole (the host's pgpmime.MAX_ENCRYPTED_BYTES: 700 KiB, as
 * base64 it still fits the host's 1 MiB request frame). */
export const MAX_ENCRYPTED_BYTES = 700 * 1024;

const ENCRYPTED_RE = /^\s*multipart\/encrypted\s*(;|$)/i;

/** Whether a Content-Type value (raw, possibly folded) is multipart/encrypted. */
export function isEncryptedType(value) {
  return ENCRYPTED_RE.test(String(value ?? "").replace(/\r?\n[ \t]/g, " "));
}

const contentTypeOf = (block) => /(?:^|\r\n)Content-Type:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)/i.exec(block)?.[1];

async function rawFile(messages, messageId) {
  return messages.getRaw(messageId, { data_format: "File" });
}

async function rawBytes(raw, limit) {
  if (typeof raw === "string") return binaryToBytes(raw.slice(0, limit));
  return new Uint8Array(await raw.slice(0, limit).arrayBuffer());
}

/**
 * One message for peers.ingest, as base64: its header block, read the cheapest way this
 * Thunderbird offers (`messages.getHeaders`, Thunderbird 147+, raw values; else the start of
 * `messages.getRaw`); or, for an encrypted (multipart/encrypted) message up to
 * MAX_ENCRYPTED_BYTES, the whole raw message, which the host decrypts to read the Autocrypt and
 * Autocrypt-Gossip headers that live only inside (Delta Chat, Level 1 gossip). A larger
 * encrypted message goes as its header block: its outer headers still count.
 * `size` is the MessageHeader's size, when known, so a large message is never downloaded.
 * @returns {Promise<{message: string, encrypted: boolean, whole: boolean}>}
 */
export async function readIngestMessage(messages, messageId, { size } = {}) {
  const fits = !(Number(size) > MAX_ENCRYPTED_BYTES);
  if (typeof messages.getHeaders === "function") {
    const dict = await messages.getHeaders(messageId, { decodeHeaders: false });
    const type = Object.entries(dict ?? {}).find(([name]) => name.toLowerCase() === "content-type")?.[1];
    const encrypted = [].concat(type ?? []).some(isEncryptedType);
    if (encrypted && fits) {
      const whole = await readWhole(await rawFile(messages, messageId));
      if (whole) return { message: whole, encrypted, whole: true };
    }
    return { message: utf8ToBase64(headerBlockFromDict(dict)), encrypted, whole: false };
  }
  const raw = await rawFile(messages, messageId);
  const block = headerBlockFromRaw(await rawBytes(raw, RAW_READ_BYTES));
  const encrypted = isEncryptedType(contentTypeOf(block));
  if (encrypted && fits) {
    const whole = await readWhole(raw);
    if (whole) return { message: whole, encrypted, whole: true };
  }
  return { message: btoa(block), encrypted, whole: false };
}

/** The whole raw message as base64, or null if it is above MAX_ENCRYPTED_BYTES. */
async function readWhole(raw) {
  const length = typeof raw === "string" ? raw.length : raw.size;
  if (!(length <= MAX_ENCRYPTED_BYTES)) return null;
  return btoa(bytesToBinary(await rawBytes(raw, MAX_ENCRYPTED_BYTES)));
}

/** The header block alone, as base64 (see readIngestMessage). */
export async function readHeaderBlockBase64(messages, messageId) {
  return (await readIngestMessage(messages, messageId, { size: Infinity })).message;
}
