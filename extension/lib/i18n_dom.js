// Fills a page's static text from _locales, so the HTML itself carries no visible strings.

/** Set the text of every `[data-i18n]` element to the message it names. */
export function localizeDocument(doc, getMessage) {
  for (const el of doc.querySelectorAll("[data-i18n]")) {
    el.textContent = getMessage(el.dataset.i18n);
  }
}
