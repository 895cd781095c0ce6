/**
 * The realtime client: one WebSocket to one bridge, shared by every subscription of the page.
 * It composes the connection (`socket.ts`: open lazily, reconnect with backoff, keepalive,
 * linger), the feeds (`feeds.ts`: run and stream subscriptions) and the requests
 * (`requests.ts`: input-stream sends and token completions), and routes the server's frames
 * between them.
 */
import { RealtimeError } from "./errors.js";
import { EMPTY_STATE, StreamFeed, type FeedListener, type StreamListener } from "./feed.js";
import {
  Feeds,
  type FeedSubscription,
  type StreamSubscribeOptions,
  type StreamSubscription,
  type SubscribeOptions,
} from "./feeds.js";
import type { FeedSpec, ServerFrame, StreamSpec } from "./protocol.js";
import { newIdempotencyKey, Requests, type SendInputResult } from "./requests.js";
import { Socket, type WebSocketConstructor } from "./socket.js";

export type { FeedListener, FeedState, StreamListener, StreamState } from "./feed.js";
export type { FeedSubscription, StreamSubscribeOptions, StreamSubscription, SubscribeOptions } from "./feeds.js";
export type { SendInputResult } from "./requests.js";
export type { WebSocketConstructor, WebSocketLike } from "./socket.js";

export type RealtimeClientOptions = {
  /** WebSocket implementation; default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** How long the socket stays open after the last subscription goes away. Default 1000 ms. */
  socketLingerMs?: number;
  /** How long a feed without listeners is kept subscribed. Default 100 ms. */
  subscriptionLingerMs?: number;
  /** First reconnect delay cap; doubles per failed attempt. Default 250 ms. */
  reconnectInitialDelayMs?: number;
  /** Reconnect delay cap. Default 10 000 ms. */
  reconnectMaxDelayMs?: number;
  /** A connection open this long resets the backoff. Default 5000 ms. */
  stableConnectionMs?: number;
  /** Random source for the jitter, in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Interval of `ping` frames; 0 turns them off. Default 25 000 ms. */
  pingIntervalMs?: number;
  /** No frame for this long after a ping: the connection is dead, reconnect. Default 10 000 ms. */
  pongTimeoutMs?: number;
  /**
   * Feeds that never got a snapshot show a `connection_failed` error after this many
   * consecutive failed connection attempts (reconnecting goes on). Default 3.
   */
  connectionErrorAfterAttempts?: number;
};

export class RealtimeClient {
  readonly url: string;
  private readonly socket: Socket;
  private readonly feeds: Feeds;
  private readonly requests: Requests;

  constructor(url: string, options: RealtimeClientOptions = {}) {
    this.url = url;
    this.socket = new Socket(
      url,
      {
        WebSocket: options.WebSocket,
        socketLingerMs: options.socketLingerMs ?? 1000,
        reconnectInitialDelayMs: options.reconnectInitialDelayMs ?? 250,
        reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 10_000,
        stableConnectionMs: options.stableConnectionMs ?? 5000,
        random: options.random ?? Math.random,
        pingIntervalMs: options.pingIntervalMs ?? 25_000,
        pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
        connectionErrorAfterAttempts: options.connectionErrorAfterAttempts ?? 3,
      },
      {
        held: () => this.feeds.held || this.requests.size > 0,
        needed: () => this.requests.size > 0 || this.feeds.needSocket,
        opened: () => {
          this.feeds.onOpen();
          this.requests.onOpen();
        },
        frame: (frame) => this.route(frame),
        closed: (connectionError) => {
          this.requests.onClose();
          this.feeds.onClose(connectionError);
          // Requests waiting for a socket fail too: the caller may try again.
          if (connectionError) this.requests.rejectAll(connectionError);
        },
        failed: (error) => {
          this.requests.rejectAll(error);
          this.feeds.failAll(error);
        },
      },
    );
    this.feeds = new Feeds(this.socket, options.subscriptionLingerMs ?? 100);
    this.requests = new Requests(this.socket);
  }

  /**
   * Follows a feed with a token. On the server side of SSR (no `window`) this does nothing.
   * The listener is called on every change after this call returns; read the state at
   * subscription time with `getState()`.
   */
  subscribe(
    spec: FeedSpec,
    token: string,
    listener: FeedListener,
    options: SubscribeOptions = {},
  ): FeedSubscription {
    if (!this.usable) return { getState: () => EMPTY_STATE, unsubscribe: () => {} };
    return this.feeds.subscribe(spec, token, listener, options);
  }

  /**
   * Reads an output stream of a run: every chunk from `spec.startIndex`, once and in index order,
   * across reconnects (the subscription resumes at its next index). Listeners of the same stream
   * (same run, key, start index, timeout and token) share one server subscription and its chunks;
   * it keeps only the last `maxParts` chunks while every listener sets that bound.
   * On the server side of SSR this does nothing.
   */
  subscribeStream(
    spec: StreamSpec,
    token: string,
    listener: StreamListener,
    options: StreamSubscribeOptions = {},
  ): StreamSubscription {
    if (!this.usable) {
      const empty = new StreamFeed("", spec, token).state;
      return { getState: () => empty, unsubscribe: () => {} };
    }
    return this.feeds.subscribeStream(spec, token, listener, options);
  }

  /**
   * Sends `data` to input stream `streamId` of run `runId` (a `send` frame with `token`).
   * Resolves once the bridge acknowledged it (the value is stored); rejects with a
   * `RealtimeError` carrying the bridge's code (`unauthorized`, `forbidden`, `not_found`,
   * `run_finished`, `payload_too_large`, `invalid_request`, ...).
   *
   * A send waits for the socket if it is not open yet. Every send carries an idempotency key
   * (`options.idempotencyKey`, else a fresh UUID): a send written to a socket that then closes
   * before the `ack` goes out again on the next one with the same key, and the bridge stores it
   * once (a repeated key is acknowledged with the first index). After 3 lost connections it
   * rejects with code `connection_lost` (the value may or may not have been stored; sending again
   * with the same `idempotencyKey` is safe).
   */
  sendInput(
    runId: string,
    streamId: string,
    data: unknown,
    token: string,
    options?: { idempotencyKey?: string },
  ): Promise<SendInputResult> {
    if (!this.usable) return this.unusable("send");
    return this.requests.sendInput(runId, streamId, data, token, options?.idempotencyKey ?? newIdempotencyKey());
  }

  /**
   * Completes wait token `tokenId` with `data` (a `complete` frame with `token`, which needs
   * `write:waitpoints:<tokenId>`); `undefined` goes as `null`, since the frame must carry `data`.
   * Resolves once the bridge stored the completion; rejects with a `RealtimeError` carrying the
   * bridge's code (`unauthorized`, `forbidden`, `not_found`, `payload_too_large`,
   * `invalid_request`, ...).
   *
   * Completing is idempotent on the bridge (a completed token answers `ack` again and keeps its
   * first output), so, like a send (by its idempotency key), a completion whose socket closes
   * before the `ack` goes out again on the next one. After 3 lost connections it rejects with
   * `connection_lost`.
   */
  completeToken(tokenId: string, data: unknown, token: string): Promise<void> {
    if (!this.usable) return this.unusable("complete");
    return this.requests.completeToken(tokenId, data, token);
  }

  /** Number of requests (input-stream sends, token completions) waiting for their answer. */
  get pendingSendCount(): number {
    return this.requests.size;
  }

  /** Number of stream subscriptions this client holds. */
  get streamCount(): number {
    return this.feeds.streamCount;
  }

  /** Number of feeds (server subscriptions, live or being set up) this client holds. */
  get feedCount(): number {
    return this.feeds.feedCount;
  }

  /** Closes the socket and forgets every feed. The client can't be used afterwards. */
  close(): void {
    this.feeds.clear();
    this.requests.rejectAll(new RealtimeError("connection_failed", "the realtime client was closed"));
    this.socket.close();
  }

  /** False on the server side of SSR (no `window`) and once closed. */
  private get usable(): boolean {
    return typeof window !== "undefined" && !this.socket.closed;
  }

  private unusable(type: string): Promise<never> {
    return Promise.reject(
      new RealtimeError("connection_failed", `cannot send a ${type} frame: no realtime client here`),
    );
  }

  private route(frame: ServerFrame): void {
    switch (frame.type) {
      case "snapshot":
        this.feeds.onSnapshot(frame);
        break;
      case "update":
        this.feeds.onUpdate(frame);
        break;
      case "chunk":
        this.feeds.onChunk(frame);
        break;
      case "end":
        this.feeds.onEnd(frame);
        break;
      case "error":
        if (!this.requests.onError(frame)) this.feeds.onError(frame);
        break;
      case "ack":
        this.requests.onAck(frame);
        break;
      case "welcome":
        this.requests.setMaxFrameBytes(frame.limits?.maxFrameBytes);
        break;
      default:
        // pong, unsubscribed: nothing to do.
        break;
    }
  }
}
