// Keyboard only, in headless Chromium with real key events: Tab reaches the pairing controls with a
// visible focus ring, Enter and Space press them, the code is typed and sent with Enter; rename a
// device without a mouse.
// Fails where no Chromium is installed (Debian: apt-get install chromium; scripts/bootstrap does).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startServer, openPage, findChromium } from "./browser.mjs";
import { STATES, OPTIONS_STATES, NOW } from "./popup_states.mjs";

const BINARY = findChromium();
// A missing browser is a failure, never a skip: the suite's bootstrap installs Chromium.
const skip = false;
test("Chromium is installed for the browser tests", () => {
  assert.ok(BINARY, "no Chromium found: apt-get install chromium (scripts/bootstrap test does), or set CHROMIUM");
});
let server;
let base;

before(async () => {
  if (skip) return;
  ({ server, base } = await startServer({
    paired: { overview: STATES.paired, after: { "pairing.invite": STATES["inviter-code"] }, now: NOW },
    inviting: { overview: STATES["inviter-code"], now: NOW },
    unpaired: { overview: STATES["joined-unpaired"], after: { "pairing.join": STATES["joiner-joining"] }, now: NOW },
    joined: { ...OPTIONS_STATES["options-joined"], now: NOW },
  }));
});
after(() => server?.close());

const SENT = "JSON.parse(document.documentElement.dataset.sent ?? '[]').filter((m) => m.type === 'call')";
const FOCUS = "[document.activeElement.dataset.action ?? document.activeElement.id ?? '', document.activeElement.textContent]";

/** Tab until the focused element matches, returning every stop on the way. */
async function tabTo(page, predicate, max = 15) {
  const stops = [];
  for (let i = 0; i < max; i++) {
    await page.press("Tab");
    const stop = await page.evaluate(FOCUS);
    stops.push(stop);
    if (predicate(stop)) return stops;
  }
  throw new Error(`not reached by Tab: ${JSON.stringify(stops)}`);
}

test("popup, existing device: Tab reaches Add a device, focus is visible, Enter asks for a code", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=paired`);
  try {
    await page.waitFor("document.querySelector('[data-action=\"invite\"]')", "the Add a device button");
    const stops = await tabTo(page, ([action]) => action === "invite");
    assert.deepEqual(stops.at(-1), ["invite", "Add a device"]);
    const outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle");
    assert.equal(outline, "solid", "a keyboard focus ring");
    await page.press("Enter");
    const sent = await page.waitFor(`${SENT}.length && ${SENT}`, "the invite call");
    assert.deepEqual(sent.map((m) => m.method), ["pairing.invite"]);
    const code = await page.waitFor("document.querySelector('.code')?.textContent", "the code");
    assert.equal(code, "417-209-3551");
  } finally {
    await page.close();
  }
});

test("popup, existing device: Space on Cancel ends the invitation", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=inviting`);
  try {
    await page.waitFor("document.querySelector('[data-action=\"cancel\"]')", "the Cancel button");
    await tabTo(page, ([action]) => action === "cancel");
    await page.press(" ");
    const sent = await page.waitFor(`${SENT}.length && ${SENT}`, "the cancel call");
    assert.deepEqual(sent.map((m) => m.method), ["pairing.cancel"]);
  } finally {
    await page.close();
  }
});

test("popup, new device: Tab to the code field, type the code, Enter pairs", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=unpaired`);
  try {
    await page.waitFor("document.querySelector('input.code-input')", "the code field");
    await tabTo(page, ([id]) => id === "account-0-code");
    const outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle");
    assert.equal(outline, "solid", "a keyboard focus ring on the field");
    await page.type("417 209 3551");
    await page.press("Enter");
    const sent = await page.waitFor(`${SENT}.length && ${SENT}`, "the join call");
    assert.deepEqual(sent, [{ type: "call", method: "pairing.join", params: { account: "alice@example.org", code: "417-209-3551" } }]);
    await page.waitFor("document.querySelector('.pairing[data-state=\"joining\"]')", "the progress card");
  } finally {
    await page.close();
  }
});

test("popup, new device: a malformed code keeps the focus in the field with the error announced", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=unpaired`);
  try {
    await page.waitFor("document.querySelector('input.code-input')", "the code field");
    await tabTo(page, ([id]) => id === "account-0-code");
    await page.type("417 209");
    await page.press("Enter");
    const error = await page.waitFor("document.querySelector('.code-error:not([hidden])')?.textContent", "the error");
    assert.match(error, /10 digits/);
    const state = await page.evaluate(
      "[document.activeElement.id, document.activeElement.value, document.activeElement.getAttribute('aria-invalid'), document.activeElement.getAttribute('aria-describedby')]",
    );
    assert.deepEqual(state, ["account-0-code", "417 209", "true", "account-0-hint account-0-code-error"]);
    assert.equal(await page.evaluate(`${SENT}.length`), 0, "nothing went to the host");
  } finally {
    await page.close();
  }
});

test("options: rename a device with the keyboard only", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/options/options.html?scenario=joined`, { width: 760, height: 900 });
  try {
    await page.waitFor("document.querySelector('#devices tbody tr')", "the device list");
    await tabTo(page, ([, text]) => text === "Rename", 30);
    await page.press("Enter");
    const focused = await page.evaluate("[document.activeElement.localName, document.activeElement.value]");
    assert.deepEqual(focused, ["input", "Laptop"], "the name field takes the focus, its text selected");
    await page.type("Work laptop");
    await page.press("Enter");
    const sent = await page.waitFor(`${SENT}.filter((m) => m.method === 'device.rename').length && ${SENT}.filter((m) => m.method === 'device.rename')`, "the rename call");
    assert.deepEqual(sent[0].params, { account: "alice@example.org", device_id: "aaaaaaaaaaaaaaaa", name: "Work laptop" });
  } finally {
    await page.close();
  }
});
