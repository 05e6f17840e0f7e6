// Background page: builds the one Background (controller.js) on the real `messenger` API.

import { Background } from "./controller.js";

const api = globalThis.messenger ?? globalThis.browser;
const ready = new Background(api).start();

api.runtime.onMessage.addListener((message, sender) => {
  // Only our own pages may drive the host; there are no content scripts, so anything else is foreign.
  if (sender.id !== api.runtime.id || typeof message !== "object" || message === null) return undefined;
  return ready.then((background) => background.handleMessage(message));
});
