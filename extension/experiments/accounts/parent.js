/* Thunderbird Experiment API `autocryptAccounts` (parent process): reads what Thunderbird already
 * knows about an IMAP account so the user types nothing: the incoming server's settings, the
 * password Thunderbird saved for it (only from a click: the schema sets requireUserInput, so the
 * page cannot read it without the user's consent click), and an OAuth2 access token through
 * Thunderbird's own OAuth2Module (the token Thunderbird uses for IMAP, refreshed by Thunderbird;
 * when Thunderbird needs an interactive sign-in, it shows its own window).
 * Internals are checked by feature, not version: each function needs some of them, and a missing
 * one fails that function with an error naming it (`support().missing` names them all).
 * Nothing here keeps a secret: the password and tokens are handed to the caller and forgotten.
 */
/* global ChromeUtils, Services, Ci */
"use strict";

var { ExtensionCommon } = ChromeUtils.importESModule("resource://gre/modules/ExtensionCommon.sys.mjs");
var { ExtensionUtils } = ChromeUtils.importESModule("resource://gre/modules/ExtensionUtils.sys.mjs");
var { ExtensionError } = ExtensionUtils;

const MAIL_SERVICES_URL = "resource:///modules/MailServices.sys.mjs";
const OAUTH2_MODULE_URL = "resource:///modules/OAuth2Module.sys.mjs";
// Thunderbird's socket types (nsMsgSocketType) and auth methods (nsMsgAuthMethod), by name: their
// numbers are Thunderbird's business. trySTARTTLS is gone from newer versions; it meant STARTTLS.
const SECURITY = { plain: "none", trySTARTTLS: "starttls", alwaysSTARTTLS: "starttls", SSL: "tls" };
const AUTH = { passwordCleartext: "password", passwordEncrypted: "password", OAuth2: "oauth2" };
const MAX_EXPIRES_IN = 86400; // seconds, as the host's account.token accepts

// What each function needs, as [name, check] pairs; a failed check names the internal.
const NEEDS = {
  server: [
    [`${MAIL_SERVICES_URL} MailServices.accounts.getAccount`, () => typeof mailServices()?.accounts?.getAccount === "function"],
    ["Ci.nsMsgSocketType", () => typeof Ci?.nsMsgSocketType?.SSL === "number"],
    ["Ci.nsMsgAuthMethod", () => typeof Ci?.nsMsgAuthMethod?.OAuth2 === "number"],
  ],
  password: [["Services.logins.searchLoginsAsync", () => typeof Services.logins?.searchLoginsAsync === "function"]],
  oauth2: [
    [`${OAUTH2_MODULE_URL} OAuth2Module`, () => typeof oauth2Module() === "function"],
    ["OAuth2Module.initFromMail", () => typeof oauth2Module()?.prototype?.initFromMail === "function"],
    ["OAuth2Module.getAccessToken", () => typeof oauth2Module()?.prototype?.getAccessToken === "function"],
    ["OAuth2Module.clearAccessToken", () => typeof oauth2Module()?.prototype?.clearAccessToken === "function"],
  ],
};

function load(url, name) {
  try {
    return ChromeUtils.importESModule(url)[name] ?? null;
  } catch {
    return null;
  }
}
const mailServices = () => load(MAIL_SERVICES_URL, "MailServices");
const oauth2Module = () => load(OAUTH2_MODULE_URL, "OAuth2Module");

function missingFor(...features) {
  const missing = [];
  for (const feature of features) {
    for (const [name, check] of NEEDS[feature]) {
      let ok = false;
      try {
        ok = check();
      } catch {
        ok = false;
      }
      if (!ok && !missing.includes(name)) missing.push(name);
    }
  }
  return missing;
}

function reasonFor(missing) {
  return `Thunderbird ${Services.appinfo.version} lacks account internals autocrypt-sma uses: ${missing.join("; ")}`;
}

function needs(...features) {
  const missing = missingFor(...features);
  if (missing.length) throw new ExtensionError(reasonFor(missing));
}

const byValue = (constants, names) => {
  const out = new Map();
  for (const [name, value] of Object.entries(names)) if (typeof constants[name] === "number") out.set(constants[name], value);
  return out;
};

/** The IMAP incoming server of a MailExtension account id ("account1"), or an error. */
function imapServer(accountId) {
  const account = mailServices().accounts.getAccount(accountId);
  if (!account) throw new ExtensionError(`no Thunderbird account ${accountId}`);
  const server = account.incomingServer;
  if (server?.type !== "imap") throw new ExtensionError(`the Thunderbird account ${accountId} is not an IMAP account`);
  return server;
}

// The server's host name: `hostname` in Thunderbird's JS servers (MsgIncomingServer.sys.mjs),
// `hostName` in the older C++ ones.
const hostOf = (server) => server.hostname ?? server.hostName;

// Thunderbird keeps a mail server's password under origin and realm "imap://<host>" (the host
// URI-encoded, an IPv6 address in brackets) with the server's user name: the lookup
// MsgIncomingServer._getPasswordWithoutUI does, so this finds exactly what Thunderbird would use.
function loginOrigin(server) {
  const host = hostOf(server);
  return `imap://${encodeURIComponent(host.includes(":") ? `[${host}]` : host)}`;
}

async function savedLogin(server) {
  const origin = loginOrigin(server);
  const logins = await Services.logins.searchLoginsAsync({ origin });
  return logins.find((l) => l.httpRealm === origin && l.username === server.username) ?? null;
}

// Whether a password is saved, without making Thunderbird ask for its primary password just
// because the options page lists the accounts: while that is locked, logins are counted (the
// origin is not encrypted) instead of read; the consent click may then unlock it.
async function hasSavedLogin(server) {
  if (Services.logins.isLoggedIn !== false) return Boolean(await savedLogin(server));
  if (typeof Services.logins.countLoginsAsync !== "function") return false;
  const origin = loginOrigin(server);
  return (await Services.logins.countLoginsAsync(origin, "", origin)) > 0;
}

function describe(accountId, server, hasSavedPassword) {
  const security = byValue(Ci.nsMsgSocketType, SECURITY).get(server.socketType) ?? null;
  return {
    accountId,
    host: hostOf(server),
    port: server.port,
    security,
    username: server.username,
    auth: byValue(Ci.nsMsgAuthMethod, AUTH).get(server.authMethod) ?? "other",
    savedPassword: hasSavedPassword,
  };
}

/** Thunderbird's OAuth2 module for this server; `refresh` drops the access token it holds first. */
function accessToken(server, refresh) {
  const Module = oauth2Module();
  const module = new Module();
  if (!module.initFromMail(server)) {
    throw new ExtensionError(`Thunderbird knows no OAuth2 provider for ${hostOf(server)}`);
  }
  // After the mail server refused the token Thunderbird still holds it as valid: ask for a new one.
  if (refresh) module.clearAccessToken();
  return new Promise((resolve, reject) => {
    module.getAccessToken({
      onSuccess(token) {
        // OAuth2.sys.mjs keeps the expiry in ms (Number.MAX_VALUE when the provider gave none).
        const expires = Number(module._oauth?.tokenExpires);
        const left = expires > 0 && expires < Number.MAX_VALUE ? Math.floor((expires - Date.now()) / 1000) : 0;
        const expiresIn = left >= 1 ? Math.min(left, MAX_EXPIRES_IN) : null;
        resolve({ token, expiresIn });
      },
      onFailure() {
        reject(new ExtensionError(`Thunderbird could not sign in to ${hostOf(server)} with OAuth2 (cancelled or refused)`));
      },
    });
  });
}

this.autocryptAccounts = class extends ExtensionCommon.ExtensionAPI {
  getAPI() {
    return {
      autocryptAccounts: {
        async support() {
          const missing = missingFor("server", "password", "oauth2");
          const features = {};
          for (const feature of Object.keys(NEEDS)) features[feature] = missingFor(feature).length === 0;
          return { supported: missing.length === 0, version: Services.appinfo.version, reason: missing.length ? reasonFor(missing) : null, missing, features };
        },

        async incomingServer(accountId) {
          needs("server");
          const server = imapServer(accountId);
          const hasSaved = missingFor("password").length === 0 ? await hasSavedLogin(server) : false;
          return describe(accountId, server, hasSaved);
        },

        async savedPassword(accountId) {
          needs("server", "password");
          const login = await savedLogin(imapServer(accountId));
          return { password: login?.password || null };
        },

        async accessToken(accountId, refresh) {
          needs("server", "oauth2");
          const server = imapServer(accountId);
          if (server.authMethod !== Ci.nsMsgAuthMethod.OAuth2) {
            throw new ExtensionError(`the Thunderbird account ${accountId} does not sign in with OAuth2`);
          }
          return accessToken(server, Boolean(refresh));
        },
      },
    };
  }
};
