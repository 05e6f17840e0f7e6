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

/**
 * Read one message's header block the cheapest way this Thunderbird offers and return it as
 * base64, ready for peers.ingest: `messages.getHeaders` (Thunderbird 147+, raw values), else the
 * start of `messages.getRaw`.
 */
export async function readHeaderBlockBase64(messages, messageId) {
  if (typeof messages.getHeaders === "function") {
    const dict = await messages.getHeaders(messageId, { decodeHeaders: false });
    return utf8ToBase64(headerBlockFromDict(dict));
  }
  const raw = await messages.getRaw(messageId, { data_format: "File" });
  const start =
    typeof raw === "string"
      ? raw.slice(0, RAW_READ_BYTES)
      : new Uint8Array(await raw.slice(0, RAW_READ_BYTES).arrayBuffer());
  return btoa(headerBlockFromRaw(start));
}
