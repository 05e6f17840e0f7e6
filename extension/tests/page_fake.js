// A fake `messenger` for rendering the real pages in a browser (tests/screenshots.test.mjs).
// The test server puts `globalThis.__FAKE__ = {messages, overview, replies, after, accounts, now}` before
// this; `after[method]`, if given, is the overview once that call succeeded (the host moved on), and
// `afterReplies[method]` replaces some `replies` then (e.g. account.list once sma.join succeeded).
"use strict";
(() => {
  const fake = globalThis.__FAKE__;
  // No caret: it blinks, so a focused field's screenshot differed from run to run, and every test
  // run left the committed PNGs modified. Inherited from the root, set through the CSSOM: the
  // pages' CSP (style-src 'self') refuses an inline <style>.
  document.documentElement.style.setProperty("caret-color", "transparent", "important");
  const RealDate = Date;
  // A fixed clock makes "3 min ago" and the like the same in every screenshot.
  globalThis.Date = class extends RealDate {
    constructor(...args) { super(...(args.length ? args : [fake.now])); }
    static now() { return fake.now; }
  };
  const getMessage = (key, subs) => {
    const entry = fake.messages[key];
    if (!entry) throw new Error(`missing message ${key}`);
    const args = [].concat(subs ?? []);
    return entry.message.replace(/\$(\w+)\$/g, (_, name) => {
      const content = entry.placeholders?.[name.toLowerCase()]?.content ?? "";
      const n = Number(content.replace(/^\$/, ""));
      return n ? String(args[n - 1] ?? "") : content;
    });
  };
  // A list in `replies`, `after` or `afterReplies` answers call after call in order (the last one stays).
  const nextOf = (value) => (Array.isArray(value) ? (value.length > 1 ? value.shift() : value[0]) : value);
  const reply = (message) => {
    if (message.type === "overview") return fake.overview;
    if (message.type === "status") return fake.overview;
    if (message.type === "call") {
      const result = nextOf(fake.replies?.[message.method]);
      if (result?.error) return { ok: false, error: result.error };
      const overview = nextOf(fake.after?.[message.method]);
      if (overview) fake.overview = overview;
      const replies = nextOf(fake.afterReplies?.[message.method]);
      if (replies) Object.assign(fake.replies, replies);
      return { ok: true, result: result ?? {} };
    }
    if (message.type === "scan.status") return fake.overview?.scan ?? null;
    return { ok: true };
  };
  // Every message the page sends, readable in the dumped DOM as <html data-sent="[...]">.
  const sent = [];
  const record = (message) => {
    if (message.type === "overview" || message.type === "status") return;
    sent.push(message);
    document.documentElement.dataset.sent = JSON.stringify(sent);
  };
  // `fake.steps`, done in order once each element exists, as a person would:
  // {wait: selector}, {click: selector}, {fill: selector, value}, {focus: selector},
  // {probe: selector} (records its value).
  const steps = [...(fake.steps ?? [])];
  const next = () => {
    if (!steps.length) return;
    const step = steps[0];
    const el = document.querySelector(step.wait ?? step.click ?? step.fill ?? step.focus ?? step.probe);
    if (el && !el.disabled) {
      steps.shift();
      if (step.click) el.click();
      if (step.fill) {
        el.value = step.value;
        el.dispatchEvent(new Event("change"));
      }
      if (step.focus) el.focus();
      if (step.probe) record({ probe: step.probe, value: el.value });
    }
    setTimeout(next, 50);
  };
  addEventListener("load", () => setTimeout(next, 50));
  globalThis.messenger = {
    runtime: {
      id: "autocrypt-sma@autocrypt.org",
      sendMessage: async (message) => {
        record(message);
        return reply(message);
      },
      onMessage: { addListener() {} },
      openOptionsPage: async () => record({ type: "openOptionsPage" }),
      getPlatformInfo: async () => ({ os: "linux", arch: "x86-64" }),
    },
    i18n: { getMessage },
    accounts: { list: async () => fake.accounts ?? [] },
    // The autocryptAccounts Experiment: what `fake.servers` says of each account; the secrets are
    // fixed stand-ins, recorded when asked for so a test sees when they were read.
    autocryptAccounts: {
      incomingServer: async (id) => {
        const server = fake.servers?.[id];
        if (!server) throw new Error(`no Thunderbird account ${id}`);
        return server;
      },
      savedPassword: async (id) => {
        record({ experiment: "savedPassword", accountId: id });
        const saved = fake.savedPasswords ?? {};
        return { password: id in saved ? saved[id] : "saved-in-thunderbird" };
      },
      accessToken: async (id) => {
        record({ experiment: "accessToken", accountId: id });
        return { token: "token-from-thunderbird", expiresIn: 3599 };
      },
    },
    storage: { local: { get: async () => fake.stored ?? {}, set: async () => {} } },
  };
})();
