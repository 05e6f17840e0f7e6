// Background page: owns the one native port and answers the popup's and options page's messages.

import { NativeClient, Status } from "../lib/native_client.js";
import { getOrCreateInstanceId } from "../lib/instance_id.js";

const api = globalThis.messenger ?? globalThis.browser;
const PING_TIMEOUT_MS = 5000;
// The client sends hello itself; letting a page send another could rebind the host to a different instance.
const METHODS_RESERVED_FOR_CLIENT = new Set(["hello"]);

const clientReady = startClient();

async function startClient() {
  const instanceId = await getOrCreateInstanceId(api.storage.local);
  const client = new NativeClient({
    connect: (hostName) => api.runtime.connectNative(hostName),
    instanceId,
    onStatus: (status, { lastError }) => {
      console.info("autocrypt-sma: native host", status, lastError?.message ?? "");
      if (status === Status.CONNECTED) pingHost(client);
    },
    onError: (err) => console.warn("autocrypt-sma: native host error", err.code, err.message),
  });
  client.start();
  return client;
}

// A ping right after hello checks the host answers a plain request, not only the handshake.
async function pingHost(client) {
  try {
    await client.request("ping", {}, { timeoutMs: PING_TIMEOUT_MS });
  } catch (err) {
    console.warn("autocrypt-sma: ping failed", err.code, err.message);
  }
}

function statusReply(client) {
  const info = client.hostInfo ?? {};
  return {
    status: client.status,
    host_version: info.host_version ?? null,
    protocol_version: info.protocol_version ?? null,
    last_error: client.lastError,
  };
}

// Errors travel as data: an Error thrown across runtime.sendMessage loses its `code`.
async function forwardCall(client, method, params) {
  if (typeof method !== "string" || METHODS_RESERVED_FOR_CLIENT.has(method)) {
    return { ok: false, error: { code: "invalid_method", message: `method not allowed: ${method}` } };
  }
  try {
    return { ok: true, result: await client.request(method, params ?? {}) };
  } catch (err) {
    return { ok: false, error: { code: err.code ?? "internal", message: err.message } };
  }
}

async function handleMessage(message) {
  const client = await clientReady;
  switch (message.type) {
    case "status":
      return statusReply(client);
    case "reconnect":
      client.reconnectNow();
      return statusReply(client);
    case "call":
      return forwardCall(client, message.method, message.params);
    default:
      return { ok: false, error: { code: "unknown_type", message: `unknown message type: ${message.type}` } };
  }
}

api.runtime.onMessage.addListener((message, sender) => {
  // Only our own pages may drive the host; there are no content scripts, so anything else is foreign.
  if (sender.id !== api.runtime.id || typeof message !== "object" || message === null) return undefined;
  return handleMessage(message);
});
