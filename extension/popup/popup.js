// Toolbar popup: status at a glance and both sides of a pairing. The background does the work;
// this page asks it for an overview, re-renders on its pushes, and sends the buttons' calls.

import { localizeDocument } from "../lib/i18n_dom.js";
import { popupView } from "./view.js";

const api = globalThis.messenger ?? globalThis.browser;
const t = (key, subs) => api.i18n.getMessage(key, subs);
// Pushes from the background drive updates; the poll is only a safety net while the popup is open.
const POLL_MS = 5000;
const PUSH_DEBOUNCE_MS = 100;

let lastRendered = "";
let actionErrors = {}; // account -> message of the last failed button press
let busyKeys = new Set(); // buttons whose call is in flight
let refreshTimer = null;

const $ = (id) => document.getElementById(id);

function fillFacts(dl, rows) {
  for (const row of rows) {
    const dt = document.createElement("dt");
    dt.textContent = row.label;
    const dd = document.createElement("dd");
    dd.textContent = row.value;
    if (row.title) dd.title = row.title;
    dl.append(dt, dd);
  }
}

function button(label, { action, account, pairingId, primary = false }) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.account = account;
  if (pairingId) b.dataset.pairingId = pairingId;
  if (primary) b.classList.add("primary");
  return b;
}

function renderPairing(p, account) {
  const node = $("pairing-template").content.cloneNode(true);
  const article = node.querySelector(".pairing");
  article.dataset.role = p.role;
  article.dataset.state = p.state;
  if (p.outcome) article.dataset.outcome = p.outcome;
  if (p.busy) article.setAttribute("aria-busy", "true");
  node.querySelector(".pairing-title").textContent = p.title;
  node.querySelector(".pairing-text").textContent = p.text;
  if (p.code) {
    node.querySelector(".code-box").hidden = false;
    node.querySelector(".code-label").textContent = p.codeLabel;
    node.querySelector(".code").textContent = p.code;
  }
  const actions = node.querySelector(".pairing-actions");
  for (const a of p.actions) {
    actions.append(button(a.label, { action: a.action, account, pairingId: p.id, primary: a.primary }));
  }
  return node;
}

function renderAccount(a) {
  const node = $("account-template").content.cloneNode(true);
  localizeDocument(node, t);
  node.querySelector(".account-name").textContent = a.account;
  fillFacts(node.querySelector(".facts"), a.rows);
  const errors = node.querySelector(".errors");
  errors.hidden = a.errors.length === 0;
  for (const text of a.errors) {
    const li = document.createElement("li");
    li.textContent = text;
    errors.append(li);
  }
  const pairings = node.querySelector(".pairings");
  for (const p of a.pairings) pairings.append(renderPairing(p, a.account));
  node.querySelector(".join-hint").hidden = !a.needsJoin;
  const pair = node.querySelector('[data-action="pair"]');
  pair.hidden = !a.canPair;
  const sync = node.querySelector('[data-action="sync"]');
  sync.hidden = !a.canSync;
  for (const b of [pair, sync]) b.dataset.account = a.account;
  const actionError = node.querySelector(".action-error");
  actionError.hidden = !actionErrors[a.account];
  actionError.textContent = actionErrors[a.account] ?? "";
  return node;
}

const focusKey = (el) =>
  el?.dataset?.focusKey ?? (el?.dataset?.action ? [el.dataset.action, el.dataset.account, el.dataset.pairingId].join("|") : null);

function render(view) {
  // Re-rendering replaces the buttons: keep the keyboard focus on the same one, and skip no-op renders.
  const snapshot = JSON.stringify([view, actionErrors, [...busyKeys]]);
  if (snapshot === lastRendered) return;
  lastRendered = snapshot;
  const focused = focusKey(document.activeElement);

  const status = $("status");
  status.textContent = view.statusText;
  status.dataset.state = view.status;
  // #host-version holds the bare version: the end-to-end test in Thunderbird reads it.
  $("host-version-line").hidden = !view.hostVersion;
  $("host-version").textContent = view.hostVersion ?? "";
  $("host-missing").hidden = !view.showInstall;
  $("last-error").hidden = !view.lastError;
  $("last-error-message").textContent = view.lastError ?? "";
  $("check-again").hidden = !view.showCheckAgain;
  $("setup").hidden = !view.setupNeeded;
  $("scan").hidden = !view.scanText;
  $("scan").textContent = view.scanText ?? "";
  $("accounts").replaceChildren(...view.accounts.map(renderAccount));

  for (const b of document.querySelectorAll("button[data-action]")) {
    if (busyKeys.has(focusKey(b))) b.disabled = true;
    if (focused && focusKey(b) === focused) b.focus();
  }
}

async function refresh() {
  let overview;
  try {
    overview = await api.runtime.sendMessage({ type: "overview" });
  } catch (err) {
    // The background page failed to load or answer; show that instead of a stale state.
    overview = { status: "unknown", last_error: { message: String(err?.message ?? err) } };
  }
  render(popupView(overview, Date.now(), t));
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, PUSH_DEBOUNCE_MS);
}

const CALLS = {
  pair: (d) => ["pairing.request", { account: d.account }],
  approve: (d) => ["pairing.approve", { account: d.account, pairing_id: d.pairingId }],
  reject: (d) => ["pairing.reject", { account: d.account, pairing_id: d.pairingId }],
  sync: (d) => ["sync", { account: d.account }],
};

async function onAction(el) {
  const { action } = el.dataset;
  if (action === "options") {
    await api.runtime.openOptionsPage();
    return;
  }
  const call = CALLS[action];
  if (!call) return;
  const [method, params] = call(el.dataset);
  const key = focusKey(el);
  busyKeys.add(key);
  el.disabled = true;
  try {
    const reply = await api.runtime.sendMessage({ type: "call", method, params });
    if (reply?.ok) delete actionErrors[params.account];
    else actionErrors[params.account] = t("actionFailed", [reply?.error?.message || reply?.error?.code || "?"]);
  } catch (err) {
    actionErrors[params.account] = t("actionFailed", [String(err?.message ?? err)]);
  } finally {
    busyKeys.delete(key);
  }
  await refresh();
}

localizeDocument(document, t);
document.addEventListener("click", (event) => {
  const el = event.target.closest("button[data-action]");
  if (el && !el.disabled) onAction(el);
});
$("check-again").addEventListener("click", async () => {
  await api.runtime.sendMessage({ type: "reconnect" }).catch(() => {});
  await refresh();
});
api.runtime.onMessage.addListener((message, sender) => {
  if (sender?.id !== api.runtime.id) return undefined;
  if (["status", "event", "scan.progress"].includes(message?.type)) scheduleRefresh();
  return undefined;
});
refresh();
setInterval(refresh, POLL_MS);
