/**
 * The socket manager: one WebSocket to one bridge, shared by every subscription of the page.
 *
 * - The socket opens lazily on the first subscription and closes `socketLingerMs` after the last
 *   one goes away. A subscription released by its last listener lingers `subscriptionLingerMs`
 *   first, so React StrictMode's unmount/remount reuses it instead of unsubscribing and
 *   subscribing again.
 * - Listeners of the same feed with the same token share one server subscription (a "feed").
 *   Each feed sends its own token.
 * - A lost connection is reopened with exponential backoff and full jitter, and every live feed
 *   subscribes again; the new `snapshot` replaces what the feed held.
 * - Per run, the state with the highest `version` wins; updates that arrive before a snapshot
 *   (the protocol allows it) are kept and merged into it.
 * - Requests (`send`, `complete`) ride the same socket and settle with the `ack` or `error` of
 *   their id; only an idempotent one (`complete`) is written again after a lost connection.
 */
import { parseDurationSeconds, DEFAULT_TAG_WINDOW } from "./duration.js";
import { RealtimeError } from "./errors.js";
import {
  type AckFrame,
  type ClientFrame,
  type ErrorFrame,
  type FeedSpec,
  type ServerFrame,
  type ChunkFrame,
  type CompleteFrame,
  type EndFrame,
  type SnapshotFrame,
  type StreamSpec,
  type SendFrame,
  type SubscribeFrame,
  type UpdateFrame,
  type WireRun,
  feedKey,
  isWireRun,
  normalizeTags,
  streamKey,
  topicOf,
} from "./protocol.js";

/** What a feed holds, handed to its listeners on every change. Immutable. */
export type FeedState = {
  /** The feed's runs, in the order they were first seen. */
  readonly runs: readonly WireRun[];
  /** The last error of the feed's subscription, until the next snapshot. */
  readonly error: Error | undefined;
  /** True once the feed received a snapshot. */
  readonly synced: boolean;
};

export type FeedListener = (state: FeedState) => void;

export type FeedSubscription = {
  /** The feed's current state (also right after subscribing, when the feed was already live). */
  getState(): FeedState;
  /** Stops delivering to this listener; the feed itself goes after a short linger. Idempotent. */
  unsubscribe(): void;
};

/** What a stream subscription holds, handed to its listeners on every change. Immutable. */
export type StreamState = {
  /** The index of `chunks[0]`: the subscription's start index. */
  readonly startIndex: number;
  /**
   * The chunks received, in index order, each exactly once: `chunks[i]` is chunk
   * `startIndex + i`. This is the subscription's own append-only array (not copied on every
   * chunk): the first `count` entries are this state's; copy them to keep them.
   */
  readonly chunks: readonly unknown[];
  /** When each chunk was received (ms since the epoch), parallel to `chunks`. */
  readonly receivedAt: readonly number[];
  /** How many chunks this state holds: `nextIndex - startIndex`. */
  readonly count: number;
  /** The next index wanted: `startIndex + chunks.length`. */
  readonly nextIndex: number;
  /** True once the server ended the subscription (`end` frame). */
  readonly done: boolean;
  /** Why it ended: `finished` (the run finished, every chunk sent) or `timeout`. */
  readonly endReason: string | undefined;
  /** The last error of the subscription. */
  readonly error: Error | undefined;
};

export type StreamListener = (state: StreamState) => void;

export type StreamSubscription = {
  getState(): StreamState;
  unsubscribe(): void;
};

export type SubscribeOptions = {
  /**
   * Called when the server rejects the subscription's token (`token_expired`, `unauthorized`,
   * `forbidden`): its result is used to subscribe again, once per snapshot received.
   */
  refreshAccessToken?: () => Promise<string>;
};

/** What the bridge answered to an input-stream `send`: the value is stored at `index`. */
export type SendInputResult = { index: number };

/** A request frame (`send`, `complete`) waiting for its `ack` or `error`. */
type PendingRequest = {
  frame: SendFrame | CompleteFrame;
  /** True once the frame went out on the current socket. */
  sent: boolean;
  /** How many sockets the frame went out on. */
  writes: number;
  /**
   * Idempotent requests (`complete`) go out again on the next socket when theirs closes before
   * the answer, up to `MAX_REQUEST_WRITES` times; others fail with `connection_lost`.
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

type Phase =
  /** Not subscribed on the current socket: subscribes when a socket opens. */
  | "idle"
  /** Subscribe sent, snapshot not yet received. */
  | "pending"
  /** Snapshot received; updates flow. */
  | "live"
  /** Waiting for a fresh token. */
  | "refreshing"
  /** `backend_unavailable`: will subscribe again after a delay. */
  | "retrying"
  /** Ended by an error; no longer subscribed. */
  | "failed"
  /** A stream subscription the server ended (`end` frame); no longer subscribed. */
  | "ended";

const AUTH_ERROR_CODES = new Set(["token_expired", "unauthorized", "forbidden"]);
const OPEN = 1;

const EMPTY_STATE: FeedState = Object.freeze({
  runs: Object.freeze([]) as readonly WireRun[],
  error: undefined,
  synced: false,
});

/** What run feeds and stream subscriptions have in common: a server subscription and its lifecycle. */
abstract class BaseFeed {
  phase: Phase = "idle";
  sid: string | undefined;
  error: Error | undefined;
  synced = false;
  releaseTimer: ReturnType<typeof setTimeout> | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  retryAttempt = 0;
  authRefreshed = false;
  refreshAccessToken: (() => Promise<string>) | undefined;
  abstract readonly key: string;
  abstract token: string;
  abstract readonly listeners: Set<unknown>;
}

class StreamFeed extends BaseFeed {
  readonly listeners = new Set<StreamListener>();
  readonly startIndex: number;
  readonly chunks: unknown[] = [];
  readonly receivedAt: number[] = [];
  done = false;
  endReason: string | undefined;
  state: StreamState;

  constructor(
    readonly key: string,
    readonly spec: StreamSpec,
    public token: string,
  ) {
    super();
    this.startIndex = Math.max(0, Math.floor(spec.startIndex ?? 0));
    this.state = Object.freeze({
      startIndex: this.startIndex,
      chunks: this.chunks,
      receivedAt: this.receivedAt,
      count: 0,
      nextIndex: this.startIndex,
      done: false,
      endReason: undefined,
      error: undefined,
    });
  }

  get nextIndex(): number {
    return this.startIndex + this.chunks.length;
  }
}

class Feed extends BaseFeed {
  readonly listeners = new Set<FeedListener>();
  /** The topic updates of this feed arrive on: computed, then as the snapshot names it. */
  topic: string;
  runs = new Map<string, WireRun>();
  /** Runs from updates since the last snapshot (or subscribe): merged into the next snapshot. */
  readonly sinceSnapshot = new Map<string, WireRun>();
  /** Tags feeds: runs created before this instant are outside the window. */
  cutoffMs: number | undefined;
  state: FeedState = EMPTY_STATE;

  constructor(
    readonly key: string,
    readonly spec: FeedSpec,
    public token: string,
  ) {
    super();
    this.topic = topicOf(spec);
  }
}

const pendingRefreshes = new Map<() => Promise<string>, Promise<string>>();

/** Calls `refresh`, sharing one call among everyone asking at the same time. */
function refreshOnce(refresh: () => Promise<string>): Promise<string> {
  let pending = pendingRefreshes.get(refresh);
  if (!pending) {
    pending = Promise.resolve()
      .then(refresh)
      .finally(() => pendingRefreshes.delete(refresh));
    pendingRefreshes.set(refresh, pending);
  }
  return pending;
}

function reportListenerError(error: unknown): void {
  // Surface a listener's exception without breaking the client's own state.
  setTimeout(() => {
    throw error;
  }, 0);
}

/** Hands a new state to each listener still attached; one failing listener stops no other. */
function notifyListeners<S>(listeners: Set<(state: S) => void>, state: S): void {
  for (const listener of Array.from(listeners)) {
    if (!listeners.has(listener)) continue;
    try {
      listener(state);
    } catch (error) {
      reportListenerError(error);
    }
  }
}

export class RealtimeClient {
  readonly url: string;
  private readonly options: Required<Omit<RealtimeClientOptions, "WebSocket">> & {
    WebSocket?: WebSocketConstructor;
  };
  private ws: WebSocketLike | null = null;
  private wsOpen = false;
  private openedAt = 0;
  private attempt = 0;
  private failedAttempts = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private lingerTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private nextSid = 1;
  private nextPing = 1;
  private closed = false;
  private readonly feeds = new Map<string, Feed>();
  private readonly streams = new Map<string, StreamFeed>();
  private readonly bySid = new Map<string, Feed | StreamFeed>();
  private readonly byTopic = new Map<string, Set<Feed>>();
  private readonly requests = new Map<string, PendingRequest>();
  private nextRequest = 1;
  private maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  private onlineListener: (() => void) | undefined;

  constructor(url: string, options: RealtimeClientOptions = {}) {
    this.url = url;
    this.options = {
      WebSocket: options.WebSocket,
      socketLingerMs: options.socketLingerMs ?? 1000,
      subscriptionLingerMs: options.subscriptionLingerMs ?? 100,
      reconnectInitialDelayMs: options.reconnectInitialDelayMs ?? 250,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 10_000,
      stableConnectionMs: options.stableConnectionMs ?? 5000,
      random: options.random ?? Math.random,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      connectionErrorAfterAttempts: options.connectionErrorAfterAttempts ?? 3,
    };
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
    if (typeof window === "undefined" || this.closed) {
      return { getState: () => EMPTY_STATE, unsubscribe: () => {} };
    }
    const key = `${feedKey(spec)}\n${token}`;
    return this.attach(
      this.feeds,
      key,
      () => new Feed(key, normalizeSpec(spec), token),
      listener,
      options,
    );
  }

  /**
   * Reads an output stream of a run: every chunk from `spec.startIndex`, once and in index order,
   * across reconnects (the subscription resumes at its next index). Listeners of the same stream
   * (same run, key, start index, timeout and token) share one server subscription and its chunks.
   * On the server side of SSR this does nothing.
   */
  subscribeStream(
    spec: StreamSpec,
    token: string,
    listener: StreamListener,
    options: SubscribeOptions = {},
  ): StreamSubscription {
    if (typeof window === "undefined" || this.closed) {
      const empty = new StreamFeed("", spec, token).state;
      return { getState: () => empty, unsubscribe: () => {} };
    }
    const key = `${streamKey(spec)}\n${token}`;
    return this.attach(
      this.streams,
      key,
      () => new StreamFeed(key, { ...spec }, token),
      listener,
      options,
    );
  }

  /**
   * Adds `listener` to the feed or stream `key` of `registry` (created by `create` if absent):
   * cancels its pending release and the socket's linger, and subscribes it if idle. The returned
   * subscription's `unsubscribe` releases the feed after `subscriptionLingerMs` once its last
   * listener went.
   */
  private attach<F extends Feed | StreamFeed>(
    registry: Map<string, F>,
    key: string,
    create: () => F,
    listener: (state: F["state"]) => void,
    options: SubscribeOptions,
  ): { getState(): F["state"]; unsubscribe(): void } {
    let feed = registry.get(key);
    if (!feed) {
      feed = create();
      registry.set(key, feed);
    }
    if (feed.releaseTimer !== undefined) {
      clearTimeout(feed.releaseTimer);
      feed.releaseTimer = undefined;
    }
    if (options.refreshAccessToken) feed.refreshAccessToken = options.refreshAccessToken;
    (feed.listeners as Set<(state: F["state"]) => void>).add(listener);
    this.cancelLinger();
    if (feed.phase === "idle") {
      if (this.wsOpen) this.sendSubscribe(feed);
      else this.ensureConnected();
    }

    const current = feed;
    let active = true;
    return {
      getState: () => current.state,
      unsubscribe: () => {
        if (!active) return;
        active = false;
        (current.listeners as Set<(state: F["state"]) => void>).delete(listener);
        if (current.listeners.size === 0 && registry.get(current.key) === current) {
          current.releaseTimer = setTimeout(
            () => this.release(current),
            this.options.subscriptionLingerMs,
          );
        }
      },
    };
  }

  /**
   * Sends `data` to input stream `streamId` of run `runId` (a `send` frame with `token`).
   * Resolves once the bridge acknowledged it (the value is stored); rejects with a
   * `RealtimeError` carrying the bridge's code (`unauthorized`, `forbidden`, `not_found`,
   * `run_finished`, `payload_too_large`, `invalid_request`, ...).
   *
   * A send waits for the socket if it is not open yet. A send already written to a socket that
   * then closes before the `ack` is NOT sent again (the bridge may or may not have stored it):
   * it rejects with code `connection_lost`, and the caller decides whether to send again.
   */
  sendInput(runId: string, streamId: string, data: unknown, token: string): Promise<SendInputResult> {
    // `undefined` goes as `null`: the frame must carry `data` (JSON would drop the field).
    const value = data === undefined ? null : data;
    const frame: SendFrame = { type: "send", id: `x${this.nextRequest++}`, runId, streamId, data: value, token };
    return this.request(
      frame,
      false,
      "the connection closed before the bridge acknowledged the value: it may or may not have been stored",
    ).then((ack) => ({ index: typeof ack.index === "number" ? ack.index : -1 }));
  }

  /**
   * Completes wait token `tokenId` with `data` (a `complete` frame with `token`, which needs
   * `write:waitpoints:<tokenId>`); `undefined` goes as `null`, since the frame must carry `data`.
   * Resolves once the bridge stored the completion; rejects with a `RealtimeError` carrying the
   * bridge's code (`unauthorized`, `forbidden`, `not_found`, `payload_too_large`,
   * `invalid_request`, ...).
   *
   * Completing is idempotent on the bridge (a completed token answers `ack` again and keeps its
   * first output), so unlike a send, a completion whose socket closes before the `ack` goes out
   * again on the next one. After `MAX_REQUEST_WRITES` lost connections it rejects with
   * `connection_lost`.
   */
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

  /**
   * Writes a request frame (now, or once the socket is open) and settles with its answer: the
   * `ack` frame, or a `RealtimeError` with the `error` frame's code. A frame that is not JSON or
   * is over the bridge's frame limit is refused here: sent, it would close the whole connection.
   */
  private request(frame: SendFrame | CompleteFrame, resend: boolean, lostMessage: string): Promise<AckFrame> {
    if (typeof window === "undefined" || this.closed) {
      return Promise.reject(
        new RealtimeError("connection_failed", `cannot send a ${frame.type} frame: no realtime client here`),
      );
    }
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
      const pending: PendingRequest = { frame, sent: false, writes: 0, resend, lostMessage, resolve, reject };
      this.requests.set(frame.id, pending);
      this.cancelLinger();
      if (this.wsOpen) this.writeRequest(pending);
      else this.ensureConnected();
    });
  }

  /** Number of requests (input-stream sends, token completions) waiting for their answer. */
  get pendingSendCount(): number {
    return this.requests.size;
  }

  private writeRequest(pending: PendingRequest): void {
    const ws = this.ws;
    if (!ws || !this.wsOpen || ws.readyState !== OPEN) return;
    pending.sent = true;
    pending.writes++;
    try {
      ws.send(JSON.stringify(pending.frame));
    } catch {
      // The close event follows and deals with it (it may have gone out).
    }
  }

  private settleRequest(id: string): PendingRequest | undefined {
    const pending = this.requests.get(id);
    if (!pending) return undefined;
    this.requests.delete(id);
    if (this.feeds.size === 0 && this.streams.size === 0 && this.requests.size === 0 && this.ws) {
      this.scheduleLinger();
    }
    return pending;
  }

  private onAck(frame: AckFrame): void {
    if (typeof frame.id !== "string") return;
    this.settleRequest(frame.id)?.resolve(frame);
  }

  private rejectRequests(error: RealtimeError, which: (pending: PendingRequest) => boolean): void {
    for (const [id, pending] of Array.from(this.requests)) {
      if (!which(pending)) continue;
      this.requests.delete(id);
      pending.reject(error);
    }
  }

  /** Number of stream subscriptions this client holds. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Number of feeds (server subscriptions, live or being set up) this client holds. */
  get feedCount(): number {
    return this.feeds.size;
  }

  /** Closes the socket and forgets every feed. The client can't be used afterwards. */
  close(): void {
    this.closed = true;
    for (const feed of this.allFeeds()) this.clearFeedTimers(feed);
    this.feeds.clear();
    this.streams.clear();
    this.bySid.clear();
    this.rejectRequests(new RealtimeError("connection_failed", "the realtime client was closed"), () => true);
    this.byTopic.clear();
    this.cancelLinger();
    this.cancelReconnect();
    this.closeSocket(1000, "client closed");
  }

  // ---- feeds -------------------------------------------------------------------------------

  private allFeeds(): Array<Feed | StreamFeed> {
    return [...this.feeds.values(), ...this.streams.values()];
  }

  private isHeld(feed: Feed | StreamFeed): boolean {
    return feed instanceof StreamFeed
      ? this.streams.get(feed.key) === feed
      : this.feeds.get(feed.key) === feed;
  }

  private release(feed: Feed | StreamFeed): void {
    feed.releaseTimer = undefined;
    if (feed.listeners.size > 0 || !this.isHeld(feed)) return;
    if (feed instanceof StreamFeed) this.streams.delete(feed.key);
    else this.feeds.delete(feed.key);
    this.clearFeedTimers(feed);
    if (feed.sid !== undefined) {
      const sid = feed.sid;
      this.unbind(feed);
      if (this.wsOpen && (feed.phase === "pending" || feed.phase === "live")) {
        this.send({ type: "unsubscribe", id: sid });
      }
    }
    if (feed instanceof Feed) this.unindexTopic(feed);
    feed.phase = "failed";
    if (this.feeds.size === 0 && this.streams.size === 0) this.scheduleLinger();
  }

  private clearFeedTimers(feed: BaseFeed): void {
    if (feed.releaseTimer !== undefined) clearTimeout(feed.releaseTimer);
    if (feed.retryTimer !== undefined) clearTimeout(feed.retryTimer);
    feed.releaseTimer = undefined;
    feed.retryTimer = undefined;
  }

  private sendSubscribe(feed: Feed | StreamFeed): void {
    this.unbind(feed);
    if (!this.wsOpen) {
      feed.phase = "idle";
      return;
    }
    if (feed instanceof StreamFeed) {
      const sid = `s${this.nextSid++}`;
      feed.sid = sid;
      // No acknowledgement comes for a stream subscription: chunks (or an error) do.
      feed.phase = "live";
      this.bySid.set(sid, feed);
      const frame: SubscribeFrame = {
        type: "subscribe",
        id: sid,
        feed: "stream",
        runId: feed.spec.runId,
        key: feed.spec.key,
        // Resume after the last chunk received: never a duplicate, never a gap.
        startIndex: feed.nextIndex,
        token: feed.token,
      };
      if (feed.spec.timeoutInSeconds !== undefined) frame.timeoutInSeconds = feed.spec.timeoutInSeconds;
      this.send(frame);
      return;
    }
    const sid = `s${this.nextSid++}`;
    feed.sid = sid;
    feed.phase = "pending";
    feed.sinceSnapshot.clear();
    this.bySid.set(sid, feed);
    this.indexTopic(feed, feed.topic);
    const spec = feed.spec;
    let frame: SubscribeFrame;
    if (spec.feed === "run") {
      frame = { type: "subscribe", id: sid, feed: "run", runId: spec.runId, token: feed.token };
    } else if (spec.feed === "batch") {
      frame = { type: "subscribe", id: sid, feed: "batch", batchId: spec.batchId, token: feed.token };
    } else {
      const seconds = parseDurationSeconds(spec.createdAt ?? DEFAULT_TAG_WINDOW);
      feed.cutoffMs = seconds === undefined ? undefined : Date.now() - seconds * 1000;
      frame = { type: "subscribe", id: sid, feed: "tags", tags: spec.tags, token: feed.token };
      if (spec.createdAt !== undefined) frame.createdAt = spec.createdAt;
    }
    this.send(frame);
  }

  private unbind(feed: Feed | StreamFeed): void {
    if (feed.sid !== undefined) {
      if (this.bySid.get(feed.sid) === feed) this.bySid.delete(feed.sid);
      feed.sid = undefined;
    }
  }

  private indexTopic(feed: Feed, topic: string): void {
    this.unindexTopic(feed);
    feed.topic = topic;
    let set = this.byTopic.get(topic);
    if (!set) {
      set = new Set();
      this.byTopic.set(topic, set);
    }
    set.add(feed);
  }

  private unindexTopic(feed: Feed): void {
    const set = this.byTopic.get(feed.topic);
    if (set) {
      set.delete(feed);
      if (set.size === 0) this.byTopic.delete(feed.topic);
    }
  }

  private emit(feed: Feed | StreamFeed): void {
    if (feed instanceof StreamFeed) {
      this.emitStream(feed);
      return;
    }
    feed.state = Object.freeze({
      runs: Object.freeze(Array.from(feed.runs.values())),
      error: feed.error,
      synced: feed.synced,
    });
    notifyListeners(feed.listeners, feed.state);
  }

  private emitStream(feed: StreamFeed): void {
    feed.state = Object.freeze({
      startIndex: feed.startIndex,
      chunks: feed.chunks,
      receivedAt: feed.receivedAt,
      count: feed.chunks.length,
      nextIndex: feed.nextIndex,
      done: feed.done,
      endReason: feed.endReason,
      error: feed.error,
    });
    notifyListeners(feed.listeners, feed.state);
  }

  private onChunk(frame: ChunkFrame): void {
    const feed = typeof frame.id === "string" ? this.bySid.get(frame.id) : undefined;
    if (!(feed instanceof StreamFeed) || feed.phase !== "live") return;
    const index = frame.index;
    if (typeof index !== "number" || !Number.isInteger(index)) return;
    if (index < feed.nextIndex) return; // already have it: dedupe by index
    if (index > feed.nextIndex) {
      // A hole (the protocol promises none): read again from the first missing index.
      const sid = feed.sid;
      this.unbind(feed);
      if (sid !== undefined) this.send({ type: "unsubscribe", id: sid });
      this.sendSubscribe(feed);
      return;
    }
    feed.chunks.push(frame.data);
    feed.receivedAt.push(Date.now());
    feed.synced = true;
    feed.error = undefined;
    feed.retryAttempt = 0;
    feed.authRefreshed = false;
    this.emitStream(feed);
  }

  private onEnd(frame: EndFrame): void {
    const feed = typeof frame.id === "string" ? this.bySid.get(frame.id) : undefined;
    if (!(feed instanceof StreamFeed) || feed.phase !== "live") return;
    this.unbind(feed);
    if (typeof frame.nextIndex === "number" && frame.nextIndex > feed.nextIndex) {
      // Ended past what we hold (should not happen): fetch the rest first.
      this.sendSubscribe(feed);
      return;
    }
    feed.phase = "ended";
    feed.done = true;
    feed.synced = true;
    feed.endReason = typeof frame.reason === "string" ? frame.reason : "finished";
    this.emitStream(feed);
  }

  private inWindow(feed: Feed, run: WireRun): boolean {
    if (feed.cutoffMs === undefined) return true;
    const created = Date.parse(run.createdAt);
    return Number.isNaN(created) || created >= feed.cutoffMs;
  }

  private onSnapshot(frame: SnapshotFrame): void {
    const feed = typeof frame.id === "string" ? this.bySid.get(frame.id) : undefined;
    if (!(feed instanceof Feed) || (feed.phase !== "pending" && feed.phase !== "live")) return;
    if (typeof frame.topic === "string" && frame.topic !== feed.topic) {
      this.indexTopic(feed, frame.topic);
    }
    // The snapshot replaces what the feed held; updates that arrived since the subscribe (or
    // the previous snapshot) win where they are newer, as the protocol's version rule says.
    const runs = new Map<string, WireRun>();
    for (const run of Array.isArray(frame.runs) ? frame.runs : []) {
      if (isWireRun(run)) runs.set(run.id, run);
    }
    for (const run of feed.sinceSnapshot.values()) {
      const inSnapshot = runs.get(run.id);
      if (inSnapshot ? run.version > inSnapshot.version : this.inWindow(feed, run)) {
        runs.set(run.id, run);
      }
    }
    feed.sinceSnapshot.clear();
    feed.runs = runs;
    feed.phase = "live";
    feed.error = undefined;
    feed.synced = true;
    feed.authRefreshed = false;
    feed.retryAttempt = 0;
    this.emit(feed);
  }

  private onUpdate(frame: UpdateFrame): void {
    const run = frame.run;
    if (!isWireRun(run) || typeof frame.topic !== "string") return;
    const feeds = this.byTopic.get(frame.topic);
    if (!feeds) return;
    for (const feed of Array.from(feeds)) {
      if (feed.phase === "pending") {
        // Merged into the snapshot when it comes.
        const seen = feed.sinceSnapshot.get(run.id);
        if (!seen || run.version > seen.version) feed.sinceSnapshot.set(run.id, run);
        continue;
      }
      if (feed.phase !== "live") continue;
      const current = feed.runs.get(run.id);
      if (current ? run.version <= current.version : !this.inWindow(feed, run)) continue;
      feed.runs.set(run.id, run);
      // Kept until the next snapshot: a later (resync) snapshot may have been read before it.
      feed.sinceSnapshot.set(run.id, run);
      this.emit(feed);
    }
  }

  private onErrorFrame(frame: ErrorFrame): void {
    if (typeof frame.id !== "string") return; // about a frame that could not be read: no subscription to tell
    const request = this.settleRequest(frame.id);
    if (request) {
      request.reject(new RealtimeError(String(frame.code), String(frame.message ?? frame.code)));
      return;
    }
    const feed = this.bySid.get(frame.id);
    if (!feed) return; // e.g. an unsubscribe we no longer track
    // Every error about a subscription means it is not (or no longer) established.
    this.unbind(feed);
    if (feed instanceof Feed) this.unindexTopic(feed);
    const error = new RealtimeError(String(frame.code), String(frame.message ?? frame.code));
    if (AUTH_ERROR_CODES.has(frame.code) && feed.refreshAccessToken && !feed.authRefreshed) {
      this.refreshToken(feed, feed.refreshAccessToken);
      return;
    }
    feed.error = error;
    if (frame.code === "backend_unavailable") {
      feed.phase = "retrying";
      const delay = this.backoffDelay(feed.retryAttempt++);
      feed.retryTimer = setTimeout(() => {
        feed.retryTimer = undefined;
        if (this.isHeld(feed) && feed.phase === "retrying") {
          if (this.wsOpen) this.sendSubscribe(feed);
          else feed.phase = "idle";
        }
      }, delay);
    } else {
      feed.phase = "failed";
    }
    this.emit(feed);
  }

  private refreshToken(feed: Feed | StreamFeed, refresh: () => Promise<string>): void {
    feed.phase = "refreshing";
    feed.authRefreshed = true;
    refreshOnce(refresh).then(
      (token) => {
        if (!this.isHeld(feed) || feed.phase !== "refreshing") return;
        feed.token = token;
        if (this.wsOpen) this.sendSubscribe(feed);
        else {
          feed.phase = "idle";
          this.ensureConnected();
        }
      },
      (reason: unknown) => {
        if (!this.isHeld(feed) || feed.phase !== "refreshing") return;
        feed.phase = "failed";
        feed.error = reason instanceof Error ? reason : new Error(String(reason));
        this.emit(feed);
      },
    );
  }

  // ---- connection --------------------------------------------------------------------------

  private needsSocket(): boolean {
    if (this.requests.size > 0) return true;
    for (const feed of this.allFeeds()) {
      if (feed.phase !== "failed" && feed.phase !== "ended") return true;
    }
    return false;
  }

  private ensureConnected(): void {
    if (this.ws || this.reconnectTimer !== undefined || this.closed) return;
    this.connect();
  }

  private connect(): void {
    this.cancelReconnect();
    if (this.closed || !this.needsSocket()) return;
    const Impl =
      this.options.WebSocket ??
      ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket as
        | WebSocketConstructor
        | undefined);
    if (!Impl) {
      this.failFeeds(
        new RealtimeError("connection_failed", "no WebSocket implementation in this environment"),
      );
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new Impl(this.url);
    } catch (error) {
      this.failFeeds(
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

  private failFeeds(error: RealtimeError): void {
    this.rejectRequests(error, () => true);
    for (const feed of this.allFeeds()) {
      if (feed.phase === "failed" || feed.phase === "ended") continue;
      this.unbind(feed);
      feed.phase = "failed";
      feed.error = error;
      this.emit(feed);
    }
  }

  private onOpen(): void {
    this.wsOpen = true;
    this.openedAt = Date.now();
    this.failedAttempts = 0;
    this.startPing();
    for (const feed of this.allFeeds()) {
      if (feed.phase === "idle" || feed.phase === "retrying") {
        if (feed.retryTimer !== undefined) {
          clearTimeout(feed.retryTimer);
          feed.retryTimer = undefined;
        }
        this.sendSubscribe(feed);
      }
    }
    // Requests not out on a socket go now: new ones, and completions whose socket closed.
    for (const pending of Array.from(this.requests.values())) {
      if (!pending.sent) this.writeRequest(pending);
    }
    if (this.feeds.size === 0 && this.streams.size === 0 && this.requests.size === 0) this.scheduleLinger();
  }

  private onMessage(data: unknown): void {
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
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "snapshot":
        this.onSnapshot(frame);
        break;
      case "update":
        this.onUpdate(frame);
        break;
      case "chunk":
        this.onChunk(frame);
        break;
      case "end":
        this.onEnd(frame);
        break;
      case "error":
        this.onErrorFrame(frame);
        break;
      case "ack":
        this.onAck(frame);
        break;
      case "welcome": {
        const limit = frame.limits?.maxFrameBytes;
        if (typeof limit === "number" && Number.isFinite(limit) && limit > 0) this.maxFrameBytes = limit;
        break;
      }
      default:
        // welcome, pong, unsubscribed: nothing to do.
        break;
    }
  }

  private onClose(): void {
    const wasOpen = this.wsOpen;
    this.ws = null;
    this.wsOpen = false;
    this.stopPing();
    if (wasOpen && Date.now() - this.openedAt >= this.options.stableConnectionMs) this.attempt = 0;
    if (!wasOpen) this.failedAttempts++;
    // A request written to this socket may or may not have been stored: a send is never sent
    // again blindly; a completion (idempotent) goes again on the next socket, a few times.
    for (const [id, pending] of Array.from(this.requests)) {
      if (!pending.sent) continue;
      pending.sent = false;
      if (pending.resend && pending.writes < MAX_REQUEST_WRITES) continue;
      this.requests.delete(id);
      pending.reject(new RealtimeError("connection_lost", pending.lostMessage));
    }
    for (const feed of this.allFeeds()) {
      if (feed.phase === "pending" || feed.phase === "live") {
        this.unbind(feed);
        if (feed instanceof Feed) this.unindexTopic(feed);
        feed.phase = "idle";
      }
    }
    if (this.failedAttempts >= this.options.connectionErrorAfterAttempts) {
      const error = new RealtimeError(
        "connection_failed",
        `cannot connect to ${this.url}; retrying`,
      );
      for (const feed of this.allFeeds()) {
        if (!feed.synced && feed.phase === "idle" && feed.error === undefined) {
          feed.error = error;
          this.emit(feed);
        }
      }
      // Requests waiting for a socket fail too: the caller may try again.
      this.rejectRequests(error, () => true);
    }
    if (this.needsSocket()) this.scheduleReconnect();
  }

  private backoffDelay(attempt: number): number {
    const cap = Math.min(
      this.options.reconnectMaxDelayMs,
      this.options.reconnectInitialDelayMs * 2 ** Math.min(attempt, 30),
    );
    return Math.floor(this.options.random() * cap);
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== undefined || this.closed) return;
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

  private scheduleLinger(): void {
    this.cancelLinger();
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      if (this.feeds.size > 0 || this.streams.size > 0 || this.requests.size > 0) return;
      this.cancelReconnect();
      this.closeSocket(1000, "no subscriptions");
    }, this.options.socketLingerMs);
  }

  private cancelLinger(): void {
    if (this.lingerTimer !== undefined) clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
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

  private send(frame: ClientFrame): void {
    const ws = this.ws;
    if (!ws || !this.wsOpen || ws.readyState !== OPEN) return;
    try {
      ws.send(JSON.stringify(frame));
    } catch {
      // The close event follows.
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

function normalizeSpec(spec: FeedSpec): FeedSpec {
  if (spec.feed === "tags") return { ...spec, tags: normalizeTags(spec.tags) };
  return { ...spec };
}

function utf8Length(text: string): number {
  return typeof TextEncoder !== "undefined" ? new TextEncoder().encode(text).length : text.length * 3;
}
