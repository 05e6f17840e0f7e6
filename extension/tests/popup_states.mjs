// Overviews (as the background answers {type: "overview"}) for each state the popup can be in.
// Shared by the view tests and the screenshot test; NOW is the clock both use.

export const NOW = 1_700_000_300_000;
export const ACCOUNT = "alice@example.org";
const sec = (ms) => Math.floor(ms / 1000);

const host = { status: "connected", host_version: "0.1.0", protocol_version: 1, last_error: null, error: null, scan: null };
const laptop = { device_id: "aaaaaaaaaaaaaaaa", name: "Laptop", last_seen: sec(NOW) - 60, paired: true, self: true, stale: false };
const desktop = { device_id: "bbbbbbbbbbbbbbbb", name: "Desktop", last_seen: sec(NOW) - 3600, paired: true, self: false, stale: false };
const phone = { device_id: "cccccccccccccccc", name: "Phone", last_seen: sec(NOW) - 30, paired: false, self: false, stale: false };

export const PAIRING_ID = "0123456789abcdef0123456789abcdef";
export const CODE = "417-209-3551";
// The host's reasons for a wrong code (native_host/core/pairing.py), on each side.
export const WRONG_CODE_JOINER = "the code did not match (mistyped, or another device answered): start again with a new code";
export const WRONG_CODE_INVITER = "the new device's code did not match: start again with a new code";

/** A pairing as pairing.list returns it: by default this (paired) device showing a code. */
export const pairing = (over) => ({
  pairing_id: PAIRING_ID,
  role: "inviter",
  peer_device_id: null,
  peer_name: null,
  state: "inviting",
  code: CODE,
  expires_at: sec(NOW) + 9 * 60 + 30,
  reason: null,
  ...over,
});
const joiner = (over) => pairing({ role: "joiner", state: "joining", code: null, ...over });
const withPhone = (over) => pairing({ peer_device_id: phone.device_id, peer_name: "Phone", code: null, ...over });

const account = (over) => ({
  account: ACCOUNT,
  device_id: laptop.device_id,
  joined: true,
  paired: true,
  devices: [laptop, desktop],
  pairings: [],
  unsolicited_requests: 0,
  sync: { online: true, error: null, last_sync: NOW - 3 * 60000 },
  alerts: [],
  error: null,
  ...over,
});

const newDevice = (pairings) =>
  account({ paired: false, devices: [{ ...laptop, paired: false }, desktop], pairings });

export const STATES = {
  "host-missing": {
    ...host,
    status: "host_missing",
    host_version: null,
    protocol_version: null,
    last_error: { code: "host_missing", message: "No such native application org.autocrypt.sma" },
    accounts: null,
  },
  "host-disconnected": {
    ...host,
    status: "disconnected",
    last_error: { code: "disconnected", message: "native host exited" },
    accounts: null,
  },
  "no-account": { ...host, accounts: [] },
  "not-joined": { ...host, accounts: [account({ device_id: null, joined: false, paired: false, devices: [], sync: { online: null, error: null, last_sync: null } })] },
  "joined-unpaired": { ...host, accounts: [newDevice([])] },
  paired: { ...host, accounts: [account({})] },
  // The existing device: "Add a device" shows the code, then the new device uses it.
  "inviter-code": { ...host, accounts: [account({ pairings: [pairing({})] })] },
  "inviter-confirming": { ...host, accounts: [account({ devices: [laptop, desktop, phone], pairings: [withPhone({ state: "confirming" })] })] },
  "inviter-completed": { ...host, accounts: [account({ devices: [laptop, desktop, { ...phone, paired: true }], pairings: [withPhone({ state: "completed" })] })] },
  "inviter-wrong-code": { ...host, accounts: [account({ pairings: [withPhone({ state: "failed", reason: WRONG_CODE_INVITER })] })] },
  // The new device: it types the code, then waits, then holds the key (or the code was wrong).
  "joiner-joining": { ...host, accounts: [newDevice([joiner({})])] },
  "joiner-receiving": { ...host, accounts: [newDevice([joiner({ state: "receiving", peer_name: "Desktop", peer_device_id: desktop.device_id })])] },
  "joiner-completed": {
    ...host,
    accounts: [account({ pairings: [joiner({ state: "completed", peer_name: "Desktop", peer_device_id: desktop.device_id })] })],
  },
  "joiner-wrong-code": { ...host, accounts: [newDevice([joiner({ state: "failed", reason: WRONG_CODE_JOINER })])] },
  "paired-unsolicited": { ...host, accounts: [account({ unsolicited_requests: 3 })] },
  // OAuth2 from Thunderbird: the host waits for a token (not an outage), then the server refused it twice.
  "waiting-token": { ...host, accounts: [account({ sync: { online: false, error: null, last_sync: NOW - 60 * 60000, waiting: "token" } })] },
  // Thunderbird's sign-in window was closed: not asked again until the user presses "Sign in again".
  "sign-in-cancelled": {
    ...host,
    accounts: [
      account({
        sync: { online: false, error: null, last_sync: NOW - 60 * 60000, waiting: "token" },
        token_error: "Thunderbird could not sign in to imap.gmail.example with OAuth2 (cancelled or refused)",
        sign_in_held: true,
      }),
    ],
  },
  "token-refused": {
    ...host,
    accounts: [
      account({
        sync: {
          online: false,
          last_sync: NOW - 60 * 60000,
          waiting: "token",
          error: { code: "auth_failed", message: "the server refused the OAuth2 token from Thunderbird; sign in again in Thunderbird (Account Settings → Server Settings)" },
        },
      }),
    ],
  },
  "paired-errors": {
    ...host,
    accounts: [
      account({
        sync: { online: false, error: { code: "imap_unavailable", message: "imap.example.org: connection refused" }, last_sync: NOW - 2 * 3600000 },
        alerts: [{ kind: "inbox", message: "a message in this device's inbox failed its signature check", at: NOW - 60000 }],
      }),
    ],
    scan: { running: true, scanned: 150, limit: 5000 },
  },
};

// --- the options page: Thunderbird's accounts and the host's answers -------------------------

export const TB_ACCOUNTS = [
  { id: "account1", name: "Work", type: "imap", identities: [{ email: "alice@example.org" }, { email: "a.l@example.org" }] },
  { id: "account2", name: "Local Folders", type: "none", identities: [] },
  { id: "account3", name: "bob@example.net", type: "pop3", identities: [{ email: "bob@example.net" }] },
];

const imap = { host: "imap.example.org", port: 993, security: "tls", username: "alice", verify_tls: true };

// Set-up from Thunderbird's own settings (issue 18): Thunderbird's IMAP accounts and what the
// autocryptAccounts Experiment reports of their servers (tests/page_fake.js answers with these).
export const TB_ACCOUNTS_SETUP = [
  ...TB_ACCOUNTS,
  { id: "account4", name: "Gmail", type: "imap", identities: [{ email: "carol@gmail.example" }] },
  { id: "account5", name: "Home", type: "imap", identities: [{ email: "dave@example.com" }] },
  { id: "account6", name: "University", type: "imap", identities: [{ email: "erin@example.edu" }] },
];
export const TB_SERVERS = {
  account1: { accountId: "account1", host: "imap.example.org", port: 993, security: "tls", username: "alice", auth: "password", savedPassword: false },
  account4: { accountId: "account4", host: "imap.gmail.example", port: 993, security: "tls", username: "carol@gmail.example", auth: "oauth2", savedPassword: false },
  account5: { accountId: "account5", host: "mail.example.com", port: 143, security: "starttls", username: "dave", auth: "password", savedPassword: true },
  account6: { accountId: "account6", host: "imap.example.edu", port: 993, security: "tls", username: "erin", auth: "other", savedPassword: false },
};
/** The set-up list; `click` presses "Use with Autocrypt SMA" on that Thunderbird account. */
function setupScenario(click, extra = {}) {
  return {
    overview: { status: "connected" },
    accounts: TB_ACCOUNTS_SETUP,
    servers: TB_SERVERS,
    replies: { "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: laptop.device_id }] } },
    steps: click ? [{ wait: `#tb-accounts li[data-account-id="${click}"] button.use` }, { click: `#tb-accounts li[data-account-id="${click}"] button.use` }] : [],
    ...extra,
  };
}

const alone = { ...laptop, paired: false };
const oldDesktop = { ...desktop, paired: false }; // a device of the identity this one replaced

/**
 * A configured account, not joined: the user picks an answer and presses Join; `result` is
 * sma.join's answer, `devices` devices.list's from then on, `joined` the overview's account.
 */
export function joinScenario(answer, result, devices, joined) {
  return {
    overview: { status: "connected" },
    accounts: TB_ACCOUNTS,
    replies: {
      "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: null }] },
      "sma.join": { device_id: laptop.device_id, ...result },
    },
    after: { "sma.join": { status: "connected", accounts: [joined] } },
    afterReplies: {
      "sma.join": { "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: laptop.device_id }] }, "devices.list": { devices } },
    },
    steps: [{ wait: "#join-section:not([hidden])" }, { click: `input[name="first_device"][value="${answer}"]` }, { click: "#join" }],
  };
}

export const OPTIONS_STATES = {
  "options-new": {
    overview: { status: "connected" },
    accounts: TB_ACCOUNTS,
    replies: { "account.list": { accounts: [] } },
  },
  "options-configured": {
    overview: { status: "connected" },
    accounts: TB_ACCOUNTS,
    replies: { "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: null }] } },
  },
  "options-unpaired": {
    overview: { status: "connected", accounts: [STATES["joined-unpaired"].accounts[0]] },
    accounts: TB_ACCOUNTS,
    replies: {
      "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: laptop.device_id }] },
      "devices.list": { devices: [{ ...laptop, paired: false }, desktop] },
    },
  },
  "options-joined": {
    overview: {
      status: "connected",
      scan: { account: ACCOUNT, running: true, scanned: 340, limit: 5000, updated: 7 },
      accounts: [STATES["inviter-code"].accounts[0]],
    },
    accounts: TB_ACCOUNTS,
    replies: {
      "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: laptop.device_id }] },
      "devices.list": { devices: [laptop, desktop, { ...phone, stale: true, last_seen: sec(NOW) - 100 * 86400 }] },
    },
  },
  // The join step: the user answers "Is this the first device…?" before Join.
  "options-join-unanswered": {
    overview: { status: "connected" },
    accounts: TB_ACCOUNTS,
    replies: { "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: null }] } },
    steps: [{ wait: "#join-section:not([hidden])" }, { click: "#join" }, { wait: "#first-device-error:not([hidden])" }],
  },
  // "No, I have another device", but the SMA held none: the page offers to be the first device.
  "options-join-no-other-device": joinScenario("no", { first_device: false, identity_found: false, devices: [alone] }, [alone], newDevice([])),
  // "Yes, this is my first device", but the SMA held other devices: a new identity, said plainly.
  "options-join-new-identity": joinScenario(
    "yes",
    { first_device: true, identity_found: true, devices: [laptop, oldDesktop] },
    [laptop, oldDesktop],
    account({ devices: [laptop, oldDesktop] }),
  ),
  // Every Thunderbird IMAP account with its state; one of them joined already.
  "options-tb-accounts": setupScenario(null),
  // A saved password: the page says where it goes and asks once.
  "options-tb-consent": setupScenario("account5"),
  // No saved password: type it, once.
  "options-tb-password": setupScenario("account1", { replies: { "account.list": { accounts: [] } } }),
  "options-host-missing": {
    overview: { status: "host_missing" },
    accounts: TB_ACCOUNTS,
  },
};

/** "No" found nobody; then "This is my first device" joins again, founding (a second sma.join). */
export function foundHereScenario() {
  const scenario = joinScenario("no", { first_device: false, identity_found: false, devices: [alone] }, [alone], newDevice([]));
  const first = scenario.replies["sma.join"];
  scenario.replies["sma.join"] = [first, { ...first, first_device: true, devices: [laptop] }];
  scenario.after["sma.join"] = [scenario.after["sma.join"], { status: "connected", accounts: [account({ devices: [laptop] })] }];
  const joined = scenario.afterReplies["sma.join"];
  scenario.afterReplies["sma.join"] = [joined, { ...joined, "devices.list": { devices: [laptop] } }];
  scenario.steps.push({ click: "#no-other-device:not([hidden]) #found-here" }, { wait: "#join-result.ok:not(:empty)" }, { wait: "#no-other-device[hidden]" });
  return scenario;
}
