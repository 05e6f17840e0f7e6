// Keyboard only, in headless Chromium with real key events: Tab reaches the pairing buttons with a
// visible focus ring, Enter and Space press them; rename a device without a mouse.
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
    responder: { overview: STATES["responder-showing"], now: NOW },
    initiator: { overview: STATES["initiator-showing"], now: NOW },
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

test("popup, existing device: Tab reaches Approve before Reject, focus is visible, Enter approves", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=responder`);
  try {
    await page.waitFor("document.querySelector('[data-action=\"approve\"]')", "the Approve button");
    const stops = await tabTo(page, ([action]) => action === "approve");
    assert.deepEqual(stops.at(-1), ["approve", "Approve"]);
    const outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle");
    assert.equal(outline, "solid", "a keyboard focus ring");
    await page.press("Tab");
    assert.deepEqual(await page.evaluate(FOCUS), ["reject", "Reject"]);
    await page.press("Tab", { shift: true });
    await page.press("Enter");
    const sent = await page.waitFor(`${SENT}.length && ${SENT}`, "the approve call");
    assert.equal(sent[0].method, "pairing.approve");
  } finally {
    await page.close();
  }
});

test("popup, new device: Space on Confirm sends pairing.approve", { skip, timeout: 60000 }, async () => {
  const page = await openPage(BINARY, `${base}/popup/popup.html?scenario=initiator`);
  try {
    await page.waitFor("document.querySelector('[data-action=\"approve\"]')", "the Confirm button");
    await tabTo(page, ([action]) => action === "approve");
    await page.press(" ");
    const sent = await page.waitFor(`${SENT}.length && ${SENT}`, "the confirm call");
    assert.deepEqual(sent.map((m) => m.method), ["pairing.approve"]);
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
