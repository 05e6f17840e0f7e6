// What the popup shows, computed from the background's overview: plain data, no DOM, so the
// states can be tested in Node and rendered the same way in the browser.

export const FINISHED = new Set(["completed", "rejected", "expired", "failed"]);

const HOST_STATUS_KEYS = {
  connecting: "statusConnecting",
  connected: "statusConnected",
  host_missing: "statusHostMissing",
  disconnected: "statusDisconnected",
  stopped: "statusStopped",
};

// [role][state] -> message key explaining where the pairing stands.
const PAIRING_TEXT_KEYS = {
  initiator: {
    requested: "pairInitiatorRequested",
    accepted: "pairInitiatorAccepted",
    showing: "pairInitiatorShowing",
    approved: "pairInitiatorApproved",
    completed: "pairInitiatorCompleted",
  },
  responder: {
    requested: "pairResponderRequested",
    accepted: "pairResponderRequested",
    showing: "pairResponderShowing",
    approved: "pairResponderApproved",
    completed: "pairResponderCompleted",
  },
};
const PAIRING_END_KEYS = { rejected: "pairRejected", expired: "pairExpired", failed: "pairFailed" };

/** Buttons per role and state: `approve` and `reject` are the host methods pairing.approve/reject. */
function pairingActions(role, state) {
  if (role === "initiator") {
    if (state === "showing") return [{ action: "approve", labelKey: "confirmButton", primary: true }, { action: "reject", labelKey: "cancelButton" }];
    if (state === "requested" || state === "accepted") return [{ action: "reject", labelKey: "cancelButton" }];
    return [];
  }
  if (state === "showing") return [{ action: "approve", labelKey: "approveButton", primary: true }, { action: "reject", labelKey: "rejectButton" }];
  if (state === "requested" || state === "accepted") return [{ action: "reject", labelKey: "rejectButton" }];
  return [];
}

export function pairingView(p, t) {
  const name = p.peer_name || t("unnamedDevice");
  const finished = FINISHED.has(p.state);
  const textKey = PAIRING_END_KEYS[p.state] ?? PAIRING_TEXT_KEYS[p.role]?.[p.state] ?? "pairUnknownState";
  return {
    id: p.pairing_id,
    role: p.role,
    state: p.state,
    title: p.role === "initiator" ? t("pairTitleInitiator") : t("pairTitleResponder", [name]),
    text: t(textKey, [p.state === "failed" ? p.reason || t("noReason") : name]),
    code: p.sas && (p.state === "showing" || p.state === "approved") ? p.sas : null,
    codeLabel: p.role === "initiator" ? t("codeLabelInitiator") : t("codeLabelResponder", [name]),
    busy: !finished && !(p.state === "showing"),
    outcome: finished ? (p.state === "completed" ? "success" : "failure") : null,
    actions: pairingActions(p.role, p.state).map((a) => ({ ...a, label: t(a.labelKey) })),
  };
}

/**
 * Pairings worth showing: every open one, and per role the newest finished one while it is recent
 * (before its expiry time), so the outcome stays visible for a while. `pairings` is newest first.
 */
export function visiblePairings(pairings, nowMs) {
  const open = pairings.filter((p) => !FINISHED.has(p.state));
  const shown = [...open];
  for (const role of ["initiator", "responder"]) {
    if (open.some((p) => p.role === role)) continue;
    const last = pairings.find((p) => p.role === role && FINISHED.has(p.state));
    if (last && last.expires_at * 1000 > nowMs) shown.push(last);
  }
  return shown;
}

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
  const pairings = visiblePairings(a.pairings ?? [], nowMs).map((p) => pairingView(p, t));
  const initiatorOpen = pairings.some((p) => p.role === "initiator" && !p.outcome);
  const syncError = a.sync?.online === false ? a.sync.error?.message || t("syncOfflineNoDetail") : null;
  const rows = [
    { label: t("joinedLabel"), value: a.joined ? t("yes") : t("no") },
    { label: t("thisDeviceLabel"), value: !a.joined ? t("notAvailable") : a.paired ? t("paired") : t("notPaired") },
    { label: t("devicesLabel"), value: a.joined ? String(a.devices.length) : t("notAvailable"), title: a.devices.map((d) => d.name).join(", ") },
    { label: t("lastSyncLabel"), value: relativeTime(a.sync?.last_sync ?? null, nowMs, t) },
  ];
  const errors = [];
  if (syncError) errors.push(t("syncOffline", [syncError]));
  if (a.error) errors.push(a.error.message || a.error.code);
  for (const alert of a.alerts ?? []) errors.push(t("securityAlert", [alert.message]));
  return {
    account: a.account,
    rows,
    errors,
    pairings,
    needsJoin: !a.joined,
    canPair: a.joined && !a.paired && !initiatorOpen,
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
