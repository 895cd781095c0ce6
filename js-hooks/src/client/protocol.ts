/**
 * The frames of the realtime-bridge WebSocket protocol, version 1 (docs/protocol.md).
 */

/** A run as the bridge sends it in `snapshot` and `update` frames. */
export type WireRun = {
  id: string;
  taskIdentifier: string;
  status: string;
  payload?: unknown;
  output?: unknown;
  /** "application/store": `payload` / `output` is the storage path of a packet (a value of 128 KiB or more). */
  payloadType?: string | null;
  outputType?: string | null;
  error?: WireError | null;
  metadata?: Record<string, unknown> | null;
  tags?: string[] | null;
  createdAt: string;
  updatedAt?: string | null;
  startedAt?: string | null;
  finishedAt?: string | null;
  idempotencyKey?: string | null;
  batchId?: string | null;
  durationMs?: number | null;
  costInCents?: number | null;
  baseCostInCents?: number | null;
  number?: number | null;
  /** The current attempt of the run's retry policy (protocol v1 servers with durable runs send it). */
  attemptNumber?: number | null;
  isTest?: boolean | null;
  realtimeStreams?: string[] | null;
  /** Grows by one on every stored change of the run. */
  version: number;
  delayedUntil?: string | null;
  delayUntil?: string | null;
  expiredAt?: string | null;
  queuedAt?: string | null;
  ttl?: string | null;
};

/** `{name, message, stackTrace}`, or the official TaskRunError union. */
export type WireError = {
  type?: string;
  name?: string;
  message?: string;
  stackTrace?: string;
  raw?: string;
  code?: string;
  causes?: Array<{ name?: string; message: string; stackTrace?: string }>;
};

export type RunFeedSpec = { feed: "run"; runId: string };
export type TagsFeedSpec = { feed: "tags"; tags: string[]; createdAt?: string | number };
export type BatchFeedSpec = { feed: "batch"; batchId: string };
export type FeedSpec = RunFeedSpec | TagsFeedSpec | BatchFeedSpec;

/** An output stream of a run, read from `startIndex` (default 0). */
export type StreamSpec = {
  runId: string;
  key: string;
  startIndex?: number;
  /**
   * Resuming: the stream's epoch the chunks before `startIndex` were read under (as a chunk frame
   * named it). If the stream's storage was lost since, the subscription ends with `stream_reset`
   * instead of going on at an index that now holds something else.
   */
  epoch?: string;
  /** End the subscription after this many seconds without a new chunk (1 to 600). */
  timeoutInSeconds?: number;
};

export type SubscribeFrame =
  | { type: "subscribe"; id: string; token: string; feed: "run"; runId: string }
  | {
      type: "subscribe";
      id: string;
      token: string;
      feed: "tags";
      tags: string[];
      createdAt?: string | number;
    }
  | { type: "subscribe"; id: string; token: string; feed: "batch"; batchId: string }
  | {
      type: "subscribe";
      id: string;
      token: string;
      feed: "stream";
      runId: string;
      key: string;
      startIndex: number;
      epoch?: string;
      timeoutInSeconds?: number;
    };

/**
 * A value for an input stream of a running run: answered by `ack` or an `error` with this id. With
 * `idempotencyKey` (1 to 2,048 characters), a send repeating the key (same run and stream) stores
 * nothing and is acknowledged with the first one's index.
 */
export type SendFrame = {
  type: "send";
  id: string;
  runId: string;
  streamId: string;
  data: unknown;
  idempotencyKey?: string;
  token: string;
};

/** Completes wait token `tokenId` with `data` (`null` for no value): answered by `ack` or an `error` with this id. */
export type CompleteFrame = {
  type: "complete";
  id: string;
  tokenId: string;
  data: unknown;
  token: string;
};

export type ClientFrame =
  | SubscribeFrame
  | SendFrame
  | CompleteFrame
  | { type: "unsubscribe"; id: string }
  | { type: "ping"; id?: string };

export type WelcomeFrame = {
  type: "welcome";
  protocol: number;
  limits?: { maxSubscriptions?: number; maxFrameBytes?: number };
};
export type SnapshotFrame = { type: "snapshot"; id: string; topic: string; runs: WireRun[] };
export type UpdateFrame = { type: "update"; topic: string; run: WireRun };
export type ErrorFrame = { type: "error"; id: string | null; code: string; message: string };
/** One chunk; the first chunk frame of a subscription names the stream's `epoch`. */
export type ChunkFrame = { type: "chunk"; id: string; index: number; data: unknown; epoch?: string };
export type EndFrame = {
  type: "end";
  id: string;
  nextIndex: number;
  reason: "finished" | "timeout" | "error" | string;
  /**
   * With `reason: "error"`: `stream_failed` (the stream stopped for good at `nextIndex`) or
   * `stream_reset` (its storage was lost: what the client holds may not be what it holds now).
   */
  code?: string;
  message?: string;
};
/**
 * Request `id` is stored: a `send` frame's value at `index` of the run's input stream, or a
 * `complete` frame's completion (no `index`).
 */
export type AckFrame = { type: "ack"; id: string; index?: number };
export type PongFrame = { type: "pong"; id?: string | null };
export type UnsubscribedFrame = { type: "unsubscribed"; id: string };

export type ServerFrame =
  | WelcomeFrame
  | SnapshotFrame
  | UpdateFrame
  | ChunkFrame
  | EndFrame
  | ErrorFrame
  | AckFrame
  | PongFrame
  | UnsubscribedFrame;

/** Error codes of `error` frames. */
export type ErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_many"
  | "token_expired"
  | "backend_unavailable"
  | "internal"
  | "run_finished"
  | "payload_too_large";

/** The topic the server will name a feed by: lets updates that beat the snapshot be kept. */
export function topicOf(spec: FeedSpec): string {
  switch (spec.feed) {
    case "run":
      return `run:${spec.runId}`;
    case "tags":
      return `tags:${JSON.stringify(normalizeTags(spec.tags))}`;
    case "batch":
      return `batch:${spec.batchId}`;
  }
}

/** Tags as the server keys them: unique, sorted. */
export function normalizeTags(tags: readonly string[]): string[] {
  return Array.from(new Set(tags)).sort();
}

/** A stable key for a feed (not including the token). */
export function feedKey(spec: FeedSpec): string {
  switch (spec.feed) {
    case "run":
      return JSON.stringify(["run", spec.runId]);
    case "tags":
      return JSON.stringify(["tags", normalizeTags(spec.tags), spec.createdAt ?? null]);
    case "batch":
      return JSON.stringify(["batch", spec.batchId]);
  }
}

/** A stable key for a stream subscription (not including the token). */
export function streamKey(spec: StreamSpec): string {
  return JSON.stringify([
    "stream",
    spec.runId,
    spec.key,
    spec.startIndex ?? 0,
    spec.epoch ?? null,
    spec.timeoutInSeconds ?? null,
  ]);
}

/** True when the run has finished: `finishedAt` is set (the protocol sets it exactly then). */
export function isFinished(run: WireRun | undefined): boolean {
  return !!run && typeof run.finishedAt === "string" && run.finishedAt.length > 0;
}

export function isWireRun(value: unknown): value is WireRun {
  if (!value || typeof value !== "object") return false;
  const run = value as Partial<WireRun>;
  return typeof run.id === "string" && typeof run.version === "number";
}
