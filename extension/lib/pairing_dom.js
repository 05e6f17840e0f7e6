// Draws the pairing part of an account (lib/pairing_view.js's model) for the popup and the options
// page: the cards, "Add a device" on a paired device, the code field on a new one. The pages wire
// the controls: buttons carry data-action (invite, cancel), the form data-action="join".

function el(doc, tag, { className, text, attrs = {}, data = {} } = {}) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  Object.assign(node.dataset, data);
  return node;
}

function card(doc, p, account) {
  const article = el(doc, "article", { className: "pairing", data: { role: p.role, state: p.state } });
  if (p.outcome) article.dataset.outcome = p.outcome;
  if (p.wrongCode) article.dataset.failure = "wrong-code";
  if (p.busy) article.setAttribute("aria-busy", "true");
  article.append(el(doc, "h3", { className: "pairing-title", text: p.title }), el(doc, "p", { className: "pairing-text", text: p.text }));
  if (p.code) {
    const box = el(doc, "div", { className: "code-box" });
    box.append(
      el(doc, "p", { className: "code-label", text: p.codeLabel }),
      el(doc, "p", { className: "code", text: p.code }),
      el(doc, "p", { className: "code-expiry", text: p.expiry }),
    );
    article.append(box);
  }
  if (p.actions.length) {
    const actions = el(doc, "div", { className: "pairing-actions" });
    for (const a of p.actions) {
      actions.append(el(doc, "button", { text: a.label, attrs: { type: "button" }, data: { action: a.action, account, pairingId: p.id } }));
    }
    article.append(actions);
  }
  return article;
}

function joinForm(doc, account, { t, idPrefix, error }) {
  const form = el(doc, "form", { className: "join-form", attrs: { novalidate: "" }, data: { action: "join", account } });
  const inputId = `${idPrefix}-code`;
  const errorId = `${idPrefix}-code-error`;
  const input = el(doc, "input", {
    className: "code-input",
    attrs: {
      id: inputId,
      name: "code",
      inputmode: "numeric",
      autocomplete: "off",
      spellcheck: "false",
      maxlength: "32",
      placeholder: t("codePlaceholder"),
      "aria-describedby": `${idPrefix}-hint ${errorId}`,
    },
    data: { account, focusKey: `code|${account}` },
  });
  if (error) input.setAttribute("aria-invalid", "true");
  const row = el(doc, "div", { className: "join-row" });
  row.append(input, el(doc, "button", { className: "primary", text: t("joinCodeButton"), attrs: { type: "submit" }, data: { focusKey: `join|${account}` } }));
  form.append(
    el(doc, "h3", { text: t("joinCodeTitle") }),
    el(doc, "p", { className: "muted", text: t("joinCodeHint"), attrs: { id: `${idPrefix}-hint` } }),
    el(doc, "label", { className: "code-input-label", text: t("joinCodeLabel"), attrs: { for: inputId } }),
    row,
  );
  const message = el(doc, "p", { className: "code-error error", text: error ?? "", attrs: { id: errorId, role: "alert" } });
  message.hidden = !error;
  form.append(message);
  return form;
}

/**
 * The pairing block of one account. `view` is accountPairing()'s result; `error` a message for the
 * code field (a malformed code, or the host refusing it); `idPrefix` keeps ids unique on the page.
 */
export function renderPairing(doc, view, { account, t, idPrefix, error = null }) {
  const block = el(doc, "div", { className: "pairing-block", data: { account } });
  if (view.unsolicitedNotice) block.append(el(doc, "p", { className: "calm-notice", text: view.unsolicitedNotice, attrs: { role: "note" } }));
  for (const p of view.pairings) block.append(card(doc, p, account));
  if (view.canInvite) {
    block.append(el(doc, "button", { className: "primary add-device", text: t("addDeviceButton"), attrs: { type: "button" }, data: { action: "invite", account } }));
  }
  if (view.canJoin) block.append(joinForm(doc, account, { t, idPrefix, error }));
  return block;
}

/**
 * Re-rendering replaces the code fields: keep what the user typed, and the caret of the one being
 * typed in. Call before replacing; call the returned function after.
 */
export function keepTypedCodes(root) {
  const typed = new Map();
  let caret = null;
  for (const input of root.querySelectorAll("input.code-input")) {
    typed.set(input.dataset.account, input.value);
    if (input === root.ownerDocument.activeElement) {
      caret = { account: input.dataset.account, start: input.selectionStart, end: input.selectionEnd };
    }
  }
  return () => {
    for (const input of root.querySelectorAll("input.code-input")) {
      if (typed.has(input.dataset.account)) input.value = typed.get(input.dataset.account);
      if (caret && caret.account === input.dataset.account) {
        input.focus();
        input.setSelectionRange(caret.start, caret.end);
      }
    }
  };
}
