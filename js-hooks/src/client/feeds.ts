/**
 * The client's feeds: run feeds and stream feeds, keyed by what they follow and their token.
 *
 * - Listeners of the same feed with the same token share one server subscription. A feed
 *   released by its last listener lingers `subscriptionLingerMs` first, so React StrictMode's
 *   unmount/remount reuses it instead of unsubscribing and subscribing again.
 * - Every live feed subscribes again on a new socket, with a fresh subscription id and its own
 *   token; the new `snapshot` replaces what a run feed held, a stream resumes at its next index.
 * - A rejected token is refreshed once per snapshot (when the caller gave a refresher);
 *   `backend_unavailable` subscribes again after a backoff; other errors end the feed.
 */
import { parseDurationSeconds, DEFAULT_TAG_WINDOW } from "./duration.js";
import { asError, RealtimeError } from "./errors.js";
import {
  RunFeed,
  type BaseFeed,
  StreamFeed,
  type FeedListener,
  type FeedState,
  type StreamListener,
  type StreamState,
} from "./feed.js";
import {
  type ChunkFrame,
  type EndFrame,
  type ErrorFrame,
  type FeedSpec,
  type SnapshotFrame,
  type StreamSpec,
  type SubscribeFrame,
  type UpdateFrame,
  feedKey,
  isWireRun,
  normalizeTags,
  streamKey,
} from "./protocol.js";
import type { Socket } from "./socket.js";

export type FeedSubscription = {
  /** The feed's current state (also right after subscribing, when the feed was already live). */
  getState(): FeedState;
  /** Stops delivering to this listener; the feed itself goes after a short linger. Idempotent. */
  unsubscribe(): void;
};

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

export type StreamSubscribeOptions = SubscribeOptions & {
  /**
   * The listener needs only the last `maxParts` chunks: the subscription keeps no more than its
   * listeners need (all, while one of them sets no bound).
   */
  maxParts?: number;
};

type AnyFeed = RunFeed | StreamFeed;

const AUTH_ERROR_CODES = new Set(["token_expired", "unauthorized", "forbidden"]);

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

export class Feeds {
  private readonly runs = new Map<string, RunFeed>();
  private readonly streams = new Map<string, StreamFeed>();
  private readonly bySid = new Map<string, AnyFeed>();
  private readonly byTopic = new Map<string, Set<RunFeed>>();
  private nextSid = 1;

  constructor(
    private readonly socket: Socket,
    private readonly subscriptionLingerMs: number,
  ) {}

  /** Number of run feeds held (live or being set up). */
  get feedCount(): number {
    return this.runs.size;
  }

  /** Number of stream feeds held. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** True while any feed is held, even a failed or ended one a listener still shows. */
  get held(): boolean {
    return this.runs.size > 0 || this.streams.size > 0;
  }

  /** True while a feed is (or wants to be) subscribed: it needs a socket. */
  get needSocket(): boolean {
    return this.all().some((feed) => feed.phase !== "failed" && feed.phase !== "ended");
  }

  subscribe(spec: FeedSpec, token: string, listener: FeedListener, options: SubscribeOptions): FeedSubscription {
    const key = `${feedKey(spec)}\n${token}`;
    return this.attach(this.runs, key, () => new RunFeed(key, normalizeSpec(spec), token), listener, options);
  }

  subscribeStream(
    spec: StreamSpec,
    token: string,
    listener: StreamListener,
    options: StreamSubscribeOptions,
  ): StreamSubscription {
    const key = `${streamKey(spec)}\n${token}`;
    return this.attach(this.streams, key, () => new StreamFeed(key, { ...spec }, token), listener, options);
  }

  /** A socket opened: every feed waiting for one subscribes. */
  onOpen(): void {
    for (const feed of this.all()) {
      if (feed.phase === "idle" || feed.phase === "retrying") {
        if (feed.retryTimer !== undefined) {
          clearTimeout(feed.retryTimer);
          feed.retryTimer = undefined;
        }
        this.sendSubscribe(feed);
      }
    }
  }

  /**
   * The socket closed: every subscription on it is gone, and waits for the next socket. With a
   * `connectionError`, feeds that never synced show it meanwhile.
   */
  onClose(connectionError: RealtimeError | undefined): void {
    for (const feed of this.all()) {
      if (feed.phase === "pending" || feed.phase === "live") {
        this.unbind(feed);
        if (feed instanceof RunFeed) this.unindexTopic(feed);
        feed.phase = "idle";
      }
    }
    if (!connectionError) return;
    for (const feed of this.all()) {
      if (!feed.synced && feed.phase === "idle" && feed.error === undefined) {
        feed.error = connectionError;
        feed.emit();
      }
    }
  }

  /** No socket can be opened: every feed still going fails with `error`. */
  failAll(error: RealtimeError): void {
    for (const feed of this.all()) {
      if (feed.phase === "failed" || feed.phase === "ended") continue;
      this.unbind(feed);
      feed.phase = "failed";
      feed.error = error;
      feed.emit();
    }
  }

  /** Forgets every feed (the client closes). */
  clear(): void {
    for (const feed of this.all()) feed.clearTimers();
    this.runs.clear();
    this.streams.clear();
    this.bySid.clear();
    this.byTopic.clear();
  }

  onSnapshot(frame: SnapshotFrame): void {
    const feed = this.feedOf(frame.id);
    if (!(feed instanceof RunFeed) || (feed.phase !== "pending" && feed.phase !== "live")) return;
    if (typeof frame.topic === "string" && frame.topic !== feed.topic) this.indexTopic(feed, frame.topic);
    feed.applySnapshot((Array.isArray(frame.runs) ? frame.runs : []).filter(isWireRun));
    feed.emit();
  }

  onUpdate(frame: UpdateFrame): void {
    const run = frame.run;
    if (!isWireRun(run) || typeof frame.topic !== "string") return;
    const feeds = this.byTopic.get(frame.topic);
    if (!feeds) return;
    for (const feed of Array.from(feeds)) {
      if (feed.applyUpdate(run)) feed.emit();
    }
  }

  onChunk(frame: ChunkFrame): void {
    const feed = this.feedOf(frame.id);
    if (!(feed instanceof StreamFeed) || feed.phase !== "live") return;
    const index = frame.index;
    if (typeof index !== "number" || !Number.isInteger(index)) return;
    if (typeof frame.epoch === "string" && frame.epoch !== feed.epoch) {
      if (feed.epoch !== undefined) {
        // Another epoch than the chunks held (a server that did not check ours): the stream was reset.
        const sid = feed.sid;
        const message = `stream '${feed.spec.key}' was reset: its epoch is ${frame.epoch}, not ${feed.epoch}`;
        this.end(feed, "error", "stream_reset", message);
        if (sid !== undefined) this.socket.send({ type: "unsubscribe", id: sid });
        return;
      }
      feed.epoch = frame.epoch;
    }
    if (index < feed.nextIndex) return; // already have it: dedupe by index
    if (index > feed.nextIndex) {
      // A hole (the protocol promises none): read again from the first missing index.
      const sid = feed.sid;
      this.unbind(feed);
      if (sid !== undefined) this.socket.send({ type: "unsubscribe", id: sid });
      this.sendSubscribe(feed);
      return;
    }
    feed.append(frame.data, Date.now());
    feed.synced = true;
    feed.error = undefined;
    feed.retryAttempt = 0;
    feed.authRefreshed = false;
    feed.emit();
  }

  onEnd(frame: EndFrame): void {
    const feed = this.feedOf(frame.id);
    if (!(feed instanceof StreamFeed) || feed.phase !== "live") return;
    this.unbind(feed);
    if (typeof frame.nextIndex === "number" && frame.nextIndex > feed.nextIndex) {
      // Ended past what we hold (should not happen): fetch the rest first.
      this.sendSubscribe(feed);
      return;
    }
    const reason = typeof frame.reason === "string" ? frame.reason : "finished";
    this.end(feed, reason, frame.code, frame.message);
  }

  /**
   * The stream feed is over. A `reason` other than `finished` and `timeout` is an error: the stream
   * failed (`stream_failed`: every chunk stored was sent, and no more will come) or was reset
   * (`stream_reset`: its storage was lost; resubscribing from index 0 without an epoch reads what
   * it holds now).
   */
  private end(feed: StreamFeed, reason: string, code: unknown, message: unknown): void {
    this.unbind(feed);
    feed.phase = "ended";
    feed.done = true;
    feed.synced = true;
    feed.endReason = reason;
    if (reason !== "finished" && reason !== "timeout") {
      const errorCode = typeof code === "string" ? code : "stream_failed";
      feed.error = new RealtimeError(errorCode, typeof message === "string" ? message : errorCode);
    }
    feed.emit();
  }

  /** An `error` frame about subscription `frame.id`, if it is one of ours. */
  onError(frame: ErrorFrame): void {
    const feed = this.feedOf(frame.id);
    if (!feed) return; // e.g. an unsubscribe we no longer track
    // Every error about a subscription means it is not (or no longer) established.
    this.unbind(feed);
    if (feed instanceof RunFeed) this.unindexTopic(feed);
    if (AUTH_ERROR_CODES.has(frame.code) && feed.refreshAccessToken && !feed.authRefreshed) {
      this.refreshToken(feed, feed.refreshAccessToken);
      return;
    }
    feed.error = new RealtimeError(String(frame.code), String(frame.message ?? frame.code));
    if (frame.code === "backend_unavailable") {
      feed.phase = "retrying";
      const delay = this.socket.backoffDelay(feed.retryAttempt++);
      feed.retryTimer = setTimeout(() => {
        feed.retryTimer = undefined;
        if (this.isHeld(feed) && feed.phase === "retrying") {
          if (this.socket.open) this.sendSubscribe(feed);
          else feed.phase = "idle";
        }
      }, delay);
    } else {
      feed.phase = "failed";
    }
    feed.emit();
  }

  /**
   * Adds `listener` to the feed `key` of `registry` (created by `create` if absent): cancels its
   * pending release and the socket's linger, and subscribes it if idle. The returned
   * subscription's `unsubscribe` releases the feed after `subscriptionLingerMs` once its last
   * listener went.
   */
  private attach<S, F extends AnyFeed & BaseFeed<S>>(
    registry: Map<string, F>,
    key: string,
    create: () => F,
    listener: (state: S) => void,
    options: StreamSubscribeOptions,
  ): { getState(): S; unsubscribe(): void } {
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
    const current = feed;
    current.addListener(listener, options.maxParts);
    this.socket.hold();
    if (current.phase === "idle") {
      if (this.socket.open) this.sendSubscribe(current);
      else this.socket.ensureConnected();
    }

    let active = true;
    return {
      getState: () => current.state,
      unsubscribe: () => {
        if (!active) return;
        active = false;
        current.removeListener(listener);
        if (current.listeners.size === 0 && registry.get(current.key) === current) {
          current.releaseTimer = setTimeout(() => this.release(current), this.subscriptionLingerMs);
        }
      },
    };
  }

  private all(): AnyFeed[] {
    return [...this.runs.values(), ...this.streams.values()];
  }

  private feedOf(sid: unknown): AnyFeed | undefined {
    return typeof sid === "string" ? this.bySid.get(sid) : undefined;
  }

  private isHeld(feed: AnyFeed): boolean {
    return feed instanceof StreamFeed ? this.streams.get(feed.key) === feed : this.runs.get(feed.key) === feed;
  }

  private release(feed: AnyFeed): void {
    feed.releaseTimer = undefined;
    if (feed.listeners.size > 0 || !this.isHeld(feed)) return;
    if (feed instanceof StreamFeed) this.streams.delete(feed.key);
    else this.runs.delete(feed.key);
    feed.clearTimers();
    if (feed.sid !== undefined) {
      const sid = feed.sid;
      this.unbind(feed);
      if (this.socket.open && (feed.phase === "pending" || feed.phase === "live")) {
        this.socket.send({ type: "unsubscribe", id: sid });
      }
    }
    if (feed instanceof RunFeed) this.unindexTopic(feed);
    feed.phase = "failed";
    this.socket.release();
  }

  private refreshToken(feed: AnyFeed, refresh: () => Promise<string>): void {
    feed.phase = "refreshing";
    feed.authRefreshed = true;
    refreshOnce(refresh).then(
      (token) => {
        if (!this.isHeld(feed) || feed.phase !== "refreshing") return;
        feed.token = token;
        if (this.socket.open) this.sendSubscribe(feed);
        else {
          feed.phase = "idle";
          this.socket.ensureConnected();
        }
      },
      (reason: unknown) => {
        if (!this.isHeld(feed) || feed.phase !== "refreshing") return;
        feed.phase = "failed";
        feed.error = asError(reason);
        feed.emit();
      },
    );
  }

  private sendSubscribe(feed: AnyFeed): void {
    this.unbind(feed);
    if (!this.socket.open) {
      feed.phase = "idle";
      return;
    }
    const sid = `s${this.nextSid++}`;
    feed.sid = sid;
    this.bySid.set(sid, feed);
    this.socket.send(feed instanceof StreamFeed ? this.streamFrame(feed, sid) : this.runFrame(feed, sid));
  }

  private streamFrame(feed: StreamFeed, sid: string): SubscribeFrame {
    // No acknowledgement comes for a stream subscription: chunks (or an error) do.
    feed.phase = "live";
    const frame: SubscribeFrame = {
      type: "subscribe",
      id: sid,
      feed: "stream",
      runId: feed.spec.runId,
      key: feed.spec.key,
      // Resume after the last chunk received: never a duplicate, never a gap; with the epoch it was
      // read under, so a stream whose storage was lost meanwhile ends with `stream_reset`.
      startIndex: feed.nextIndex,
      token: feed.token,
    };
    if (feed.epoch !== undefined) frame.epoch = feed.epoch;
    if (feed.spec.timeoutInSeconds !== undefined) frame.timeoutInSeconds = feed.spec.timeoutInSeconds;
    return frame;
  }

  private runFrame(feed: RunFeed, sid: string): SubscribeFrame {
    feed.phase = "pending";
    feed.sinceSnapshot.clear();
    this.indexTopic(feed, feed.topic);
    const spec = feed.spec;
    if (spec.feed === "run") return { type: "subscribe", id: sid, feed: "run", runId: spec.runId, token: feed.token };
    if (spec.feed === "batch") {
      return { type: "subscribe", id: sid, feed: "batch", batchId: spec.batchId, token: feed.token };
    }
    const seconds = parseDurationSeconds(spec.createdAt ?? DEFAULT_TAG_WINDOW);
    feed.cutoffMs = seconds === undefined ? undefined : Date.now() - seconds * 1000;
    const frame: SubscribeFrame = { type: "subscribe", id: sid, feed: "tags", tags: spec.tags, token: feed.token };
    if (spec.createdAt !== undefined) frame.createdAt = spec.createdAt;
    return frame;
  }

  private unbind(feed: AnyFeed): void {
    if (feed.sid !== undefined) {
      if (this.bySid.get(feed.sid) === feed) this.bySid.delete(feed.sid);
      feed.sid = undefined;
    }
  }

  private indexTopic(feed: RunFeed, topic: string): void {
    this.unindexTopic(feed);
    feed.topic = topic;
    let set = this.byTopic.get(topic);
    if (!set) {
      set = new Set();
      this.byTopic.set(topic, set);
    }
    set.add(feed);
  }

  private unindexTopic(feed: RunFeed): void {
    const set = this.byTopic.get(feed.topic);
    if (set) {
      set.delete(feed);
      if (set.size === 0) this.byTopic.delete(feed.topic);
    }
  }
}

function normalizeSpec(spec: FeedSpec): FeedSpec {
  if (spec.feed === "tags") return { ...spec, tags: normalizeTags(spec.tags) };
  return { ...spec };
}
