// Options page: Thunderbird's IMAP accounts with one "Use with Autocrypt SMA" each (the settings,
// and the saved password after the user's consent or an OAuth2 token, come from Thunderbird), or
// the IMAP details by hand; then join the account's SMA, pair (add a device, or type another device's code), see the devices and
// rename or remove them, scan old mail for keys.

import { localizeDocument } from "../lib/i18n_dom.js";
import { accountPairing } from "../lib/pairing_view.js";
import { renderPairing, keepTypedCodes } from "../lib/pairing_dom.js";
import { pairingCall, joinCall, failureText } from "../lib/pairing_actions.js";
import {
  accountChoices, imapDefaults, readImapForm, defaultDeviceName, deviceRow, PORTS, firstDeviceAnswer, joinOutcome, aloneUnpaired,
} from "./form.js";
import { imapAccountsOf, accountState, setupPlan, setupParams, formFromServer } from "./tb_setup.js";
import { tokenParams } from "../background/oauth_tokens.js";

const api = globalThis.messenger ?? globalThis.browser;
const t = (key, subs) => api.i18n.getMessage(key, subs);
const $ = (id) => document.getElementById(id);
const SCAN_DONE_KEY_PREFIX = "backlogScanned:"; // as background/mail_ingest.js writes it
const OPENPGP_SETTING = "useThunderbirdOpenPGP"; // as background/openpgp_sync.js reads it (absent: on)
const PAIRING_POLL_MS = 5000; // the code's minutes left and a pairing's progress, besides the pushes

let hostAccounts = [];
let tbAccounts = [];
// The autocryptAccounts Experiment (absent where the add-on runs without it: then the form by hand).
const experiment = api.autocryptAccounts ?? null;
let tbServers = new Map(); // Thunderbird account id -> its IMAP server as the Experiment reads it, or null
let openStep = null; // the Thunderbird account whose consent or password step is open
let connected = false;
let pairingCodeError = null; // what is wrong with the typed pairing code, shown under the field
let pairingRendered = ""; // the pairing block's last state, so an unchanged poll redraws nothing
// After joining: this device founded a new identity over an existing one (the account it happened on).
let newIdentityAccount = null;
// Joined as "another device" but nobody is there to pair with: {account, name} (offer to be the first).
let noOtherDevice = null;

/** A host call through the background: `{ok, result}` or `{ok: false, error}`. */
async function call(method, params) {
  try {
    return await api.runtime.sendMessage({ type: "call", method, params });
  } catch (err) {
    return { ok: false, error: { code: "internal", message: String(err?.message ?? err) } };
  }
}

const errorText = (reply) => t("actionFailed", [reply?.error?.message || reply?.error?.code || "?"]);

function say(id, text, kind = "") {
  const el = $(id);
  el.textContent = text ?? "";
  el.className = kind;
}

const selected = () => $("account").value;
const hostAccount = (account) => hostAccounts.find((a) => a.account === account);

// --- host status and accounts ---------------------------------------------------------------

async function refreshStatus() {
  let reply;
  try {
    reply = await api.runtime.sendMessage({ type: "status" });
  } catch {
    reply = { status: "unknown" };
  }
  const statusKeys = { connecting: "statusConnecting", connected: "statusConnected", host_missing: "statusHostMissing", disconnected: "statusDisconnected", stopped: "statusStopped" };
  $("status").textContent = t(statusKeys[reply.status] ?? "statusUnknown");
  $("status").dataset.state = reply.status;
  $("host-missing").hidden = reply.status !== "host_missing";
  const wasConnected = connected;
  connected = reply.status === "connected";
  for (const el of document.querySelectorAll("form button, #scan-start, #found-here, #tb-accounts button")) el.disabled = !connected;
  if (connected && !wasConnected) await refreshAccounts();
}

async function refreshAccounts() {
  const keep = selected();
  tbAccounts = await api.accounts.list(false).catch(() => []);
  const reply = connected ? await call("account.list", {}) : { ok: false };
  hostAccounts = reply.ok ? reply.result.accounts : [];
  await readServers();
  renderTbAccounts();
  const choices = accountChoices(tbAccounts, hostAccounts, t);
  $("no-tb-accounts").hidden = choices.length > 0;
  $("account").replaceChildren(
    ...choices.map((c) => {
      const option = new Option(c.label, c.value);
      return option;
    }),
  );
  const preferred = choices.find((c) => c.value === keep) ?? choices.find((c) => c.joined) ?? choices.find((c) => c.configured) ?? choices[0];
  if (preferred) $("account").value = preferred.value;
  // A refresh after saving or joining keeps that step's result on screen; another account clears it.
  await onAccountChosen({ clearResults: selected() !== keep });
}

async function onAccountChosen({ clearResults = true } = {}) {
  const account = selected();
  if (!account) return;
  const fromTb = hostAccount(account) ? null : formFromServer(tbServerFor(account));
  const d = fromTb ?? imapDefaults(account, hostAccount(account));
  $("imap-host").value = d.host;
  $("imap-host").placeholder = d.placeholder;
  $("imap-port").value = String(d.port);
  $("imap-security").value = d.security;
  $("imap-username").value = d.username;
  $("imap-verify").checked = d.verify_tls;
  $("imap-password").value = "";
  if (clearResults) {
    say("save-result", "");
    say("join-result", "");
    say("pairing-result", "");
    pairingCodeError = null;
    newIdentityAccount = null;
    noOtherDevice = null;
    for (const radio of document.querySelectorAll('input[name="first_device"]')) radio.checked = false;
    $("first-device-error").hidden = true;
  }
  await refreshSections();
}

async function refreshSections() {
  const account = selected();
  const known = hostAccount(account);
  $("join-section").hidden = !known || Boolean(known.device_id);
  $("devices-section").hidden = !known?.device_id;
  $("pairing-section").hidden = !known?.device_id;
  $("scan-section").hidden = !known;
  $("prefer-section").hidden = !known?.device_id;
  if (known && !known.device_id && !$("device-name").value) {
    const info = await api.runtime.getPlatformInfo().catch(() => ({}));
    $("device-name").value = defaultDeviceName(info.os, t);
  }
  if (known?.device_id) await Promise.all([refreshDevices(), refreshPairing(), refreshPrefer()]);
  else noOtherDevice = null;
  renderJoinNotices();
  if (known) await refreshScan();
  await refreshOpenPgp();
}

// --- Thunderbird's accounts: one click, nothing typed --------------------------------------

async function readServers() {
  const list = imapAccountsOf(tbAccounts);
  const read = async ({ accountId }) => {
    try {
      return [accountId, experiment ? await experiment.incomingServer(accountId) : null];
    } catch {
      return [accountId, null];
    }
  };
  tbServers = new Map(await Promise.all(list.map(read)));
  if (!experiment) return;
  const support = await experiment.support?.().catch(() => null);
  const reason = support && !support.features?.server ? support.reason : null;
  $("tb-unsupported").hidden = !reason;
  $("tb-unsupported").textContent = reason ? t("tbUnsupported", [reason]) : "";
}

function tbServerFor(email) {
  const entry = imapAccountsOf(tbAccounts).find((a) => a.email.toLowerCase() === email.toLowerCase());
  return entry ? tbServers.get(entry.accountId) ?? null : null;
}

const TB_STATE_KEYS = { joined: "tbStateJoined", configured: "tbStateConfigured", new: "tbStateNew" };

function element(tag, { className, text, i18n } = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (i18n) el.textContent = t(i18n);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderTbAccounts() {
  const list = imapAccountsOf(tbAccounts);
  $("tb-section").hidden = list.length === 0;
  $("tb-accounts").replaceChildren(...list.map(tbAccountItem));
}

function tbAccountItem(entry) {
  const li = element("li");
  li.dataset.accountId = entry.accountId;
  const server = tbServers.get(entry.accountId) ?? null;
  const state = accountState(entry.email, hostAccounts);
  li.dataset.state = state;
  const who = element("span", { className: "who", text: entry.name.toLowerCase() === entry.email.toLowerCase() ? entry.email : `${entry.name} — ${entry.email}` });
  const row = element("div", { className: "row" });
  row.append(who, element("span", { className: "state", i18n: TB_STATE_KEYS[state] }));
  const button = state === "new" ? cellButton(t("useButton"), () => onUse(entry, server, button), true) : cellButton(t("showButton"), () => showAccount(entry.email));
  button.classList.add(state === "new" ? "use" : "show");
  button.disabled = !connected;
  row.append(button);
  li.append(row);
  if (openStep === entry.accountId && state === "new") li.append(setupStep(entry, server));
  return li;
}

/** The step under an account after "Use with Autocrypt SMA": consent, a typed password, or the form. */
function setupStep(entry, server) {
  const step = element("div", { className: "step" });
  const buttons = element("div", { className: "buttons" });
  const cancel = cellButton(t("cancelButton"), () => closeStep());
  const plan = setupPlan(server);
  if (plan === "saved-password") {
    step.append(element("p", { text: t("consentSavedPassword", [server.host]) }));
    const consent = cellButton(t("consentButton"), () => onConsent(entry, server, consent), true);
    consent.classList.add("consent");
    buttons.append(consent, cancel);
    step.append(buttons);
  } else if (plan === "password") {
    const form = element("form");
    form.className = "password-step";
    const label = element("label", { className: "field" });
    const input = element("input");
    input.type = "password";
    input.autocomplete = "current-password";
    label.append(element("span", { text: t("tbPasswordPrompt", [server.host]) }), input);
    const submit = cellButton(t("useButton"), () => {}, true);
    submit.type = "submit";
    buttons.append(submit, cancel);
    form.append(label, element("p", { className: "muted", i18n: "passwordHint" }), buttons);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const password = input.value;
      input.value = ""; // once to the host, never kept here
      if (!password) {
        say("tb-result", t("errorPassword"), "error");
        return;
      }
      configureFromTb(entry, server, submit, async () => ({ password }));
    });
    step.append(form);
  } else {
    step.append(element("p", { i18n: "tbManualNeeded" }));
    buttons.append(cellButton(t("manualSummary"), () => openManual(entry.email), true), cancel);
    step.append(buttons);
  }
  return step;
}

function onUse(entry, server, button) {
  say("tb-result", "");
  if (setupPlan(server) === "oauth2") {
    // Nothing to ask: Thunderbird signs in (its own window if it must) and keeps supplying tokens.
    configureFromTb(entry, server, button, () => experiment.accessToken(entry.accountId));
    return;
  }
  openStep = entry.accountId;
  renderTbAccounts();
  $("tb-accounts").querySelector(`li[data-account-id="${CSS.escape(entry.accountId)}"] .step input, li[data-account-id="${CSS.escape(entry.accountId)}"] .step button`)?.focus();
}

function onConsent(entry, server, button) {
  // Asked first, while this click is being handled: the Experiment hands the saved password out
  // only from a user's input (its schema's requireUserInput).
  const reading = experiment.savedPassword(entry.accountId);
  button.disabled = true;
  reading.then(
    ({ password }) => {
      if (password) {
        configureFromTb(entry, server, button, async () => ({ password }));
        return;
      }
      // Counted while the primary password was locked, but none for this user: ask for it instead.
      tbServers.set(entry.accountId, { ...server, savedPassword: false });
      renderTbAccounts();
      say("tb-result", t("tbNoSavedPassword"), "error");
    },
    (err) => {
      button.disabled = false;
      say("tb-result", t("actionFailed", [String(err?.message ?? err)]), "error");
    },
  );
}

/** account.configure from Thunderbird's settings and `secret()`; then the join step for that address. */
async function configureFromTb(entry, server, button, secret) {
  button.disabled = true;
  say("tb-result", t(server.auth === "oauth2" ? "tbSigningIn" : "saving"));
  let params;
  let given;
  try {
    given = await secret();
    params = setupParams(entry.email, server, given);
  } catch (err) {
    button.disabled = false;
    say("tb-result", t("actionFailed", [String(err?.message ?? err)]), "error");
    return;
  }
  const reply = await call("account.configure", params);
  params = null;
  button.disabled = false;
  if (!reply.ok) {
    say("tb-result", errorText(reply), "error");
    return;
  }
  // account.configure carries no expiry: hand the same token over with it, so the host asks for a
  // fresh one before this one runs out (instead of only after the server refused it).
  if (given.token && given.expiresIn) await call("account.token", tokenParams(entry.email, given));
  given = null;
  openStep = null;
  say("tb-result", t("tbSetUp", [entry.email]), "ok");
  $("account").value = entry.email;
  await refreshAccounts();
  if (!$("join-section").hidden) $("device-name").focus();
}

function closeStep() {
  openStep = null;
  renderTbAccounts();
}

async function showAccount(email) {
  $("account").value = email;
  await onAccountChosen();
  $("account").scrollIntoView?.({ block: "start" });
}

async function openManual(email) {
  await showAccount(email);
  $("manual-settings").open = true;
  $("imap-host").focus();
}

// --- IMAP settings and joining --------------------------------------------------------------

async function onSave(event) {
  event.preventDefault();
  const account = selected();
  const form = {
    host: $("imap-host").value,
    port: $("imap-port").value,
    security: $("imap-security").value,
    username: $("imap-username").value,
    verify_tls: $("imap-verify").checked,
    password: $("imap-password").value,
  };
  const checked = readImapForm(account, form);
  if (!checked.ok) {
    say("save-result", t(checked.errorKey), "error");
    return;
  }
  // The password goes to the host once and is not kept here: not in storage, not in the field.
  $("imap-password").value = "";
  say("save-result", t("saving"));
  $("save").disabled = true;
  const reply = await call("account.configure", checked.params);
  $("save").disabled = false;
  if (!reply.ok) {
    say("save-result", errorText(reply), "error");
    return;
  }
  say("save-result", t("saved"), "ok");
  await refreshAccounts();
}

async function onJoin(event) {
  event.preventDefault();
  const name = $("device-name").value.trim();
  if (!name) return;
  // The user decides whether this device founds the account's identity; nothing is assumed.
  const firstDevice = firstDeviceAnswer(document.querySelector('input[name="first_device"]:checked')?.value);
  if (firstDevice === null) {
    $("first-device-error").hidden = false;
    document.querySelector('input[name="first_device"]').focus();
    return;
  }
  await join($("join"), name, firstDevice);
}

/** `sma.join` with the user's answer, then what it means in words (and the notices below). */
async function join(button, name, firstDevice) {
  const account = selected();
  button.disabled = true;
  say("join-result", t("joining"));
  const reply = await call("sma.join", { account, device_name: name, first_device: firstDevice });
  button.disabled = false;
  if (!reply.ok) {
    say("join-result", errorText(reply), "error");
    return;
  }
  const outcome = joinOutcome(firstDevice, reply.result);
  say("join-result", t(outcome.messageKey), "ok");
  newIdentityAccount = outcome.notice === "new-identity" ? account : null;
  noOtherDevice = outcome.notice === "no-other-device" ? { account, name } : null;
  renderJoinNotices();
  await refreshAccounts();
}

/** "This is my first device", after joining as another device found nobody: join again, founding. */
async function onFoundHere() {
  if (!noOtherDevice || noOtherDevice.account !== selected()) return;
  await join($("found-here"), noOtherDevice.name, true);
  // The button hid with its notice: keep keyboard focus on the page, at what happened.
  if ($("no-other-device").hidden) $("join-result").focus();
}

function renderJoinNotices() {
  const account = selected();
  $("new-identity").hidden = newIdentityAccount !== account;
  $("no-other-device").hidden = noOtherDevice?.account !== account;
}

// --- pairing ------------------------------------------------------------------------------

/** The pairing block of the chosen account, from the background's overview (as the popup has it). */
async function refreshPairing() {
  const account = selected();
  if (!hostAccount(account)?.device_id) return;
  const overview = await api.runtime.sendMessage({ type: "overview" }).catch(() => null);
  const entry = overview?.accounts?.find((a) => a.account === account);
  if (!entry || account !== selected()) return;
  const view = accountPairing(entry, Date.now(), t);
  const snapshot = JSON.stringify([account, view, pairingCodeError]);
  if (snapshot === pairingRendered) return;
  pairingRendered = snapshot;
  const root = $("pairing");
  const focused = root.contains(document.activeElement) ? document.activeElement.dataset.focusKey ?? document.activeElement.dataset.action : null;
  const restoreTyped = keepTypedCodes(root);
  root.replaceChildren(renderPairing(document, view, { account, t, idPrefix: "options", error: pairingCodeError }));
  restoreTyped();
  if (focused) {
    const key = CSS.escape(focused);
    root.querySelector(`button[data-focus-key="${key}"], button[data-action="${key}"]`)?.focus();
  }
}

async function pairingAction(button, [method, params]) {
  button.disabled = true;
  say("pairing-result", "");
  const reply = await call(method, params);
  button.disabled = false;
  pairingCodeError = null;
  if (!reply.ok) {
    if (method === "pairing.join") pairingCodeError = failureText(method, reply.error, t);
    else say("pairing-result", failureText(method, reply.error, t), "error");
  }
  pairingRendered = "";
  await refreshPairing();
}

function onPairingClick(event) {
  const button = event.target.closest("button[data-action]");
  const pairing = button && !button.disabled && pairingCall(button.dataset.action, button.dataset);
  if (pairing) pairingAction(button, pairing);
}

async function onPairingSubmit(event) {
  const form = event.target.closest('form[data-action="join"]');
  if (!form) return;
  event.preventDefault();
  const submit = form.querySelector('button[type="submit"]');
  if (submit.disabled) return;
  const checked = joinCall(form.dataset.account, form.querySelector("input.code-input").value);
  if (!checked.ok) {
    pairingCodeError = t(checked.errorKey);
    pairingRendered = "";
    await refreshPairing();
    $("pairing").querySelector("input.code-input")?.focus();
    return;
  }
  await pairingAction(submit, checked.call);
}

// --- devices ------------------------------------------------------------------------------

function cellButton(label, onClick, primary = false) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (primary) b.className = "primary";
  b.addEventListener("click", onClick);
  return b;
}

async function refreshDevices() {
  const account = selected();
  const reply = await call("devices.list", { account });
  const body = $("devices").tBodies[0];
  if (!reply.ok) {
    body.replaceChildren();
    say("devices-result", errorText(reply), "error");
    return;
  }
  body.replaceChildren(...reply.result.devices.map((d) => deviceTr(account, deviceRow(d, t))));
  // The device list is the truth once it comes: the offer to be the first device stands only while
  // this device is unpaired and alone (also when the page opens later, not only right after joining).
  const self = reply.result.devices.find((d) => d.self);
  noOtherDevice = account === selected() && aloneUnpaired(reply.result.devices) ? { account, name: self.name } : null;
  renderJoinNotices();
}

function deviceTr(account, row) {
  const tr = document.createElement("tr");
  tr.dataset.deviceId = row.id;
  const [name, status, seen, last] = [0, 1, 2, 3].map(() => document.createElement("td"));
  name.textContent = row.name;
  status.textContent = row.status;
  seen.textContent = row.lastSeen;
  const actions = document.createElement("div"); // a flex box inside the cell keeps the table's rows intact
  actions.className = "actions";
  last.append(actions);
  const normal = () =>
    actions.replaceChildren(
      cellButton(t("renameButton"), () => startRename(account, row, name, actions)),
      row.self
        ? cellButton(t("leaveButton"), () => confirmThen(actions, t("confirmLeave"), () => leave(account), normal))
        : cellButton(t("removeButton"), () => confirmThen(actions, t("confirmRemove", [row.rawName]), () => remove(account, row), normal)),
    );
  normal();
  tr.append(name, status, seen, last);
  return tr;
}

function startRename(account, row, nameCell, actions) {
  const input = document.createElement("input");
  input.value = row.rawName;
  input.maxLength = 64;
  input.setAttribute("aria-label", t("deviceNameLabel"));
  const save = async () => {
    const name = input.value.trim();
    if (!name) return;
    const reply = await call("device.rename", { account, device_id: row.id, name });
    say("devices-result", reply.ok ? t("renamed") : errorText(reply), reply.ok ? "ok" : "error");
    await refreshDevices();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") save();
    if (event.key === "Escape") refreshDevices();
  });
  nameCell.replaceChildren(input);
  actions.replaceChildren(cellButton(t("saveNameButton"), save, true), cellButton(t("cancelButton"), () => refreshDevices()));
  input.focus();
  input.select();
}

/** A destructive action asks once more, in place, with the safe choice focused. */
function confirmThen(actions, question, onYes, onNo) {
  const text = document.createElement("span");
  text.textContent = question;
  const no = cellButton(t("cancelButton"), onNo);
  actions.replaceChildren(text, cellButton(t("yesRemoveButton"), onYes), no);
  no.focus();
}

async function remove(account, row) {
  say("devices-result", t("removing"));
  const reply = await call("device.remove", { account, device_id: row.id });
  say("devices-result", reply.ok ? t("removed", [row.rawName]) : errorText(reply), reply.ok ? "ok" : "error");
  await refreshDevices();
}

async function leave(account) {
  const reply = await call("sma.leave", { account });
  say("devices-result", reply.ok ? t("left") : errorText(reply), reply.ok ? "ok" : "error");
  await refreshAccounts();
}

// --- backlog scan ---------------------------------------------------------------------------

function renderScan(scan, lastDone) {
  const running = Boolean(scan?.running) && scan.account === selected();
  $("scan-start").hidden = running;
  $("scan-cancel").hidden = !running;
  $("scan-progress").hidden = !running;
  if (running) {
    $("scan-progress").max = scan.limit;
    $("scan-progress").value = scan.scanned;
    say("scan-result", t("scanProgress", [String(scan.scanned), String(scan.limit), String(scan.updated)]));
  } else if (scan?.account === selected() && scan.finished_at) {
    const key = scan.error ? "scanFailed" : scan.cancelled ? "scanCancelled" : "scanDone";
    const failed = scan.failed && !scan.error ? ` ${t("scanSomeFailed", [String(scan.failed)])}` : "";
    say("scan-result", t(key, [String(scan.scanned), String(scan.updated), scan.error?.message ?? ""]) + failed, scan.error ? "error" : "ok");
  } else {
    say("scan-result", lastDone ? t("scanLastDone", [new Date(lastDone).toLocaleString()]) : "");
  }
  $("scan-start").textContent = lastDone ? t("scanAgainButton") : t("scanButton");
}

async function refreshScan() {
  const key = SCAN_DONE_KEY_PREFIX + selected();
  const [scan, stored] = await Promise.all([
    api.runtime.sendMessage({ type: "scan.status" }).catch(() => null),
    api.storage.local.get(key).catch(() => ({})),
  ]);
  renderScan(scan, stored?.[key]);
}

// --- prefer-encrypt (one setting for all devices of the account) ----------------------------

async function refreshPrefer() {
  const account = selected();
  const reply = await call("account.key", { account });
  if (account !== selected()) return;
  const box = $("prefer-mutual");
  box.disabled = !reply.ok;
  if (!reply.ok) {
    // Before this device holds the account key (not paired yet) there is nothing to set.
    say("prefer-result", reply.error?.code === "not_joined" ? t("preferNotYet") : errorText(reply), reply.error?.code === "not_joined" ? "" : "error");
    return;
  }
  box.checked = reply.result.prefer_encrypt === "mutual";
  say("prefer-result", "");
}

async function onPreferChanged() {
  const box = $("prefer-mutual");
  box.disabled = true;
  const reply = await call("account.set_prefer_encrypt", { account: selected(), value: box.checked ? "mutual" : "nopreference" });
  box.disabled = false;
  if (!reply.ok) {
    say("prefer-result", errorText(reply), "error");
    await refreshPrefer();
    return;
  }
  say("prefer-result", t(reply.result.prefer_encrypt === "mutual" ? "preferSavedMutual" : "preferSavedNone"), "ok");
}

// --- Thunderbird's OpenPGP ------------------------------------------------------------------

const OPENPGP_STATUS_KEYS = {
  disabled: "openpgpStatusDisabled",
  not_paired: "openpgpStatusNotPaired",
  no_identity: "openpgpStatusNoIdentity",
  unsupported: "openpgpStatusUnsupported",
  error: "openpgpStatusError",
};

async function refreshOpenPgp() {
  const stored = await api.storage.local.get(OPENPGP_SETTING).catch(() => ({}));
  $("openpgp-enabled").checked = stored?.[OPENPGP_SETTING] !== false;
  const status = await api.runtime.sendMessage({ type: "openpgp.status", account: selected() }).catch(() => null);
  if (!status) say("openpgp-status", t("openpgpStatusPending"));
  else if (status.state === "ok") say("openpgp-status", t("openpgpStatusOk", [status.fingerprint ?? "?", String(status.imported ?? 0)]), "ok");
  else say("openpgp-status", t(OPENPGP_STATUS_KEYS[status.state] ?? "openpgpStatusPending", [status.message ?? ""]), status.state === "error" ? "error" : "");
}

// --- wiring ---------------------------------------------------------------------------------

localizeDocument(document, t);
$("account").addEventListener("change", () => onAccountChosen());
$("imap-security").addEventListener("change", () => {
  // Follow the usual port when the user switches between TLS and STARTTLS, unless they typed another.
  if (Object.values(PORTS).includes(Number($("imap-port").value))) $("imap-port").value = String(PORTS[$("imap-security").value]);
});
$("imap-form").addEventListener("submit", onSave);
$("join-form").addEventListener("submit", onJoin);
$("first-device").addEventListener("change", () => {
  $("first-device-error").hidden = true;
});
$("found-here").addEventListener("click", onFoundHere);
$("pairing").addEventListener("click", onPairingClick);
$("pairing").addEventListener("submit", onPairingSubmit);
setInterval(() => {
  if (!$("pairing-section").hidden) refreshPairing();
}, PAIRING_POLL_MS);
$("check-again").addEventListener("click", async () => {
  await api.runtime.sendMessage({ type: "reconnect" }).catch(() => {});
  await refreshStatus();
});
$("scan-start").addEventListener("click", async () => {
  const scan = await api.runtime.sendMessage({ type: "scan.start", account: selected() }).catch(() => null);
  renderScan(scan, null);
});
$("scan-cancel").addEventListener("click", () => api.runtime.sendMessage({ type: "scan.cancel" }).catch(() => {}));
$("prefer-mutual").addEventListener("change", onPreferChanged);
$("openpgp-enabled").addEventListener("change", async () => {
  await api.storage.local.set({ [OPENPGP_SETTING]: $("openpgp-enabled").checked });
  await refreshOpenPgp();
});
api.runtime.onMessage.addListener((message, sender) => {
  if (sender?.id !== api.runtime.id) return undefined;
  if (message?.type === "status") refreshStatus();
  if (message?.type === "scan.progress") refreshScan();
  if (message?.type === "event" && message.data?.account === selected()) {
    if (["devices.changed", "pairing.completed"].includes(message.event)) refreshDevices();
    if (message.event.startsWith("pairing.")) refreshPairing();
    if (message.event === "device.removed") refreshAccounts();
    if (["pairing.completed", "account.key_rolled", "peers.updated"].includes(message.event)) refreshOpenPgp();
    if (["pairing.completed", "account.prefer_encrypt"].includes(message.event)) refreshPrefer();
  }
  return undefined;
});
refreshStatus().then(() => (connected ? undefined : refreshAccounts()));
