/**
 * The connection: one WebSocket, opened when something needs it, reopened after a loss with
 * exponential backoff and full jitter (or at once when the browser comes back online), kept
 * alive with pings, and closed a linger after the last user let go. It knows frames only as
 * text out and parsed objects in; the feeds and requests make sense of them.
 */
import { RealtimeError } from "./errors.js";
import type { ClientFrame, ServerFrame } from "./protocol.js";

/** The constructor of a WHATWG WebSocket (the browser's, jsdom's, undici's or the `ws` package's). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type WebSocketLike = {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: any) => void) | null;
};

export type SocketOptions = {
  WebSocket?: WebSocketConstructor;
  socketLingerMs: number;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
  stableConnectionMs: number;
  random: () => number;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  connectionErrorAfterAttempts: number;
};

/** What the socket asks of, and tells, its owner. */
export type SocketEvents = {
  /** Anything subscribed or waiting for an answer: while true, the linger does not close. */
  held(): boolean;
  /** Anything that still wants a connection: opens and reopens only while true. */
  needed(): boolean;
  opened(): void;
  frame(frame: ServerFrame): void;
  /**
   * The socket closed (or was given up as dead). `connectionError` is set once
   * `connectionErrorAfterAttempts` attempts in a row failed to open.
   */
  closed(connectionError: RealtimeError | undefined): void;
  /** No socket can be made here at all. */
  failed(error: RealtimeError): void;
};

const OPEN = 1;

export class Socket {
  private ws: WebSocketLike | null = null;
  private wsOpen = false;
  private openedAt = 0;
  private attempt = 0;
  private failedAttempts = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private lingerTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private nextPing = 1;
  private onlineListener: (() => void) | undefined;
  private isClosed = false;

  constructor(
    readonly url: string,
    private readonly options: SocketOptions,
    private readonly events: SocketEvents,
  ) {}

  /** True between the socket's `open` and its close. */
  get open(): boolean {
    return this.wsOpen;
  }

  /** True once `close()` was called: the socket never opens again. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** True when a frame written now goes out on the open socket. */
  get writable(): boolean {
    return !!this.ws && this.wsOpen && this.ws.readyState === OPEN;
  }

  /** Opens a socket unless one is open, opening, or waiting out its backoff. */
  ensureConnected(): void {
    if (this.ws || this.reconnectTimer !== undefined || this.isClosed) return;
    this.connect();
  }

  /** Someone holds the socket: it must not close for lack of users. */
  hold(): void {
    if (this.lingerTimer !== undefined) clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  /** Someone let go: if nothing is held any more, close after `socketLingerMs`. */
  release(): void {
    if (this.events.held()) return;
    this.hold();
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      if (this.events.held()) return;
      this.cancelReconnect();
      this.closeSocket(1000, "no subscriptions");
    }, this.options.socketLingerMs);
  }

  /** Writes an already serialised frame if the socket is open; false if it is not. */
  sendText(text: string): boolean {
    if (!this.writable) return false;
    try {
      this.ws!.send(text);
    } catch {
      // The close event follows and deals with it (it may have gone out).
    }
    return true;
  }

  send(frame: ClientFrame): boolean {
    return this.sendText(JSON.stringify(frame));
  }

  /** The full-jitter delay of retry `attempt` (0-based): random() times the doubling cap. */
  backoffDelay(attempt: number): number {
    const cap = Math.min(
      this.options.reconnectMaxDelayMs,
      this.options.reconnectInitialDelayMs * 2 ** Math.min(attempt, 30),
    );
    return Math.floor(this.options.random() * cap);
  }

  /** Closes the socket for good. */
  close(): void {
    this.isClosed = true;
    this.hold();
    this.cancelReconnect();
    this.closeSocket(1000, "client closed");
  }

  private connect(): void {
    this.cancelReconnect();
    if (this.isClosed || !this.events.needed()) return;
    const Impl =
      this.options.WebSocket ??
      ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket as
        | WebSocketConstructor
        | undefined);
    if (!Impl) {
      this.events.failed(
        new RealtimeError("connection_failed", "no WebSocket implementation in this environment"),
      );
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Impl(this.url);
    } catch (error) {
      this.events.failed(
        new RealtimeError(
          "connection_failed",
          `cannot open ${this.url}: ${error instanceof Error ? error.message : String(error)}`,
        ),
      );
      return;
    }
    this.ws = ws;
    this.wsOpen = false;
    ws.onopen = () => {
      if (this.ws === ws) this.onOpen();
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.onMessage(event.data);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.onClose();
    };
    ws.onerror = () => {
      // onclose follows and does the work.
    };
  }

  private onOpen(): void {
    this.wsOpen = true;
    this.openedAt = Date.now();
    this.failedAttempts = 0;
    this.startPing();
    this.events.opened();
    this.release();
  }

  private onMessage(data: unknown): void {
    // Any frame shows the connection is alive.
    this.clearPongTimer();
    let text: string;
    if (typeof data === "string") text = data;
    else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      text = new TextDecoder().decode(data as ArrayBuffer);
    } else return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    if (frame && typeof frame === "object") this.events.frame(frame);
  }

  private onClose(): void {
    const wasOpen = this.wsOpen;
    this.ws = null;
    this.wsOpen = false;
    this.stopPing();
    if (wasOpen && Date.now() - this.openedAt >= this.options.stableConnectionMs) this.attempt = 0;
    if (!wasOpen) this.failedAttempts++;
    const connectionError =
      this.failedAttempts >= this.options.connectionErrorAfterAttempts
        ? new RealtimeError("connection_failed", `cannot connect to ${this.url}; retrying`)
        : undefined;
    this.events.closed(connectionError);
    if (this.events.needed()) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== undefined || this.isClosed) return;
    const delay = this.backoffDelay(this.attempt++);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.removeOnlineListener();
      this.connect();
    }, delay);
    if (typeof window !== "undefined" && typeof window.addEventListener === "function") {
      this.removeOnlineListener();
      this.onlineListener = () => {
        // The network is back: don't wait out the backoff.
        if (this.reconnectTimer !== undefined) this.connect();
        this.removeOnlineListener();
      };
      window.addEventListener("online", this.onlineListener);
    }
  }

  private cancelReconnect(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.removeOnlineListener();
  }

  private removeOnlineListener(): void {
    if (this.onlineListener && typeof window !== "undefined") {
      window.removeEventListener("online", this.onlineListener);
    }
    this.onlineListener = undefined;
  }

  private closeSocket(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = null;
    this.wsOpen = false;
    this.stopPing();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  private startPing(): void {
    this.stopPing();
    if (this.options.pingIntervalMs <= 0) return;
    this.pingTimer = setInterval(() => {
      if (!this.wsOpen) return;
      this.send({ type: "ping", id: `p${this.nextPing++}` });
      if (this.pongTimer === undefined) {
        this.pongTimer = setTimeout(() => {
          this.pongTimer = undefined;
          // Nothing came back: the connection is dead though the socket may not know it yet.
          const ws = this.ws;
          this.ws = null;
          try {
            ws?.close(4000, "keepalive timeout");
          } catch {
            // ignore
          }
          this.onClose();
        }, this.options.pongTimeoutMs);
      }
    }, this.options.pingIntervalMs);
  }

  private clearPongTimer(): void {
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  private stopPing(): void {
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.clearPongTimer();
  }
}
