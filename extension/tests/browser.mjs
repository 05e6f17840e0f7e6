// Renders the add-on's real pages in headless Chromium against tests/page_fake.js: a loopback
// HTTP server serves the extension folder (with the manifest's CSP as a header) and injects the fake.

import { createServer } from "node:http";
import { readFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { execFile } from "node:child_process";
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
