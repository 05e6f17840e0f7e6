// Overviews (as the background answers {type: "overview"}) for each state the popup can be in.
// Shared by the view tests and the screenshot test; NOW is the clock both use.

export const NOW = 1_700_000_300_000;
export const ACCOUNT = "alice@example.org";
const sec = (ms) => Math.floor(ms / 1000);

const host = { status: "connected", host_version: "0.1.0", protocol_version: 1, last_error: null, error: null, scan: null };
const laptop = { device_id: "aaaaaaaaaaaaaaaa", name: "Laptop", last_seen: sec(NOW) - 60, paired: true, self: true, stale: false };
const desktop = { device_id: "bbbbbbbbbbbbbbbb", name: "Desktop", last_seen: sec(NOW) - 3600, paired: true, self: false, stale: false };
const phone = { device_id: "cccccccccccccccc", name: "Phone", last_seen: sec(NOW) - 30, paired: false, self: false, stale: false };

export const pairing = (over) => ({
  pairing_id: "0123456789abcdef0123456789abcdef",
  role: "responder",
  peer_device_id: phone.device_id,
  peer_name: "Phone",
  state: "showing",
  sas: "4821 0937 5516 2284",
  expires_at: sec(NOW) + 400,
  reason: null,
  ...over,
});

const account = (over) => ({
  account: ACCOUNT,
  device_id: laptop.device_id,
  joined: true,
  paired: true,
  devices: [laptop, desktop],
  pairings: [],
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
  "initiator-requested": { ...host, accounts: [newDevice([pairing({ role: "initiator", state: "requested", sas: null, peer_name: null, peer_device_id: null })])] },
  "initiator-showing": { ...host, accounts: [newDevice([pairing({ role: "initiator", peer_name: "Desktop", peer_device_id: desktop.device_id })])] },
  "initiator-completed": { ...host, accounts: [account({ pairings: [pairing({ role: "initiator", state: "completed", sas: null, peer_name: "Desktop" })] })] },
  "responder-showing": { ...host, accounts: [account({ devices: [laptop, desktop, phone], pairings: [pairing({})] })] },
  "responder-rejected": { ...host, accounts: [account({ pairings: [pairing({ state: "rejected", sas: null })] })] },
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
  "options-joined": {
    overview: { status: "connected", scan: { account: ACCOUNT, running: true, scanned: 340, limit: 5000, updated: 7 } },
    accounts: TB_ACCOUNTS,
    replies: {
      "account.list": { accounts: [{ account: ACCOUNT, imap, device_id: laptop.device_id }] },
      "devices.list": { devices: [laptop, desktop, { ...phone, stale: true, last_seen: sec(NOW) - 100 * 86400 }] },
    },
  },
  "options-host-missing": {
    overview: { status: "host_missing" },
    accounts: TB_ACCOUNTS,
  },
};
