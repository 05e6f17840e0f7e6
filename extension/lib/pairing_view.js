// What to show about pairing for one account, computed from the host's pairing.list: plain data,
// no DOM, shared by the popup and the options page so both say the same thing.
//
// Pairing starts on a paired device ("Add a device": pairing.invite shows a one-time code); the
// new device types that code (pairing.join). Nothing is ever approved: the code is the proof.

export const FINISHED = new Set(["completed", "rejected", "expired", "failed"]);

// [role][state] -> message key explaining where an open or completed pairing stands.
const TEXT_KEYS = {
  inviter: {
    inviting: "pairInviterInviting",
    confirming: "pairInviterConfirming",
    proven: "pairInviterProven",
    sent: "pairInviterSent",
    completed: "pairInviterCompleted",
    rejected: "pairCancelled",
    expired: "pairInviterExpired",
  },
  joiner: {
    joining: "pairJoinerJoining",
    receiving: "pairJoinerReceiving",
    completed: "pairJoinerCompleted",
    rejected: "pairCancelled",
    expired: "pairJoinerExpired",
  },
};
const WRONG_CODE_KEYS = { inviter: "pairInviterWrongCode", joiner: "pairJoinerWrongCode" };
// States where Cancel still means something: before anything secret is on its way.
const CANCELLABLE = { inviter: new Set(["inviting", "confirming"]), joiner: new Set(["joining"]) };

/**
 * A failed key confirmation: the code typed on the new device was not the one shown. The host
 * says so only in the pairing's `reason` (core/pairing.py): "the code did not match ..." on the
 * joiner, "the new device's code did not match" or "... did not prove the code" on the inviter.
 */
export function isWrongCode(p) {
  return p.state === "failed" && /code did not match|did not prove the code/i.test(p.reason ?? "");
}

/** "Works once, within the next 9 min": what is left of the code's ten minutes, rounded down. */
export function expiryText(expiresAtSec, nowMs, t) {
  const minutes = Math.floor((expiresAtSec * 1000 - nowMs) / 60000);
  return minutes >= 1 ? t("codeExpiresMinutes", [String(minutes)]) : t("codeExpiresSoon");
}

function pairingText(p, name, t) {
  if (p.state === "failed") {
    return isWrongCode(p) ? t(WRONG_CODE_KEYS[p.role] ?? "pairJoinerWrongCode") : t("pairFailed", [p.reason || t("noReason")]);
  }
  return t(TEXT_KEYS[p.role]?.[p.state] ?? "pairUnknownState", [name]);
}

function pairingTitle(p, t) {
  if (p.role === "inviter") return p.peer_name ? t("pairTitleInviterNamed", [p.peer_name]) : t("addDeviceButton");
  return p.peer_name ? t("pairTitleJoinerNamed", [p.peer_name]) : t("pairTitleJoiner");
}

export function pairingView(p, nowMs, t) {
  const name = p.peer_name || t("unnamedDevice");
  const finished = FINISHED.has(p.state);
  const showing = p.role === "inviter" && p.state === "inviting" && Boolean(p.code);
  return {
    id: p.pairing_id,
    role: p.role,
    state: p.state,
    title: pairingTitle(p, t),
    text: pairingText(p, name, t),
    code: showing ? p.code : null,
    codeLabel: showing ? t("codeLabel") : null,
    expiry: showing ? expiryText(p.expires_at, nowMs, t) : null,
    busy: !finished && !showing,
    outcome: finished ? (p.state === "completed" ? "success" : "failure") : null,
    wrongCode: isWrongCode(p),
    actions: CANCELLABLE[p.role]?.has(p.state) ? [{ action: "cancel", label: t("cancelButton") }] : [],
  };
}

/**
 * Pairings worth showing: every open one, and per role the newest finished one while it is recent
 * (before its expiry time), so the outcome stays visible for a while. `pairings` is newest first.
 */
export function visiblePairings(pairings, nowMs) {
  const open = pairings.filter((p) => !FINISHED.has(p.state));
  const shown = [...open];
  for (const role of ["inviter", "joiner"]) {
    if (open.some((p) => p.role === role)) continue;
    const last = pairings.find((p) => p.role === role && FINISHED.has(p.state));
    if (last && last.expires_at * 1000 > nowMs) shown.push(last);
  }
  return shown;
}

/**
 * Everything about pairing for one account of the background's overview: the pairing cards, and
 * what the user can start here. A paired device can add a device (unless its invitation is open);
 * a joined, unpaired one can type a code (unless its join is under way).
 */
export function accountPairing(a, nowMs, t) {
  const all = a.pairings ?? [];
  const pairings = visiblePairings(all, nowMs).map((p) => pairingView(p, nowMs, t));
  const open = (role) => all.some((p) => p.role === role && !FINISHED.has(p.state));
  const unsolicited = Number(a.unsolicited_requests ?? 0);
  return {
    pairings,
    canInvite: Boolean(a.joined && a.paired) && !open("inviter"),
    canJoin: Boolean(a.joined && !a.paired) && !open("joiner"),
    unsolicitedNotice: unsolicited > 0 ? t("unsolicitedNotice", [String(unsolicited)]) : null,
  };
}
