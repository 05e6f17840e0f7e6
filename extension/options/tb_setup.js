// Setting up from what Thunderbird already knows (issue 18), without the DOM: which Thunderbird
// accounts to list, each one's state, what one click needs (a consent for the saved password, a
// token from Thunderbird, a typed password, or the form by hand), and the account.configure params.

/**
 * Thunderbird's IMAP accounts, one entry each, named by the address of its first identity with one
 * (that address is the host's account name).
 * @returns {{accountId: string, name: string, email: string}[]}
 */
export function imapAccountsOf(tbAccounts) {
  const out = [];
  for (const account of tbAccounts ?? []) {
    if (account.type !== "imap") continue;
    const email = (account.identities ?? []).find((i) => i.email)?.email;
    if (email) out.push({ accountId: account.id, name: account.name ?? email, email });
  }
  return out;
}

/** "joined", "configured" (the host has it, no SMA yet) or "new", for the host account of this address. */
export function accountState(email, hostAccounts) {
  const known = (hostAccounts ?? []).find((a) => a.account.toLowerCase() === email.toLowerCase());
  if (!known) return "new";
  return known.device_id ? "joined" : "configured";
}

/**
 * What "Use with Autocrypt SMA" needs for this server (the Experiment's incomingServer answer, or
 * null when it could not be read): "oauth2" (a token from Thunderbird, nothing stored),
 * "saved-password" (ask consent, then hand Thunderbird's password over), "password" (type it),
 * or "manual" (a security mode or sign-in method the helper does not speak: the form by hand).
 */
export function setupPlan(server) {
  if (!server || !server.security) return "manual";
  if (server.auth === "oauth2") return "oauth2";
  if (server.auth === "password") return server.savedPassword ? "saved-password" : "password";
  return "manual";
}

/**
 * account.configure params from Thunderbird's settings and exactly one secret:
 * `{password}` or `{token}` (an OAuth2 token from Thunderbird, which keeps supplying them).
 */
export function setupParams(email, server, { password, token }) {
  const params = {
    account: email,
    imap: { host: server.host, port: server.port, security: server.security, username: server.username, verify_tls: true },
  };
  if (token) params.oauth2 = { source: "thunderbird", token };
  else params.password = password;
  return params;
}

/** The manual form's starting values from Thunderbird's settings, when the host has none yet. */
export function formFromServer(server) {
  if (!server?.security) return null;
  return { host: server.host, port: server.port, security: server.security, username: server.username, verify_tls: true, placeholder: "" };
}
