/**
 * One server subscription as the client holds it: a run feed (runs, by the protocol's version
 * rule) or a stream feed (chunks, once each and in index order), with its listeners and the
 * immutable state they are handed.
 */
import { topicOf, type FeedSpec, type StreamSpec, type WireRun } from "./protocol.js";

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

/** What a stream subscription holds, handed to its listeners on every change. Immutable. */
export type StreamState = {
  /**
   * The index of `chunks[0]`: the subscription's start index, or later once `maxParts` let the
   * older chunks go.
   */
  readonly startIndex: number;
  /**
   * The chunks kept, in index order, each exactly once: `chunks[i]` is chunk `startIndex + i`.
   * This is the subscription's own array (not copied on every chunk): the first `count` entries
   * are this state's; copy them to keep them.
   */
  readonly chunks: readonly unknown[];
  /** When each chunk was received (ms since the epoch), parallel to `chunks`. */
  readonly receivedAt: readonly number[];
  /** How many chunks this state holds: `nextIndex - startIndex`. */
  readonly count: number;
  /** The next index wanted: `startIndex + count`. */
  readonly nextIndex: number;
  /** The stream's epoch the chunks were read under, once the server named it (or the spec gave it). */
  readonly epoch: string | undefined;
  /** True once the server ended the subscription (`end` frame). */
  readonly done: boolean;
  /** Why it ended: `finished` (the run finished, every chunk sent), `timeout`, or `error` (`error` is
   * a RealtimeError with code `stream_failed`: the stream stopped for good, or `stream_reset`: its
   * storage was lost, and the chunks held may not be what it holds now). */
  readonly endReason: string | undefined;
  /** The last error of the subscription. */
  readonly error: Error | undefined;
};

export type StreamListener = (state: StreamState) => void;

export type Phase =
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

export const EMPTY_STATE: FeedState = Object.freeze({
  runs: Object.freeze([]) as readonly WireRun[],
  error: undefined,
  synced: false,
});

/** What run feeds and stream feeds have in common: a server subscription and its lifecycle. */
export abstract class BaseFeed<S> {
  readonly listeners = new Set<(state: S) => void>();
  phase: Phase = "idle";
  sid: string | undefined;
  error: Error | undefined;
  synced = false;
  releaseTimer: ReturnType<typeof setTimeout> | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  retryAttempt = 0;
  authRefreshed = false;
  refreshAccessToken: (() => Promise<string>) | undefined;
  abstract state: S;

  constructor(
    readonly key: string,
    public token: string,
  ) {}

  /** `maxParts`: how many of the latest chunks the listener needs (stream feeds). */
  addListener(listener: (state: S) => void, _maxParts?: number): void {
    this.listeners.add(listener);
  }

  removeListener(listener: (state: S) => void): void {
    this.listeners.delete(listener);
  }

  /** Freezes the current state and hands it to every listener. */
  emit(): void {
    this.state = this.freeze();
    notifyListeners(this.listeners, this.state);
  }

  protected abstract freeze(): S;

  clearTimers(): void {
    if (this.releaseTimer !== undefined) clearTimeout(this.releaseTimer);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.releaseTimer = undefined;
    this.retryTimer = undefined;
  }
}

export class RunFeed extends BaseFeed<FeedState> {
  /** The topic updates of this feed arrive on: computed, then as the snapshot names it. */
  topic: string;
  runs = new Map<string, WireRun>();
  /** Runs from updates since the last snapshot (or subscribe): merged into the next snapshot. */
  readonly sinceSnapshot = new Map<string, WireRun>();
  /** Tags feeds: runs created before this instant are outside the window. */
  cutoffMs: number | undefined;
  state: FeedState = EMPTY_STATE;

  constructor(
    key: string,
    readonly spec: FeedSpec,
    token: string,
  ) {
    super(key, token);
    this.topic = topicOf(spec);
  }

  /**
   * The snapshot replaces what the feed held; updates that arrived since the subscribe (or the
   * previous snapshot) win where they are newer, as the protocol's version rule says.
   */
  applySnapshot(snapshot: Iterable<WireRun>): void {
    const runs = new Map<string, WireRun>();
    for (const run of snapshot) runs.set(run.id, run);
    for (const run of this.sinceSnapshot.values()) {
      const inSnapshot = runs.get(run.id);
      if (inSnapshot ? run.version > inSnapshot.version : this.inWindow(run)) runs.set(run.id, run);
    }
    this.sinceSnapshot.clear();
    this.runs = runs;
    this.phase = "live";
    this.error = undefined;
    this.synced = true;
    this.authRefreshed = false;
    this.retryAttempt = 0;
  }

  /** Applies an update of the feed's topic; true if the feed's runs changed. */
  applyUpdate(run: WireRun): boolean {
    if (this.phase === "pending") {
      // Merged into the snapshot when it comes.
      const seen = this.sinceSnapshot.get(run.id);
      if (!seen || run.version > seen.version) this.sinceSnapshot.set(run.id, run);
      return false;
    }
    if (this.phase !== "live") return false;
    const current = this.runs.get(run.id);
    if (current ? run.version <= current.version : !this.inWindow(run)) return false;
    this.runs.set(run.id, run);
    // Kept until the next snapshot: a later (resync) snapshot may have been read before it.
    this.sinceSnapshot.set(run.id, run);
    return true;
  }

  private inWindow(run: WireRun): boolean {
    if (this.cutoffMs === undefined) return true;
    const created = Date.parse(run.createdAt);
    return Number.isNaN(created) || created >= this.cutoffMs;
  }

  protected freeze(): FeedState {
    return Object.freeze({
      runs: Object.freeze(Array.from(this.runs.values())),
      error: this.error,
      synced: this.synced,
    });
  }
}

export class StreamFeed extends BaseFeed<StreamState> {
  /** The index of `chunks[0]`. */
  startIndex: number;
  chunks: unknown[] = [];
  receivedAt: number[] = [];
  /** The epoch of the chunks held: sent back on every resubscribe. */
  epoch: string | undefined;
  done = false;
  endReason: string | undefined;
  state: StreamState;
  /** Per bounded listener, its `maxParts`. */
  private readonly bounds = new Map<StreamListener, number>();
  /** How many chunks to keep: all while any listener wants all. */
  private keep = Infinity;

  constructor(
    key: string,
    readonly spec: StreamSpec,
    token: string,
  ) {
    super(key, token);
    this.startIndex = Math.max(0, Math.floor(spec.startIndex ?? 0));
    this.epoch = spec.epoch;
    this.state = this.freeze();
  }

  get nextIndex(): number {
    return this.startIndex + this.chunks.length;
  }

  override addListener(listener: StreamListener, maxParts?: number): void {
    super.addListener(listener);
    if (maxParts !== undefined && maxParts >= 0) this.bounds.set(listener, Math.ceil(maxParts));
    else this.bounds.delete(listener);
    this.keep = this.wanted();
  }

  override removeListener(listener: StreamListener): void {
    super.removeListener(listener);
    this.bounds.delete(listener);
    // A feed left without listeners keeps its bound while it lingers.
    if (this.listeners.size > 0) this.keep = this.wanted();
  }

  /** Appends the chunk at `nextIndex`, then lets the oldest go beyond what the listeners keep. */
  append(data: unknown, receivedAt: number): void {
    this.chunks.push(data);
    this.receivedAt.push(receivedAt);
    const over = this.chunks.length - this.keep;
    if (over > 0) {
      // New arrays, not trimmed in place, so the states already handed out keep theirs intact
      // (a bounded feed copies up to maxParts references per chunk: maxParts is meant small).
      this.chunks = this.chunks.slice(over);
      this.receivedAt = this.receivedAt.slice(over);
      this.startIndex += over;
    }
  }

  private wanted(): number {
    let keep = 0;
    for (const listener of this.listeners) keep = Math.max(keep, this.bounds.get(listener) ?? Infinity);
    return keep;
  }

  protected freeze(): StreamState {
    return Object.freeze({
      startIndex: this.startIndex,
      chunks: this.chunks,
      receivedAt: this.receivedAt,
      count: this.chunks.length,
      nextIndex: this.nextIndex,
      epoch: this.epoch,
      done: this.done,
      endReason: this.endReason,
      error: this.error,
    });
  }
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
