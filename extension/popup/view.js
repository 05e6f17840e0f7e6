// What the popup shows, computed from the background's overview: plain data, no DOM, so the
// states can be tested in Node and rendered the same way in the browser. Pairing's part of it is
// lib/pairing_view.js, which the options page shares.

import { accountPairing } from "../lib/pairing_view.js";

const HOST_STATUS_KEYS = {
  connecting: "statusConnecting",
  connected: "statusConnected",
  host_missing: "statusHostMissing",
  disconnected: "statusDisconnected",
  stopped: "statusStopped",
};

export function relativeTime(ms, nowMs, t) {
  if (ms == null) return t("notAvailable");
  const minutes = Math.floor((nowMs - ms) / 60000);
  if (minutes < 1) return t("timeJustNow");
  if (minutes < 60) return t("timeMinutesAgo", [String(minutes)]);
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return t("timeHoursAgo", [String(hours)]);
  return t("timeDaysAgo", [String(Math.floor(hours / 24))]);
}

function accountView(a, nowMs, t) {
  const pairing = accountPairing(a, nowMs, t);
  // Waiting for a token from Thunderbird (OAuth2) is not "cannot reach the server": say what it is.
  // Held: Thunderbird's sign-in gave no token and is not retried until the user presses the button.
  const signInHeld = Boolean(a.sign_in_held);
  const waitingForToken = (a.sync?.online === false && a.sync?.waiting === "token") || signInHeld;
  const syncError = a.sync?.online === false && !waitingForToken ? a.sync.error?.message || t("syncOfflineNoDetail") : null;
  const rows = [
    { label: t("joinedLabel"), value: a.joined ? t("yes") : t("no") },
    { label: t("thisDeviceLabel"), value: !a.joined ? t("notAvailable") : a.paired ? t("paired") : t("notPaired") },
    { label: t("devicesLabel"), value: a.joined ? String(a.devices.length) : t("notAvailable"), title: a.devices.map((d) => d.name).join(", ") },
    { label: t("lastSyncLabel"), value: relativeTime(a.sync?.last_sync ?? null, nowMs, t) },
  ];
  const errors = [];
  if (syncError) errors.push(t("syncOffline", [syncError]));
  if (waitingForToken && a.sync?.error?.message) errors.push(a.sync.error.message);
  if (waitingForToken && a.token_error) errors.push(t("tokenUnavailable", [a.token_error]));
  if (a.error) errors.push(a.error.message || a.error.code);
  for (const alert of a.alerts ?? []) errors.push(t("securityAlert", [alert.message]));
  return {
    account: a.account,
    rows,
    errors,
    waiting: waitingForToken ? t("waitingForSignIn") : null,
    canSignInAgain: signInHeld,
    ...pairing,
    needsJoin: !a.joined,
    canSync: a.joined,
  };
}

/** The whole popup: the host line, then one card per account (or a set-up prompt). */
export function popupView(overview, nowMs, t) {
  const status = overview?.status ?? "unknown";
  const connected = status === "connected";
  const accounts = connected && Array.isArray(overview.accounts) ? overview.accounts.map((a) => accountView(a, nowMs, t)) : [];
  const lastError = !connected && status !== "host_missing" ? overview?.last_error?.message ?? null : null;
  const scan = overview?.scan;
  return {
    status,
    statusText: t(HOST_STATUS_KEYS[status] ?? "statusUnknown"),
    hostVersion: overview?.host_version ?? null,
    showInstall: status === "host_missing",
    showCheckAgain: !connected && status !== "connecting",
    lastError: lastError ?? overview?.error?.message ?? null,
    setupNeeded: connected && Array.isArray(overview.accounts) && overview.accounts.length === 0,
    accounts,
    scanText: scan?.running ? t("scanRunning", [String(scan.scanned), String(scan.limit)]) : null,
  };
}
