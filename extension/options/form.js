// The options page's logic without the DOM: account choices, IMAP defaults, form checks, device rows.

// Account types that have an IMAP-reachable mailbox worth offering (Local Folders, feeds, news do not).
const MAIL_TYPES = new Set(["imap", "pop3"]);
const HOST_RE = /^[^\s/@]+$/;
export const PORTS = { tls: 993, starttls: 143, none: 143 };

/**
 * One choice per e-mail address: Thunderbird's mail accounts' identities, then accounts the host
 * knows that no Thunderbird account matches (set up earlier, or by hand).
 * @returns {{value: string, label: string, configured: boolean, joined: boolean}[]}
 */
export function accountChoices(tbAccounts, hostAccounts, t) {
  const host = new Map((hostAccounts ?? []).map((a) => [a.account.toLowerCase(), a]));
  const choices = [];
  const seen = new Set();
  const add = (email, name) => {
    const key = email.toLowerCase();
    if (seen.has(key)) return;
    seen.add(key);
    const known = host.get(key);
    const base = name && name.toLowerCase() !== key ? `${name} — ${email}` : email;
    const mark = known ? (known.device_id ? t("accountJoinedMark") : t("accountConfiguredMark")) : "";
    choices.push({ value: known?.account ?? email, label: mark ? `${base} ${mark}` : base, configured: Boolean(known), joined: Boolean(known?.device_id) });
  };
  for (const account of tbAccounts ?? []) {
    if (!MAIL_TYPES.has(account.type)) continue;
    for (const identity of account.identities ?? []) if (identity.email) add(identity.email, account.name);
  }
  for (const a of hostAccounts ?? []) add(a.account, null);
  return choices;
}

/**
 * What the IMAP fields start with. Thunderbird's WebExtension API does not expose an account's
 * server settings, so for a new account only the username (the address) and the usual TLS port are
 * filled in; the host field suggests imap.<domain> as a placeholder, not a value.
 */
export function imapDefaults(email, hostAccount) {
  const imap = hostAccount?.imap;
  if (imap) {
    return { host: imap.host, port: imap.port, security: imap.security, username: imap.username, verify_tls: imap.verify_tls !== false, placeholder: "" };
  }
  const domain = email.split("@")[1] ?? "";
  return { host: "", port: PORTS.tls, security: "tls", username: email, verify_tls: true, placeholder: domain ? `imap.${domain}` : "" };
}

/** Check the form; `{ok: true, params}` for account.configure, or `{ok: false, errorKey}`. */
export function readImapForm(account, { host, port, security, username, verify_tls: verifyTls, password }) {
  const h = String(host ?? "").trim();
  const p = Number(port);
  if (!h || !HOST_RE.test(h)) return { ok: false, errorKey: "errorHost" };
  if (!Number.isInteger(p) || p < 1 || p > 65535) return { ok: false, errorKey: "errorPort" };
  if (!(security in PORTS)) return { ok: false, errorKey: "errorSecurity" };
  const u = String(username ?? "").trim();
  if (!u) return { ok: false, errorKey: "errorUsername" };
  if (!password) return { ok: false, errorKey: "errorPassword" };
  return {
    ok: true,
    params: { account, imap: { host: h, port: p, security, username: u, verify_tls: Boolean(verifyTls) }, password },
  };
}

const OS_NAMES = { linux: "Linux", win: "Windows", mac: "macOS", openbsd: "OpenBSD", android: "Android" };

export function defaultDeviceName(os, t) {
  return t("defaultDeviceName", [OS_NAMES[os] ?? os ?? "?"]);
}

export function deviceRow(device, t, formatDate = (s) => new Date(s * 1000).toLocaleString()) {
  const status = [device.paired ? t("paired") : t("deviceNotPaired")];
  if (device.stale) status.push(t("deviceStale"));
  // A member whose announcement is missing (the server deleted or withholds it): listed so that
  // it can still be removed; its last_seen is only when it was added.
  const unannounced = device.announced === false;
  if (unannounced) status.push(t("deviceUnannounced"));
  return {
    id: device.device_id,
    name: device.self ? t("thisDeviceName", [device.name]) : device.name,
    rawName: device.name,
    status: status.join(", "),
    lastSeen: unannounced ? "" : formatDate(device.last_seen),
    self: device.self,
  };
}

/** The answer to "Is this the first device you set up for this account?": true, false, or null (none yet). */
export function firstDeviceAnswer(value) {
  if (value === "yes") return true;
  if (value === "no") return false;
  return null;
}

/**
 * What the page says after `sma.join`, from the user's answer and the host's result:
 * `messageKey` for the one-line result, `notice` "new-identity" (the user said first device, but the
 * SMA already held other devices or an earlier setup: this device replaced it, say so plainly),
 * "no-other-device" (the user said another device, but none is there: offer to be the first), or null.
 */
export function joinOutcome(firstDevice, result) {
  if (result.first_device) {
    const over = firstDevice === true && result.identity_found;
    return { messageKey: over ? "joinedNewIdentity" : "joinedFirst", notice: over ? "new-identity" : null };
  }
  if (firstDevice === false && !result.identity_found) return { messageKey: "joinedWaiting", notice: "no-other-device" };
  return { messageKey: "joinedPairNext", notice: null };
}

/** Joined, not paired, and no other device in the list: nobody to pair with (offer to be the first). */
export function aloneUnpaired(devices) {
  const self = (devices ?? []).find((d) => d.self);
  return Boolean(self && !self.paired && devices.every((d) => d.self));
}
