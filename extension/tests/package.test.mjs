// Checks that hold across files: manifest settings, referenced files, locale keys, CSP, the built .xpi.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync, existsSync, mkdtempSync, rmSync, cpSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateRawSync } from "node:zlib";
import { tmpdir } from "node:os";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const read = (rel) => readFileSync(join(ROOT, rel), "utf8");
const manifest = JSON.parse(read("manifest.json"));
const messages = JSON.parse(read("_locales/en/messages.json"));
const PAGES = ["background/background.html", "popup/popup.html", "options/options.html"];
const PAGE_SCRIPTS = ["background/background.js", "popup/popup.js", "options/options.js"];

test("manifest: persistent MV2 background page, Thunderbird 128+, the permissions the add-on needs", () => {
  assert.equal(manifest.manifest_version, 2);
  assert.equal(manifest.browser_specific_settings.gecko.id, "autocrypt-sma@autocrypt.org");
  assert.equal(manifest.browser_specific_settings.gecko.strict_min_version, "128.0");
  // No upper bound: newer releases are checked by feature (experiments/openpgp/parent.js).
  assert.equal(manifest.browser_specific_settings.gecko.strict_max_version, undefined);
  assert.deepEqual(
    [...manifest.permissions].sort(),
    ["accountsRead", "messagesRead", "nativeMessaging", "notifications", "storage"],
  );
  assert.equal(manifest.background.page, "background/background.html");
  assert.notEqual(manifest.background.persistent, false);
  assert.equal(manifest.browser_action.default_popup, "popup/popup.html");
  assert.equal(manifest.options_ui.page, "options/options.html");
  assert.equal(manifest.default_locale, "en");
});

test("every file the manifest names exists", () => {
  const referenced = [
    manifest.background.page,
    manifest.browser_action.default_popup,
    manifest.browser_action.default_icon,
    manifest.options_ui.page,
    ...Object.values(manifest.icons),
  ];
  for (const rel of referenced) assert.ok(existsSync(join(ROOT, rel)), `${rel} is missing`);
});

test("pages load their scripts as modules from files, with no inline script or handler", () => {
  for (const page of PAGES) {
    const html = read(page);
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1, `${page} should load exactly one script`);
    const [, attrs, body] = scripts[0];
    assert.match(attrs, /type="module"/, page);
    const src = attrs.match(/src="([^"]+)"/)?.[1];
    assert.ok(src && existsSync(join(ROOT, dirname(page), src)), `${page}: script src ${src} missing`);
    assert.equal(body.trim(), "", `${page} has an inline script`);
    assert.doesNotMatch(html, /\son[a-z]+=/i, `${page} has an inline event handler`);
  }
});

test("every locale key used by the manifest, pages and scripts exists, with its message", () => {
  const used = new Set();
  for (const [, key] of JSON.stringify(manifest).matchAll(/__MSG_(\w+)__/g)) used.add(key);
  for (const page of PAGES) for (const [, key] of read(page).matchAll(/data-i18n="(\w+)"/g)) used.add(key);
  for (const script of PAGE_SCRIPTS) {
    const src = read(script);
    for (const [, key] of src.matchAll(/(?:msg|getMessage)\("(\w+)"\)/g)) used.add(key);
    // Keys picked from a lookup table, e.g. STATUS_MESSAGE_KEYS in the popup.
    for (const [, key] of src.matchAll(/:\s*"(status[A-Z]\w*)"/g)) used.add(key);
  }
  assert.ok(used.size > 10, "the key scan found too little to be trusted");
  for (const key of used) {
    assert.ok(messages[key]?.message, `_locales/en/messages.json lacks "${key}"`);
  }
  assert.equal(messages.installCommand.message, "autocrypt-sma install");
});

/** Minimal reader for the zip the build script writes: central directory, then each entry. */
function readZip(buf) {
  const end = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buf.readUInt16LE(end + 10);
  let at = buf.readUInt32LE(end + 16);
  const entries = new Map();
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50);
    const size = buf.readUInt32LE(at + 20);
    const nameLen = buf.readUInt16LE(at + 28);
    const localAt = buf.readUInt32LE(at + 42);
    const name = buf.toString("utf8", at + 46, at + 46 + nameLen);
    const dataAt = localAt + 30 + buf.readUInt16LE(localAt + 26) + buf.readUInt16LE(localAt + 28);
    entries.set(name, inflateRawSync(buf.subarray(dataAt, dataAt + size)));
    at += 46 + nameLen;
  }
  return entries;
}

test("build-xpi packs exactly the runtime files, byte for byte", () => {
  const work = mkdtempSync(join(tmpdir(), "xpi-test-"));
  try {
    // Build from a copy so the test never touches the developer's dist/.
    const skip = new Set([join(ROOT, "node_modules"), join(ROOT, "dist")]);
    cpSync(ROOT, work, { recursive: true, filter: (src) => !skip.has(src) });
    execFileSync(process.execPath, [join(work, "scripts/build-xpi.mjs")], { cwd: work });
    const entries = readZip(readFileSync(join(work, "dist/autocrypt-sma.xpi")));
    const names = [...entries.keys()];
    assert.ok(names.includes("manifest.json"));
    assert.ok(names.includes("lib/native_client.js"));
    assert.ok(names.includes("_locales/en/messages.json"));
    for (const name of names) {
      assert.doesNotMatch(name, /^(tests|scripts|node_modules|dist)\/|^package/, `${name} must not ship`);
      assert.deepEqual(entries.get(name), readFileSync(join(ROOT, name)), `${name} differs`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test("a strict content security policy: scripts and styles from the package only, nothing inline", () => {
  const csp = Object.fromEntries(
    manifest.content_security_policy.split(";").map((d) => d.trim().split(/\s+/)).map(([name, ...values]) => [name, values]),
  );
  assert.deepEqual(csp["default-src"], ["'none'"]);
  assert.deepEqual(csp["script-src"], ["'self'"]);
  assert.deepEqual(csp["style-src"], ["'self'"]);
  assert.deepEqual(csp["object-src"], ["'none'"]);
  assert.doesNotMatch(manifest.content_security_policy, /unsafe-|data:|blob:|\*/);
  // style-src 'self' also forbids style attributes and <style> blocks in the pages.
  for (const page of PAGES) assert.doesNotMatch(read(page), /\sstyle=|<style/i, `${page} has inline style`);
});

test("web-ext lint (npm run lint) sees exactly the packaged files, with only experiment_apis held back", async () => {
  const scripts = JSON.parse(read("package.json")).scripts;
  assert.equal(scripts.lint, "node scripts/lint.mjs");
  const { PACKAGED } = await import("../scripts/packaged.mjs");
  const lint = read("scripts/lint.mjs");
  assert.match(lint, /for \(const entry of PACKAGED\) cpSync/);
  assert.deepEqual([...lint.matchAll(/delete manifest\.(\w+)/g)].map((m) => m[1]), ["experiment_apis"]);
  const notPackaged = new Set(["tests", "scripts", "dist", "artifacts", "package.json", "package-lock.json", "README.md"]);
  const present = readdirSync(ROOT).filter((name) => !name.startsWith(".") && name !== "node_modules");
  for (const name of present) {
    assert.ok(PACKAGED.includes(name) !== notPackaged.has(name), `${name}: packaged, or known not to be — pick one`);
  }
});

test("every message in _locales/en is used by a packaged file (no dead strings)", () => {
  const sources = [];
  const walk = (rel) => {
    const path = join(ROOT, rel);
    if (statSync(path).isDirectory()) for (const name of readdirSync(path)) walk(join(rel, name));
    else if (/\.(js|html)$/.test(rel)) sources.push(read(rel));
  };
  for (const dir of ["background", "popup", "options", "lib"]) walk(dir);
  const text = sources.join("\n") + JSON.stringify(manifest);
  for (const key of Object.keys(messages)) {
    const used = text.includes(`"${key}"`) || text.includes(`__MSG_${key}__`);
    assert.ok(used, `"${key}" is in messages.json but nothing uses it`);
  }
});
