// Options page: a placeholder until account setup exists.

import { localizeDocument } from "../lib/i18n_dom.js";

const api = globalThis.messenger ?? globalThis.browser;
localizeDocument(document, (key) => api.i18n.getMessage(key));
