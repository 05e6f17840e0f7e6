// The code the user types on the new device, and the host calls behind the pairing controls.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { readCode, formatCode } from "../lib/pairing_code.js";
import { pairingCall, joinCall, failureText } from "../lib/pairing_actions.js";
import { fakeMessenger } from "./fakes.mjs";

const MESSAGES = JSON.parse(readFileSync(new URL("../_locales/en/messages.json", import.meta.url), "utf8"));
const t = fakeMessenger({ messages: MESSAGES }).i18n.getMessage;
// The host's own pattern for params.code (native_host/api/schemas/common.json, pairing_code).
const HOST_PATTERN = /^[0-9][0-9 \-]{9,30}$/;

test("a code is accepted with or without dashes and spaces, and sent in the shown form", () => {
  for (const typed of ["417-209-3551", "4172093551", "417 209 3551", " 417 - 209 - 3551 ", "417209-3551", "41 72 09 35 51"]) {
    const read = readCode(typed);
    assert.deepEqual(read, { ok: true, code: "417-209-3551" }, typed);
    assert.match(read.code, HOST_PATTERN);
  }
  assert.equal(formatCode("0000000001"), "000-000-0001");
});

test("a malformed code says what is wrong, in the user's words", () => {
  assert.deepEqual(readCode(""), { ok: false, errorKey: "codeErrorEmpty" });
  assert.deepEqual(readCode("   "), { ok: false, errorKey: "codeErrorEmpty" });
  assert.deepEqual(readCode("417-209-355"), { ok: false, errorKey: "codeErrorLength" });
  assert.deepEqual(readCode("417-209-35511"), { ok: false, errorKey: "codeErrorLength" });
  assert.deepEqual(readCode("417-2O9-3551"), { ok: false, errorKey: "codeErrorCharacters" }, "a letter O for a zero");
  assert.deepEqual(readCode("417.209.3551"), { ok: false, errorKey: "codeErrorCharacters" });
  assert.deepEqual(readCode("٤١٧٢٠٩٣٥٥١"), { ok: false, errorKey: "codeErrorCharacters" }, "only ASCII digits reach the host");
  for (const key of ["codeErrorEmpty", "codeErrorLength", "codeErrorCharacters"]) assert.ok(t(key).length > 20, key);
  assert.match(t("codeErrorLength"), /10 digits, like 417-209-3551/);
});

test("the controls' host calls: invite, cancel, join; nothing else is a pairing call", () => {
  const account = "alice@example.org";
  assert.deepEqual(pairingCall("invite", { account }), ["pairing.invite", { account }]);
  assert.deepEqual(pairingCall("cancel", { account, pairingId: "a".repeat(32) }), ["pairing.cancel", { account, pairing_id: "a".repeat(32) }]);
  for (const gone of ["approve", "reject", "pair", "sync"]) assert.equal(pairingCall(gone, { account }), null, gone);
  assert.deepEqual(joinCall(account, "417 209 3551"), { ok: true, call: ["pairing.join", { account, code: "417-209-3551" }] });
  assert.deepEqual(joinCall(account, "12"), { ok: false, errorKey: "codeErrorLength" });
});

test("failures read: a code naming no device gets its own words, others the host's message", () => {
  assert.equal(
    failureText("pairing.join", { code: "invalid_params", message: "params.code: no device of this account has the number 417" }, t),
    "None of this account's devices has a code starting with those digits. Check the code, and that your other device is online.",
  );
  assert.equal(failureText("pairing.join", { code: "invalid_request", message: "this device is already paired" }, t), "That did not work: this device is already paired");
  assert.equal(failureText("pairing.invite", { code: "invalid_params", message: "x" }, t), "That did not work: x");
  assert.equal(failureText("pairing.cancel", { code: "pairing_state" }, t), "That did not work: pairing_state");
});
