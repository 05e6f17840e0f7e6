// The host calls behind the pairing controls, and how their failures read. Shared by the popup and
// the options page; the pages send them through the background ({type: "call", method, params}).

import { readCode } from "./pairing_code.js";

/** [method, params] for a pairing button (its data-action and dataset), or null. */
export function pairingCall(action, { account, pairingId } = {}) {
  if (action === "invite") return ["pairing.invite", { account }];
  if (action === "cancel") return ["pairing.cancel", { account, pairing_id: pairingId }];
  return null;
}

/** The typed code as a pairing.join call, or `{ok: false, errorKey}` without asking the host. */
export function joinCall(account, typed) {
  const code = readCode(typed);
  if (!code.ok) return code;
  return { ok: true, call: ["pairing.join", { account, code: code.code }] };
}

/**
 * A failed call, in words. pairing.join answers invalid_params when the code's first digits name
 * no device of the account (a typo there, or the other device is not announced yet).
 */
export function failureText(method, error, t) {
  if (method === "pairing.join" && error?.code === "invalid_params") return t("joinCodeUnknown");
  return t("actionFailed", [error?.message || error?.code || "?"]);
}
