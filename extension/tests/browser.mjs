// Renders the add-on's real pages in headless Chromium against tests/page_fake.js: a loopback
// HTTP server serves the extension folder (with the manifest's CSP as a header) and injects the fake.

import { createServer } from "node:http";
import { readFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { execFile, spawn } from "node:child_process";
import { join, dirname, extname, normalize } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml" };
const manifest = JSON.parse(readFileSync(join(ROOT, "manifest.json"), "utf8"));
const messages = JSON.parse(readFileSync(join(ROOT, "_locales/en/messages.json"), "utf8"));

export function findChromium() {
  for (const path of [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]) {
    if (path && existsSync(path)) return path;
  }
  return null;
}

/** Start the server; `scenarios[name]` is the fake's config for `?scenario=name`. */
export async function startServer(scenarios) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    const scenario = scenarios[url.searchParams.get("scenario")];
    if (url.pathname === "/__fake.js") {
      const config = { messages, ...scenario };
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(`globalThis.__FAKE__ = ${JSON.stringify(config)};\n${readFileSync(join(ROOT, "tests/page_fake.js"), "utf8")}`);
      return;
    }
    const rel = normalize(decodeURIComponent(url.pathname)).replace(/^([/\\])+/, "");
    const path = join(ROOT, rel);
    if (!path.startsWith(ROOT) || !existsSync(path)) {
      res.writeHead(404).end();
      return;
    }
    let body = readFileSync(path);
    if (extname(path) === ".html") {
      const src = `/__fake.js?scenario=${encodeURIComponent(url.searchParams.get("scenario") ?? "")}`;
      // A classic script runs before the deferred module scripts, so the fake is in place first.
      body = body.toString("utf8").replace("<head>", `<head>\n<script src="${src}"></script>`);
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(path)] ?? "application/octet-stream",
      "content-security-policy": manifest.content_security_policy,
    });
    res.end(body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

/** Run headless Chromium once: `--screenshot=out` or `--dump-dom` (the DOM comes back as the result). */
export function chromium(binary, url, { screenshot = null, dark = false, width = 440, height = 640 } = {}) {
  // A throwaway profile per run: parallel runs never share one, and nothing lands in $HOME.
  const profile = mkdtempSync(join(tmpdir(), "sma-chromium-"));
  const args = [
    "--headless",
    `--user-data-dir=${profile}`,
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-extensions",
    `--window-size=${width},${height}`,
    "--virtual-time-budget=3000",
    "--force-prefers-reduced-motion", // no spinner mid-turn: the same state gives the same PNG
    ...(dark ? ["--force-dark-mode"] : []),
    screenshot ? `--screenshot=${screenshot}` : "--dump-dom",
    url,
  ];
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: 60000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      rmSync(profile, { recursive: true, force: true });
      if (err) reject(new Error(`chromium failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * A page in headless Chromium driven over the DevTools protocol on pipes (fds 3 and 4), for
 * keyboard tests: real key events, unlike events dispatched from the page's own script.
 */
export async function openPage(binary, url, { width = 440, height = 640 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "sma-chromium-"));
  const child = spawn(
    binary,
    ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", `--user-data-dir=${profile}`,
      `--window-size=${width},${height}`, "--force-prefers-reduced-motion", "about:blank"],
    { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] },
  );
  const [toBrowser, fromBrowser] = [child.stdio[3], child.stdio[4]];
  let nextId = 1;
  const waiting = new Map();
  let buffer = "";
  fromBrowser.on("data", (chunk) => {
    buffer += chunk.toString("utf8");
    let end;
    while ((end = buffer.indexOf("\0")) >= 0) {
      const message = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      const pending = waiting.get(message.id);
      if (!pending) continue;
      waiting.delete(message.id);
      if (message.error) pending.reject(new Error(`${pending.method}: ${message.error.message}`));
      else pending.resolve(message.result);
    }
  });
  const send = (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve, reject, method });
      toBrowser.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + "\0");
    });
  const { targetInfos } = await send("Target.getTargets");
  const page = targetInfos.find((t) => t.type === "page");
  const { sessionId } = await send("Target.attachToTarget", { targetId: page.targetId, flatten: true });
  const call = (method, params) => send(method, params, sessionId);
  await call("Page.navigate", { url });

  const evaluate = async (expression) => {
    const { result, exceptionDetails } = await call("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (exceptionDetails) throw new Error(exceptionDetails.exception?.description ?? exceptionDetails.text);
    return result.value;
  };
  const KEYS = { Tab: 9, Enter: 13, Escape: 27, " ": 32 };
  return {
    evaluate,
    async waitFor(expression, what = expression, ms = 10000) {
      const end = Date.now() + ms;
      for (;;) {
        const value = await evaluate(expression).catch(() => null);
        if (value) return value;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async press(key, { shift = false } = {}) {
      const code = key === " " ? "Space" : key;
      const base = { key, code, windowsVirtualKeyCode: KEYS[key], nativeVirtualKeyCode: KEYS[key], modifiers: shift ? 8 : 0 };
      const text = key === "Enter" ? "\r" : key === " " ? " " : undefined;
      await call("Input.dispatchKeyEvent", { type: text ? "keyDown" : "rawKeyDown", ...base, ...(text ? { text } : {}) });
      await call("Input.dispatchKeyEvent", { type: "keyUp", ...base });
    },
    type: (text) => call("Input.insertText", { text }),
    async close() {
      await send("Browser.close").catch(() => {});
      await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
