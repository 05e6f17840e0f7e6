// The accounts Experiment's parent script in a Node vm, with stand-ins for the Thunderbird globals it
// uses (MailServices, the login manager, OAuth2Module, Ci's socket types and auth methods): the
// settings it reports, the saved password it finds (the one Thunderbird itself would use), the
// OAuth2 token and its expiry, and the clear error naming an internal this Thunderbird lacks. The
// real thing runs in tests/e2e/test_thunderbird_accounts.py.

import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const SOURCE = readFileSync(new URL("../experiments/accounts/parent.js", import.meta.url), "utf8");
const SCHEMA = JSON.parse(readFileSync(new URL("../experiments/accounts/schema.json", import.meta.url), "utf8"));
const plain = (value) => JSON.parse(JSON.stringify(value));
class ExtensionError extends Error {}

// Thunderbird 153's values (the script must look them up by name, not by number).
const SOCKET = { plain: 0, alwaysSTARTTLS: 2, SSL: 3 };
const AUTH = { none: 1, passwordCleartext: 3, passwordEncrypted: 4, GSSAPI: 5, OAuth2: 10 };

function server(overrides = {}) {
  return { type: "imap", hostname: "imap.example.org", port: 993, socketType: SOCKET.SSL, username: "me", authMethod: AUTH.passwordCleartext, ...overrides };
}

function load({ accounts = { account1: server() }, logins = [], oauth = {}, absent = [], ci = { nsMsgSocketType: SOCKET, nsMsgAuthMethod: AUTH }, noLogins = false, locked = false } = {}) {
  const calls = [];
  class OAuth2Module {
    initFromMail(srv) {
      calls.push(["initFromMail", srv.hostname]);
      this._oauth = { tokenExpires: oauth.tokenExpires ?? 0 };
      return oauth.known !== false;
    }
    clearAccessToken() {
      calls.push(["clearAccessToken"]);
    }
    getAccessToken(listener) {
      calls.push(["getAccessToken"]);
      if (oauth.fail) listener.onFailure(0x80004004);
      else listener.onSuccess(oauth.token ?? "tok-1");
    }
  }
  const byUrl = {
    "resource://gre/modules/ExtensionCommon.sys.mjs": { ExtensionCommon: { ExtensionAPI: class {} } },
    "resource://gre/modules/ExtensionUtils.sys.mjs": { ExtensionUtils: { ExtensionError } },
    "resource:///modules/MailServices.sys.mjs": {
      MailServices: { accounts: { getAccount: (id) => (accounts[id] ? { key: id, incomingServer: accounts[id] } : null) } },
    },
    "resource:///modules/OAuth2Module.sys.mjs": { OAuth2Module },
  };
  const sandbox = {
    ChromeUtils: {
      importESModule: (url) => {
        if (!(url in byUrl) || absent.includes(url)) throw new Error(`no module ${url}`);
        return byUrl[url];
      },
    },
    Services: {
      appinfo: { version: "153.8.0" },
      logins: noLogins
        ? {}
        : {
            isLoggedIn: !locked, // false: a primary password is set and not entered yet
            searchLoginsAsync: async (match) => {
              calls.push(["searchLoginsAsync", match.origin]);
              return logins.filter((l) => l.origin === match.origin);
            },
            countLoginsAsync: async (origin, action, realm) => {
              calls.push(["countLoginsAsync", origin, action, realm]);
              return logins.filter((l) => l.origin === origin && l.httpRealm === realm).length;
            },
          },
    },
    Ci: ci,
  };
  vm.createContext(sandbox);
  vm.runInContext(SOURCE, sandbox);
  return { api: new sandbox.autocryptAccounts().getAPI().autocryptAccounts, calls };
}

const login = (overrides = {}) => ({ origin: "imap://imap.example.org", httpRealm: "imap://imap.example.org", username: "me", password: "s3cret", ...overrides });

test("the schema lets a page read the saved password only from a user's click, and bounds every argument", () => {
  const fns = Object.fromEntries(SCHEMA[0].functions.map((f) => [f.name, f]));
  assert.equal(fns.savedPassword.requireUserInput, true);
  assert.equal(fns.accessToken.requireUserInput, undefined); // the background asks without a click
  for (const fn of Object.values(fns)) for (const p of fn.parameters) if (p.type === "string") assert.ok(p.maxLength > 0, `${fn.name}.${p.name}`);
});

test("Thunderbird 153 with the known internals is supported, feature by feature", async () => {
  const support = await load().api.support();
  assert.equal(support.supported, true);
  assert.equal(support.reason, null);
  assert.deepEqual(plain(support.features), { server: true, password: true, oauth2: true });
});

for (const [socket, security] of [["SSL", "tls"], ["alwaysSTARTTLS", "starttls"], ["plain", "none"]]) {
  test(`an IMAP server with ${socket} is reported as security ${security}`, async () => {
    const { api } = load({ accounts: { account1: server({ socketType: SOCKET[socket], port: 143 }) } });
    const info = await api.incomingServer("account1");
    assert.deepEqual(plain(info), { accountId: "account1", host: "imap.example.org", port: 143, security, username: "me", auth: "password", savedPassword: false });
  });
}

test("the socket types are looked up by name: a number Thunderbird does not name is null, not a guess", async () => {
  const { api } = load({ accounts: { account1: server({ socketType: 7 }) } });
  assert.equal((await api.incomingServer("account1")).security, null);
});

for (const [method, auth] of [["passwordCleartext", "password"], ["passwordEncrypted", "password"], ["OAuth2", "oauth2"], ["GSSAPI", "other"]]) {
  test(`auth method ${method} is reported as ${auth}`, async () => {
    const { api } = load({ accounts: { account1: server({ authMethod: AUTH[method] }) } });
    assert.equal((await api.incomingServer("account1")).auth, auth);
  });
}

test("a saved password: its existence is reported, the password itself only by savedPassword", async () => {
  const { api } = load({ logins: [login({ username: "someone-else", password: "no" }), login({ httpRealm: "smtp://x", password: "no" }), login()] });
  const info = await api.incomingServer("account1");
  assert.equal(info.savedPassword, true);
  assert.ok(!JSON.stringify(plain(info)).includes("s3cret"));
  assert.deepEqual(plain(await api.savedPassword("account1")), { password: "s3cret" });
});

test("an IPv6 server: the login is looked up as Thunderbird stores it, in brackets and URI-encoded", async () => {
  const { api, calls } = load({ accounts: { account1: server({ hostname: "::1" }) }, logins: [login({ origin: "imap://%5B%3A%3A1%5D", httpRealm: "imap://%5B%3A%3A1%5D" })] });
  assert.equal((await api.incomingServer("account1")).savedPassword, true);
  assert.deepEqual(plain(calls), [["searchLoginsAsync", "imap://%5B%3A%3A1%5D"]]);
});

test("an older Thunderbird whose servers name it hostName: the same answers", async () => {
  const { hostname, ...old } = server();
  const { api } = load({ accounts: { account1: { ...old, hostName: hostname } }, logins: [login()] });
  assert.equal((await api.incomingServer("account1")).host, "imap.example.org");
  assert.equal((await api.incomingServer("account1")).savedPassword, true);
});

test("a locked primary password: listing counts logins (no prompt, nothing decrypted); the consent click reads", async () => {
  const { api, calls } = load({ locked: true, logins: [login()] });
  assert.equal((await api.incomingServer("account1")).savedPassword, true);
  assert.deepEqual(plain(calls), [["countLoginsAsync", "imap://imap.example.org", "", "imap://imap.example.org"]]);
  assert.deepEqual(plain(await api.savedPassword("account1")), { password: "s3cret" });
  const none = load({ locked: true, logins: [login({ origin: "imap://other.example.org", httpRealm: "imap://other.example.org" })] });
  assert.equal((await none.api.incomingServer("account1")).savedPassword, false);
});

test("no saved password for this user and server: null", async () => {
  const { api } = load({ logins: [login({ origin: "imap://other.example.org", httpRealm: "imap://other.example.org" })] });
  assert.equal((await api.incomingServer("account1")).savedPassword, false);
  assert.deepEqual(plain(await api.savedPassword("account1")), { password: null });
});

test("an unknown account or one that is not IMAP: a clear error", async () => {
  const { api } = load({ accounts: { account2: server({ type: "pop3" }) } });
  await assert.rejects(api.incomingServer("account9"), /no Thunderbird account account9/);
  await assert.rejects(api.incomingServer("account2"), /account2 is not an IMAP account/);
  await assert.rejects(api.savedPassword("account2"), /not an IMAP account/);
});

test("an OAuth2 token from Thunderbird's module, with the seconds it has left", async () => {
  const { api, calls } = load({ accounts: { account1: server({ authMethod: AUTH.OAuth2 }) }, oauth: { token: "ya29.abc", tokenExpires: Date.now() + 3600_000 } });
  const result = plain(await api.accessToken("account1"));
  assert.equal(result.token, "ya29.abc");
  assert.ok(result.expiresIn > 3590 && result.expiresIn <= 3600, String(result.expiresIn));
  assert.deepEqual(plain(calls), [["initFromMail", "imap.example.org"], ["getAccessToken"]]);
});

test("refresh drops the token Thunderbird holds before asking (the server refused it)", async () => {
  const { api, calls } = load({ accounts: { account1: server({ authMethod: AUTH.OAuth2 }) } });
  await api.accessToken("account1", true);
  assert.deepEqual(plain(calls).map((c) => c[0]), ["initFromMail", "clearAccessToken", "getAccessToken"]);
});

for (const [label, tokenExpires] of [["no expiry known (MAX_VALUE)", Number.MAX_VALUE], ["none at all", 0], ["already past", 1000]]) {
  test(`an OAuth2 token with ${label}: expiresIn null`, async () => {
    const { api } = load({ accounts: { account1: server({ authMethod: AUTH.OAuth2 }) }, oauth: { tokenExpires } });
    assert.equal((await api.accessToken("account1")).expiresIn, null);
  });
}

test("a long-lived token's expiresIn is capped at what the host accepts (86400)", async () => {
  const { api } = load({ accounts: { account1: server({ authMethod: AUTH.OAuth2 }) }, oauth: { tokenExpires: Date.now() + 7 * 86400_000 } });
  assert.equal((await api.accessToken("account1")).expiresIn, 86400);
});

test("OAuth2 refused: a password account, an unknown provider, a failed or cancelled sign-in", async () => {
  await assert.rejects(load().api.accessToken("account1"), /does not sign in with OAuth2/);
  const oauthServer = { account1: server({ authMethod: AUTH.OAuth2 }) };
  await assert.rejects(load({ accounts: oauthServer, oauth: { known: false } }).api.accessToken("account1"), /knows no OAuth2 provider for imap\.example\.org/);
  await assert.rejects(load({ accounts: oauthServer, oauth: { fail: true } }).api.accessToken("account1"), /could not sign in to imap\.example\.org/);
});

test("no OAuth2 module (an older or changed Thunderbird): named; settings and passwords still work", async () => {
  const { api, calls } = load({ accounts: { account1: server({ authMethod: AUTH.OAuth2 }) }, absent: ["resource:///modules/OAuth2Module.sys.mjs"] });
  const support = await api.support();
  assert.equal(support.supported, false);
  assert.deepEqual(plain(support.features), { server: true, password: true, oauth2: false });
  assert.match(support.reason, /^Thunderbird 153\.8\.0 lacks account internals autocrypt-sma uses: resource:\/\/\/modules\/OAuth2Module\.sys\.mjs OAuth2Module/);
  await assert.rejects(api.accessToken("account1"), (err) => err instanceof ExtensionError && /OAuth2Module\.sys\.mjs/.test(err.message));
  assert.equal((await api.incomingServer("account1")).auth, "oauth2");
  assert.ok(!calls.some((c) => c[0] === "getAccessToken"));
});

test("no login manager search: the password feature is named missing, the settings still come", async () => {
  const { api } = load({ noLogins: true });
  const support = await api.support();
  assert.deepEqual(plain(support.missing), ["Services.logins.searchLoginsAsync"]);
  assert.equal((await api.incomingServer("account1")).savedPassword, false);
  await assert.rejects(api.savedPassword("account1"), /Services\.logins\.searchLoginsAsync/);
});

test("Thunderbird's constants renamed: every function that needs them says which", async () => {
  const { api } = load({ ci: { nsMsgSocketType: SOCKET } });
  const support = await api.support();
  assert.deepEqual(plain(support.missing), ["Ci.nsMsgAuthMethod"]);
  await assert.rejects(api.incomingServer("account1"), /Ci\.nsMsgAuthMethod/);
  await assert.rejects(api.savedPassword("account1"), /Ci\.nsMsgAuthMethod/);
});
