/**
 * The requests that ride the socket (`send` to an input stream, `complete` a wait token): each
 * settles with the `ack` or `error` frame of its id. Each frame is serialised once, checked
 * against the bridge's frame limit, and that text is what goes out, also when written again.
 */
import { RealtimeError } from "./errors.js";
import type { AckFrame, CompleteFrame, ErrorFrame, SendFrame } from "./protocol.js";
import type { Socket } from "./socket.js";

/** What the bridge answered to an input-stream `send`: the value is stored at `index`. */
export type SendInputResult = { index: number };

/**
 * A fresh idempotency key for one input-stream send: `crypto.randomUUID()` where available, else
 * 128 random bits from `crypto.getRandomValues`, else (no Web Crypto at all) from `Math.random`.
 */
export function newIdempotencyKey(crypto: Partial<Crypto> | undefined = (globalThis as { crypto?: Crypto }).crypto): string {
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof crypto?.getRandomValues === "function") crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** A request frame waiting for its `ack` or `error`. */
type PendingRequest = {
  /** The frame, serialised. */
  text: string;
  /** True once the frame went out on the current socket. */
  sent: boolean;
  /** How many sockets the frame went out on. */
  writes: number;
  /**
   * Idempotent requests (a `complete`, a `send` with its idempotency key) go out again on the next
   * socket when theirs closes before the answer, up to `MAX_REQUEST_WRITES` times; others fail with
   * `connection_lost`.
   */
  resend: boolean;
  /** The `connection_lost` message: what the caller may have lost. */
  lostMessage: string;
  resolve: (ack: AckFrame) => void;
  reject: (error: Error) => void;
};

/** A request that goes out again after a lost connection stops after this many writes. */
const MAX_REQUEST_WRITES = 3;

/**
 * The bridge's limit on a client frame (a `send` or `complete` frame carries a value of up to 1 MiB), until
 * its `welcome` frame says otherwise. A larger frame would close the whole connection (1009).
 */
const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024 + 16 * 1024;

export class Requests {
  private readonly pending = new Map<string, PendingRequest>();
  private nextRequest = 1;
  private maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;

  constructor(private readonly socket: Socket) {}

  /** Number of requests waiting for their answer. */
  get size(): number {
    return this.pending.size;
  }

  /** The `welcome` frame's frame limit. */
  setMaxFrameBytes(limit: unknown): void {
    if (typeof limit === "number" && Number.isFinite(limit) && limit > 0) this.maxFrameBytes = limit;
  }

  /** See `RealtimeClient.sendInput`. */
  sendInput(
    runId: string,
    streamId: string,
    data: unknown,
    token: string,
    idempotencyKey: string = newIdempotencyKey(),
  ): Promise<SendInputResult> {
    // `undefined` goes as `null`: the frame must carry `data` (JSON would drop the field).
    const value = data === undefined ? null : data;
    const id = `x${this.nextRequest++}`;
    const frame: SendFrame = { type: "send", id, runId, streamId, data: value, idempotencyKey, token };
    // With its key, the frame written again after a lost connection is stored once: it goes again.
    return this.request(
      frame,
      true,
      `the connection closed ${MAX_REQUEST_WRITES} times before the bridge acknowledged the value: it may or may not have been stored`,
    ).then((ack) => ({ index: typeof ack.index === "number" ? ack.index : -1 }));
  }

  /** See `RealtimeClient.completeToken`. */
  completeToken(tokenId: string, data: unknown, token: string): Promise<void> {
    const frame: CompleteFrame = {
      type: "complete",
      id: `c${this.nextRequest++}`,
      tokenId,
      data: data === undefined ? null : data,
      token,
    };
    return this.request(
      frame,
      true,
      `the connection closed ${MAX_REQUEST_WRITES} times before the bridge acknowledged the completion`,
    ).then(() => undefined);
  }

  onAck(frame: AckFrame): void {
    this.settle(frame.id)?.resolve(frame);
  }

  /** Rejects the request `frame.id` names; false if it names none (e.g. a subscription's). */
  onError(frame: ErrorFrame): boolean {
    const request = this.settle(frame.id);
    request?.reject(new RealtimeError(String(frame.code), String(frame.message ?? frame.code)));
    return request !== undefined;
  }

  /** A socket opened: requests not out on a socket go now (new ones, and resent sends and completions). */
  onOpen(): void {
    for (const pending of Array.from(this.pending.values())) {
      if (!pending.sent) this.write(pending);
    }
  }

  /**
   * The socket closed. A request written to it may or may not have been stored: both kinds are
   * idempotent (a completion by nature, a send by its idempotency key), so each goes again on the
   * next socket, the same frame text (same id and key), a few times.
   */
  onClose(): void {
    for (const [id, pending] of Array.from(this.pending)) {
      if (!pending.sent) continue;
      pending.sent = false;
      if (pending.resend && pending.writes < MAX_REQUEST_WRITES) continue;
      this.pending.delete(id);
      pending.reject(new RealtimeError("connection_lost", pending.lostMessage));
    }
  }

  rejectAll(error: RealtimeError): void {
    for (const [id, pending] of Array.from(this.pending)) {
      this.pending.delete(id);
      pending.reject(error);
    }
  }

  /**
   * Writes a request frame (now, or once the socket is open) and settles with its answer: the
   * `ack` frame, or a `RealtimeError` with the `error` frame's code. A frame that is not JSON or
   * is over the bridge's frame limit is refused here: sent, it would close the whole connection.
   */
  private request(frame: SendFrame | CompleteFrame, resend: boolean, lostMessage: string): Promise<AckFrame> {
    let text: string;
    try {
      text = JSON.stringify(frame);
    } catch (error) {
      return Promise.reject(
        new RealtimeError("invalid_request", `the value is not JSON: ${error instanceof Error ? error.message : String(error)}`),
      );
    }
    if (text === undefined || utf8Length(text) > this.maxFrameBytes) {
      return Promise.reject(
        new RealtimeError(
          "payload_too_large",
          `the ${frame.type} frame is over the bridge's ${this.maxFrameBytes} byte frame limit (values are at most 1 MiB)`,
        ),
      );
    }
    return new Promise<AckFrame>((resolve, reject) => {
      const pending: PendingRequest = { text, sent: false, writes: 0, resend, lostMessage, resolve, reject };
      this.pending.set(frame.id, pending);
      this.socket.hold();
      if (this.socket.open) this.write(pending);
      else this.socket.ensureConnected();
    });
  }

  private write(pending: PendingRequest): void {
    if (!this.socket.writable) return;
    pending.sent = true;
    pending.writes++;
    this.socket.sendText(pending.text);
  }

  /** Forgets the request `id` names (an `error` frame's may be null) and returns it. */
  private settle(id: string | null): PendingRequest | undefined {
    const pending = id === null ? undefined : this.pending.get(id);
    if (!pending) return undefined;
    this.pending.delete(id!);
    this.socket.release();
    return pending;
  }
}

function utf8Length(text: string): number {
  return typeof TextEncoder !== "undefined" ? new TextEncoder().encode(text).length : text.length * 3;
}
