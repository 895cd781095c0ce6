import { RealtimeClient, type RealtimeClientOptions } from "./RealtimeClient.js";

const clients = new Map<string, RealtimeClient>();
let defaults: RealtimeClientOptions = {};

/**
 * Sets options for the shared clients created from now on (a WebSocket implementation, lingers,
 * backoff, keepalive). Clients that already exist keep theirs; call `resetRealtimeClients()`
 * first to apply new options everywhere.
 */
export function configureRealtimeClients(options: RealtimeClientOptions): void {
  defaults = { ...defaults, ...options };
}

/** The WebSocket URL of a bridge: its base URL with http(s) -> ws(s) and `/ws` appended. */
export function toWebSocketURL(baseURL: string): string {
  const base =
    typeof window !== "undefined" && window.location && window.location.href
      ? window.location.href
      : undefined;
  const url = new URL(baseURL, base);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new Error(`Invalid baseURL ${JSON.stringify(baseURL)}: use an http(s) URL`);
  }
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/ws`;
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** The one shared client (and so the one WebSocket) of a bridge. */
export function getRealtimeClient(baseURL: string): RealtimeClient {
  const url = toWebSocketURL(baseURL);
  let client = clients.get(url);
  if (!client) {
    client = new RealtimeClient(url, defaults);
    clients.set(url, client);
  }
  return client;
}

/** Closes every shared client and its socket (tests, or a logout that must drop all feeds). */
export function resetRealtimeClients(): void {
  for (const client of clients.values()) client.close();
  clients.clear();
}
