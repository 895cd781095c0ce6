/**
 * Watches the page's WebSockets so the header can show the connection and the "Ten hooks" page
 * can show that every hook shares one socket. It is handed to the hooks through their public
 * option (`configureRealtimeClients({ WebSocket })`); it only observes, and changes nothing.
 */
import { useSyncExternalStore } from "react";

export type ConnectionState = "idle" | "connecting" | "live" | "reconnecting";
export type SocketStats = {
  /** WebSockets this page created since it loaded. */
  opened: number;
  /** WebSockets open right now. */
  open: number;
  state: ConnectionState;
};

let stats: SocketStats = { opened: 0, open: 0, state: "idle" };
const listeners = new Set<() => void>();

function update(change: Partial<SocketStats>): void {
  stats = { ...stats, ...change };
  for (const listener of listeners) listener();
}

export class MonitoredWebSocket extends WebSocket {
  private closedByPage = false;
  private wasOpen = false;

  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    update({
      opened: stats.opened + 1,
      state: stats.open > 0 ? "live" : stats.state === "reconnecting" ? "reconnecting" : "connecting",
    });
    this.addEventListener("open", () => {
      this.wasOpen = true;
      update({ open: stats.open + 1, state: "live" });
    });
    this.addEventListener("close", () => {
      const open = stats.open - (this.wasOpen ? 1 : 0);
      // Closed by the page: nothing needs it any more. Otherwise the hooks will reconnect.
      update({ open, state: open > 0 ? "live" : this.closedByPage ? "idle" : "reconnecting" });
    });
  }

  override close(code?: number, reason?: string): void {
    this.closedByPage = true;
    super.close(code, reason);
  }
}

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useSocketStats(): SocketStats {
  return useSyncExternalStore(subscribe, () => stats);
}
