// Toolbar popup: status at a glance and both sides of a pairing ("Add a device" shows a code on a
// paired device; the new one types it). The background does the work; this page asks it for an
// overview, re-renders on its pushes, and sends the buttons' calls.

import { localizeDocument } from "../lib/i18n_dom.js";
import { renderPairing, keepTypedCodes } from "../lib/pairing_dom.js";
import { pairingCall, joinCall, failureText } from "../lib/pairing_actions.js";
import { popupView } from "./view.js";

const api = globalThis.messenger ?? globalThis.browser;
const t = (key, subs) => api.i18n.getMessage(key, subs);
// Pushes from the background drive updates; the poll is only a safety net while the popup is open.
const POLL_MS = 5000;
const PUSH_DEBOUNCE_MS = 100;

let lastRendered = "";
let actionErrors = {}; // account -> message of the last failed button press
let codeErrors = {}; // account -> what is wrong with the typed pairing code
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

function renderAccount(a, index) {
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
  const waiting = node.querySelector(".waiting");
  waiting.hidden = !a.waiting;
  waiting.textContent = a.waiting ?? "";
  node.querySelector(".pairings").replaceWith(
    renderPairing(document, a, { account: a.account, t, idPrefix: `account-${index}`, error: codeErrors[a.account] }),
  );
  node.querySelector(".join-hint").hidden = !a.needsJoin;
  const signIn = node.querySelector('[data-action="sign-in-again"]');
  signIn.hidden = !a.canSignInAgain;
  signIn.dataset.account = a.account;
  const sync = node.querySelector('[data-action="sync"]');
  sync.hidden = !a.canSync;
  sync.dataset.account = a.account;
  const actionError = node.querySelector(".action-error");
  actionError.hidden = !actionErrors[a.account];
  actionError.textContent = actionErrors[a.account] ?? "";
  return node;
}

const focusKey = (el) =>
  el?.dataset?.focusKey ?? (el?.dataset?.action ? [el.dataset.action, el.dataset.account, el.dataset.pairingId].join("|") : null);

function render(view) {
  // Re-rendering replaces the buttons: keep the keyboard focus on the same one, and skip no-op renders.
  const snapshot = JSON.stringify([view, actionErrors, codeErrors, [...busyKeys]]);
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
  const restoreTyped = keepTypedCodes($("accounts"));
  $("accounts").replaceChildren(...view.accounts.map(renderAccount));
  restoreTyped();

  for (const b of document.querySelectorAll("button[data-action], button[data-focus-key]")) {
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

/** [method, params] for a button, or null. */
function callFor(el) {
  if (el.dataset.action === "sync") return ["sync", { account: el.dataset.account }];
  return pairingCall(el.dataset.action, el.dataset);
}

/** The background's own requests (not host calls) behind a button, by its data-action. */
const BACKGROUND_ACTIONS = { "sign-in-again": "sign_in_again" };

/**
 * Send one request for `button` (a host call, or with `type` one the background answers itself),
 * which stays disabled meanwhile; `errors` gets the failure.
 */
async function send(button, [method, params], errors, type = "call") {
  const key = focusKey(button);
  busyKeys.add(key);
  button.disabled = true;
  let failure = null;
  try {
    const message = type === "call" ? { type, method, params } : { type, ...params };
    const reply = await api.runtime.sendMessage(message);
    if (!reply?.ok) failure = failureText(method, reply?.error, t);
  } catch (err) {
    failure = failureText(method, { message: String(err?.message ?? err) }, t);
  } finally {
    busyKeys.delete(key);
  }
  delete actionErrors[params.account];
  delete codeErrors[params.account];
  if (failure) errors[params.account] = failure;
  await refresh();
}

async function onAction(el) {
  if (el.dataset.action === "options") {
    await api.runtime.openOptionsPage();
    return;
  }
  const type = BACKGROUND_ACTIONS[el.dataset.action];
  if (type) {
    await send(el, [type, { account: el.dataset.account }], actionErrors, type);
    return;
  }
  const call = callFor(el);
  if (call) await send(el, call, actionErrors);
}

/** The new device's code field: checked here first, so a typo never reaches the host. */
async function onJoin(form) {
  const { account } = form.dataset;
  const input = form.querySelector("input.code-input");
  const submit = form.querySelector('button[type="submit"]');
  const checked = joinCall(account, input.value);
  if (!checked.ok) {
    codeErrors[account] = t(checked.errorKey);
    lastRendered = "";
    await refresh();
    document.querySelector(`input.code-input[data-account="${CSS.escape(account)}"]`)?.focus();
    return;
  }
  await send(submit, checked.call, codeErrors);
}

localizeDocument(document, t);
document.addEventListener("click", (event) => {
  const el = event.target.closest("button[data-action]");
  if (el && !el.disabled) onAction(el);
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest('form[data-action="join"]');
  if (!form) return;
  event.preventDefault();
  if (!form.querySelector('button[type="submit"]').disabled) onJoin(form);
});
$("check-again").addEventListener("click", async () => {
  await api.runtime.sendMessage({ type: "reconnect" }).catch(() => {});
  await refresh();
});
api.runtime.onMessage.addListener((message, sender) => {
  if (sender?.id !== api.runtime.id) return undefined;
  if (["status", "event", "scan.progress", "signin.changed"].includes(message?.type)) scheduleRefresh();
  return undefined;
});
refresh();
setInterval(refresh, POLL_MS);
