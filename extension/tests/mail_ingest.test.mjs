// Keys from incoming mail: header blocks for peers.ingest, new-mail handling, the backlog scan.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  headerBlockFromDict,
  headerBlockFromRaw,
  isEncryptedType,
  readHeaderBlockBase64,
  MAX_BLOCK_BYTES,
  MAX_ENCRYPTED_BYTES,
} from "../lib/mail_headers.js";
import { MailIngest, SCAN_DONE_KEY_PREFIX, receivedSeconds } from "../background/mail_ingest.js";
import { fakeMessenger, hostError } from "./fakes.mjs";

const ACCOUNT = "alice@example.org";
const AUTOCRYPT = "addr=bob@example.net; keydata=mQENBF1234\r\n abcd";
const RAW = [
  "Received: from a by b",
  "Received: from c by d",
  "From: Bob <bob@example.net>",
  "To: alice@example.org",
  "Subject: hi",
  "Date: Tue, 14 Nov 2023 10:00:00 +0000",
  `Autocrypt: ${AUTOCRYPT}`,
  "Content-Type: text/plain",
  "",
  "Autocrypt: addr=evil@example.com; keydata=in-the-body",
  "",
].join("\r\n");
const decode = (b64) => Buffer.from(b64, "base64").toString("latin1");

test("headerBlockFromRaw keeps only the fields the Autocrypt rules read, folding intact, body ignored", () => {
  const block = headerBlockFromRaw(RAW);
  assert.equal(
    block,
    "From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\n" +
      `Autocrypt: ${AUTOCRYPT}\r\nContent-Type: text/plain\r\n\r\n`,
  );
  // LF-only messages and bytes work the same.
  assert.equal(headerBlockFromRaw(Buffer.from(RAW.replaceAll("\r\n", "\n"), "latin1")), block.replace("\r\n abcd", "\r\n abcd"));
});

test("headerBlockFromRaw without a blank line keeps complete lines only", () => {
  assert.equal(headerBlockFromRaw("From: a@b.c\r\nAutocrypt: addr=a@b.c; keyd"), "From: a@b.c\r\n\r\n");
});

test("headerBlockFromDict: wanted fields, canonical names, no header injection through a value", () => {
  const block = headerBlockFromDict({
    from: ["Bob <bob@example.net>"],
    "x-spam": ["no"],
    autocrypt: [AUTOCRYPT],
    subject: ["s"],
    cc: ["x@example.com\r\nAutocrypt: addr=evil@example.com; keydata=AAAA"],
  });
  assert.equal(
    block,
    `From: Bob <bob@example.net>\r\nAutocrypt: ${AUTOCRYPT}\r\nCc: x@example.com Autocrypt: addr=evil@example.com; keydata=AAAA\r\n\r\n`,
  );
});

test("an oversized block drops To/Cc/Reply-To first to stay within the host's 64 KiB", () => {
  const huge = Array.from({ length: 4000 }, (_, i) => `user${i}@example.com`).join(", ");
  const block = headerBlockFromDict({ from: ["b@example.net"], to: [huge], autocrypt: [AUTOCRYPT] });
  assert.ok(block.length < MAX_BLOCK_BYTES);
  assert.match(block, /^From: b@example\.net\r\nAutocrypt: /);
});

test("readHeaderBlockBase64 uses getHeaders with raw values where it exists, else the start of getRaw", async () => {
  const withHeaders = { getHeaders: async (id, options) => { assert.deepEqual(options, { decodeHeaders: false }); return { from: ["b@example.net"] }; } };
  assert.equal(decode(await readHeaderBlockBase64(withHeaders, 1)), "From: b@example.net\r\n\r\n");
  const rawOnly = { getRaw: async (id, options) => { assert.deepEqual(options, { data_format: "File" }); return new Blob([Buffer.from(RAW, "latin1")]); } };
  assert.match(decode(await readHeaderBlockBase64(rawOnly, 1)), /^From: Bob <bob@example\.net>\r\n/);
  // An older Thunderbird answers getRaw with a binary string.
  const binary = { getRaw: async () => RAW };
  assert.equal(decode(await readHeaderBlockBase64(binary, 1)), headerBlockFromRaw(RAW));
});

function setup({ getHeaders = true, byId, ingest } = {}) {
  const tbAccounts = [
    { id: "account1", type: "imap", identities: [{ email: "Alice@Example.org" }] },
    { id: "account2", type: "imap", identities: [{ email: "other@example.com" }] },
  ];
  byId ??= {
    1: { accountId: "account1", headers: { from: ["b1@example.net"] }, raw: "From: b1@example.net\r\n\r\nbody", date: 3000 },
    2: { accountId: "account1", headers: { from: ["b2@example.net"] }, raw: "From: b2@example.net\r\n\r\nbody", date: 2000 },
    3: { accountId: "account1", headers: { from: ["b3@example.net"] }, raw: "From: b3@example.net\r\n\r\nbody", date: 1000 },
    4: { accountId: "account2", headers: { from: ["b4@example.net"] }, raw: "From: b4@example.net\r\n\r\nbody", date: 3000 },
  };
  const api = fakeMessenger({ accounts: tbAccounts, mail: { byId, getHeaders } });
  const calls = [];
  const call = async (method, params) => {
    calls.push({ method, params });
    if (method === "account.list") return { accounts: [{ account: ACCOUNT, imap: {}, device_id: null }] };
    if (method === "peers.ingest") return ingest ? ingest(params) : { updated: true, addr: "x" };
    throw new Error(method);
  };
  const sent = [];
  let clock = 10_000;
  const mail = new MailIngest({ api, call, broadcast: (m) => sent.push(m), now: () => clock });
  return { api, calls, sent, mail, ingests: () => calls.filter((c) => c.method === "peers.ingest"), tick: (ms) => { clock += ms; } };
}

test("new mail: every message of every page goes to peers.ingest for the matching SMA account", async () => {
  const { api, mail, ingests } = setup();
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1", "2", "3"]));
  assert.deepEqual(ingests().map((c) => [c.params.account, decode(c.params.message)]), [
    [ACCOUNT, "From: b1@example.net\r\n\r\n"],
    [ACCOUNT, "From: b2@example.net\r\n\r\n"],
    [ACCOUNT, "From: b3@example.net\r\n\r\n"],
  ]);
  assert.equal(mail.stats.ingested, 3);
});

test("new mail in an account no SMA account matches is left alone", async () => {
  const { api, mail, ingests } = setup();
  await mail.onNewMail({ accountId: "account2" }, api.messages.page(["4"]));
  assert.equal(ingests().length, 0);
});

test("without getHeaders (Thunderbird before 147) the raw message is read instead", async () => {
  const { api, mail, ingests } = setup({ getHeaders: false });
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1"]));
  assert.equal(decode(ingests()[0].params.message), "From: b1@example.net\r\n\r\n");
});

test("a failing ingest is counted and the next message still goes", async () => {
  const { api, mail, ingests } = setup({
    ingest: (params) => {
      if (decode(params.message).includes("b1@")) throw hostError("invalid_params", "bad");
      return { updated: false, addr: "b2@example.net" };
    },
  });
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1", "2"]));
  assert.equal(ingests().length, 2);
  assert.equal(mail.stats.failed, 1);
  assert.deepEqual(mail.stats.last_error, { code: "invalid_params", message: "bad" });
});

test("backlog scan: the account's mail since the cut-off, with progress, then remembered", async () => {
  const { api, mail, ingests, sent } = setup();
  const started = mail.startScan(ACCOUNT, { days: 1 });
  assert.equal(started.running, true);
  await mail.scanDone;
  const query = api.messages.queries[0];
  assert.equal(query.accountId, "account1");
  assert.equal(+query.fromDate, 10_000 - 86400 * 1000);
  assert.equal(ingests().length, 3);
  assert.equal(mail.scan.running, false);
  assert.equal(mail.scan.scanned, 3);
  assert.equal(mail.scan.updated, 3);
  assert.equal(sent.at(-1).type, "scan.progress");
  assert.equal(sent.at(-1).scan.scanned, 3);
  assert.equal(api.stored[SCAN_DONE_KEY_PREFIX + ACCOUNT], 10_000);
});

test("backlog scan stops at its bound and ends Thunderbird's query", async () => {
  const { api, mail, ingests } = setup();
  mail.startScan(ACCOUNT, { limit: 1 });
  await mail.scanDone;
  assert.equal(ingests().length, 1);
  assert.equal(mail.scan.scanned, 1);
  assert.equal(api.messages.aborted.length, 1);
});

test("backlog scan can be cancelled; a cancelled scan is not remembered as done", async () => {
  let cancel;
  const { api, mail, ingests } = setup({ ingest: () => { cancel(); return { updated: false, addr: "x" }; } });
  cancel = () => mail.cancelScan();
  mail.startScan(ACCOUNT);
  await mail.scanDone;
  assert.equal(ingests().length, 1);
  assert.equal(mail.scan.cancelled, true);
  assert.equal(api.stored[SCAN_DONE_KEY_PREFIX + ACCOUNT], undefined);
});

test("a second start while scanning returns the running scan; no account is refused", async () => {
  const { mail } = setup();
  const first = mail.startScan(ACCOUNT);
  assert.equal(mail.startScan(ACCOUNT), first);
  await mail.scanDone;
  assert.equal(mail.startScan("").ok, false);
});

test("new mail the host could not take (down, busy) is sent again by retryPending; other errors are not", async () => {
  let down = true;
  const { api, mail, ingests } = setup({
    ingest: (params) => {
      if (down) throw hostError("disconnected", "native host is not connected");
      if (decode(params.message).includes("b2@")) throw hostError("invalid_params", "bad");
      return { updated: true, addr: "x" };
    },
  });
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1"]));
  assert.deepEqual(mail.retry, [{ messageId: 1, account: ACCOUNT, header: { size: 28, date: new Date(3000) } }]);
  down = false;
  await mail.retryPending();
  assert.deepEqual(mail.retry, []);
  assert.equal(ingests().length, 2);
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["2"]));
  assert.deepEqual(mail.retry, [], "a refused message is not retried");
});

test("a backlog scan stops with an error when the host goes away", async () => {
  const { mail, ingests } = setup({ ingest: () => { throw hostError("disconnected", "gone"); } });
  mail.startScan(ACCOUNT);
  await mail.scanDone;
  assert.equal(ingests().length, 1);
  assert.deepEqual(mail.scan.error, { code: "disconnected", message: "gone" });
  assert.equal(mail.scan.running, false);
});

const ENCRYPTED = [
  "From: Bob <bob@example.net>",
  'To: "hidden-recipients": ;',
  "Date: Tue, 14 Nov 2023 10:00:00 +0000",
  'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";',
  ' boundary="b"',
  "",
  "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b",
  "Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhF4D\xe9\r\n-----END PGP MESSAGE-----",
  "--b--",
  "",
].join("\r\n");

function encryptedMail(extra = {}) {
  const headers = {
    from: ["Bob <bob@example.net>"],
    "content-type": ['multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary="b"'],
  };
  return {
    1: { accountId: "account1", headers, raw: ENCRYPTED, date: 1_700_000_000_000, ...extra },
    2: { accountId: "account1", headers: { from: ["b2@example.net"] }, raw: "From: b2@example.net\r\n\r\nbody", date: 2000 },
  };
}

test("isEncryptedType reads multipart/encrypted, folded or not, and nothing else", () => {
  assert.equal(isEncryptedType('Multipart/Encrypted; protocol="application/pgp-encrypted"'), true);
  assert.equal(isEncryptedType(" multipart/encrypted\r\n ; boundary=x"), true);
  assert.equal(isEncryptedType("multipart/encrypted-ish"), false);
  assert.equal(isEncryptedType("multipart/mixed"), false);
  assert.equal(isEncryptedType(undefined), false);
});

for (const getHeaders of [true, false]) {
  test(`encrypted mail goes whole, byte for byte, with the date Thunderbird holds (getHeaders ${getHeaders})`, async () => {
    const { api, mail, ingests } = setup({ getHeaders, byId: encryptedMail(), ingest: (params) =>
        decode(params.message).includes("BEGIN PGP")
          ? { updated: true, addr: "bob@example.net", encrypted: "decrypted" }
          : { updated: false, addr: "b2@example.net" },
    });
    await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1", "2"]));
    const [first, second] = ingests();
    assert.equal(decode(first.params.message), ENCRYPTED);
    assert.equal(first.params.received, 1_700_000_000);
    assert.equal(decode(second.params.message), "From: b2@example.net\r\n\r\n", "plaintext mail still goes as headers");
    assert.equal(second.params.received, 2);
    assert.equal(mail.stats.encrypted, 1);
    assert.equal(mail.stats.decrypted, 1);
  });

  test(`encrypted mail above the bound goes as its header block and is never downloaded whole (getHeaders ${getHeaders})`, async () => {
    const big = ENCRYPTED.replace("hF4D", "A".repeat(MAX_ENCRYPTED_BYTES));
    const byId = encryptedMail({ raw: big, size: big.length });
    const { api, mail, ingests } = setup({ getHeaders, byId });
    let wholeReads = 0;
    const getRaw = api.messages.getRaw;
    api.messages.getRaw = async (id, options) => {
      const file = await getRaw(id, options);
      return { size: file.size, slice: (a, b) => { if (b - a > 256 * 1024) wholeReads++; return file.slice(a, b); } };
    };
    await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1"]));
    const block = decode(ingests()[0].params.message);
    assert.match(block, /^From: Bob <bob@example\.net>\r\n/);
    assert.match(block, /multipart\/encrypted/);
    assert.ok(!block.includes("BEGIN PGP MESSAGE"));
    assert.equal(wholeReads, 0);
  });
}

test("a message header's size stops the whole download before any read of the body", async () => {
  const byId = encryptedMail({ size: MAX_ENCRYPTED_BYTES + 1 });
  const { api, mail, ingests } = setup({ byId });
  let raws = 0;
  const getRaw = api.messages.getRaw;
  api.messages.getRaw = async (...args) => { raws++; return getRaw(...args); };
  await mail.onNewMail({ accountId: "account1" }, api.messages.page(["1"]));
  assert.equal(raws, 0, "getHeaders alone was enough");
  assert.ok(!decode(ingests()[0].params.message).includes("BEGIN PGP MESSAGE"));
});

test("the backlog scan sends encrypted mail whole, with its date as received", async () => {
  const { mail, ingests } = setup({ byId: encryptedMail({ date: 20_000 }) });
  mail.startScan(ACCOUNT, { days: 1 });
  await mail.scanDone;
  const first = ingests().find((c) => decode(c.params.message).includes("BEGIN PGP MESSAGE"));
  assert.ok(first, "the encrypted message was scanned");
  assert.equal(first.params.received, 20);
});

test("receivedSeconds: a Date or ms number to whole seconds; anything else is left out", () => {
  assert.equal(receivedSeconds(new Date(1_700_000_000_999)), 1_700_000_000);
  assert.equal(receivedSeconds(5_000), 5);
  assert.equal(receivedSeconds(new Date(NaN)), null);
  assert.equal(receivedSeconds(undefined), null);
  assert.equal(receivedSeconds(-1), null);
});
