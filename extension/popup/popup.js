// Toolbar popup: shows whether the native host is installed and reachable, and its version.

import { localizeDocument } from "../lib/i18n_dom.js";

const api = globalThis.messenger ?? globalThis.browser;
const msg = (key) => api.i18n.getMessage(key);
// The popup lives only while open, so polling the background is simpler than a push channel.
const REFRESH_MS = 1000;

const STATUS_MESSAGE_KEYS = {
  connecting: "statusConnecting",
  connected: "statusConnected",
  host_missing: "statusHostMissing",
  disconnected: "statusDisconnected",
  stopped: "statusStopped",
};

function render(reply) {
  const status = reply?.status ?? "unknown";
  const statusEl = document.getElementById("status");
  statusEl.textContent = msg(STATUS_MESSAGE_KEYS[status] ?? "statusUnknown");
  statusEl.dataset.state = status;

  document.getElementById("host-missing").hidden = status !== "host_missing";
  document.getElementById("host-version").textContent = reply?.host_version ?? msg("notAvailable");
  document.getElementById("protocol-version").textContent = reply?.protocol_version ?? msg("notAvailable");

  // The port's own wording already says "not found" when the host is missing; the hint covers it.
  const lastError = status !== "connected" && status !== "host_missing" ? reply?.last_error : null;
  document.getElementById("last-error").hidden = !lastError;
  document.getElementById("last-error-message").textContent = lastError?.message ?? "";

  document.getElementById("check-again").hidden = status === "connected" || status === "connecting";
}

async function ask(type) {
  try {
    render(await api.runtime.sendMessage({ type }));
  } catch (err) {
    // The background page failed to load or answer; show that instead of a stale state.
    render({ status: "unknown", last_error: { message: String(err?.message ?? err) } });
  }
}

localizeDocument(document, msg);
document.getElementById("check-again").addEventListener("click", () => ask("reconnect"));
ask("status");
setInterval(() => ask("status"), REFRESH_MS);
