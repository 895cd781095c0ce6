"use client";
import { useCallback, useEffect, useRef, useState } from "react";
import type { StreamState, StreamSubscription } from "../client/RealtimeClient.js";
import { streamKey, type StreamSpec } from "../client/protocol.js";
import { getRealtimeClient } from "../client/registry.js";
import { createThrottle } from "../utils/throttle.js";
import { useLatest } from "../utils/useLatest.js";
import { useApiClient, type UseApiClientOptions } from "./useApiClient.js";

/** The key the official SDK uses for module-level stream calls without a key. */
export const DEFAULT_STREAM_KEY = "default";
/** The official hooks' default `throttleInMs`. */
export const DEFAULT_STREAM_THROTTLE_MS = 16;
/** The official hooks' default `timeoutInSeconds`. */
export const DEFAULT_STREAM_TIMEOUT_SECONDS = 60;
/** The protocol's bounds for `timeoutInSeconds`. */
const MIN_TIMEOUT_SECONDS = 1;
const MAX_TIMEOUT_SECONDS = 600;

/**
 * A named output stream with the type of its chunks, for type-safe reads:
 *
 * ```ts
 * export const aiStream = defineStream<string>("ai");   // Python: streams.define("ai")
 * const { parts } = useRealtimeStream(aiStream, runId); // parts: string[]
 * ```
 *
 * An official `RealtimeDefinedStream` (from `streams.define` of `@trigger.dev/sdk`) fits too.
 */
export type RealtimeDefinedStream<TPart> = {
  readonly id: string;
  /** Type-level only: never set. */
  readonly __partType?: TPart;
};

/** The chunk type of a defined stream (ours or the official SDK's). */
export type InferStreamType<T> = T extends { append: (value: infer TPart, ...args: any[]) => any }
  ? TPart
  : T extends RealtimeDefinedStream<infer TPart>
    ? TPart
    : unknown;

/** Defines a stream by its key, with the type of its chunks (nothing happens at runtime). */
export function defineStream<TPart>(id: string): RealtimeDefinedStream<TPart> {
  if (typeof id !== "string" || id.length === 0) throw new Error("defineStream: id must be a non-empty string");
  return Object.freeze({ id });
}

/** One chunk with its event id (`<index>-<epoch>`, as the bridge's SSE ids) and when it was received: `onParts`. */
export type StreamPart<TPart> = { id: string; chunk: TPart; timestamp: number };

export type UseRealtimeStreamOptions<TPart> = UseApiClientOptions & {
  /** Accepted for compatibility (the official hooks share state by `id` through SWR). */
  id?: string;
  /** `false`: don't subscribe. */
  enabled?: boolean;
  /**
   * Re-render at most once per this many milliseconds while chunks arrive (the chunks that came
   * in between are applied together). 0 re-renders on every chunk.
   *
   * @default 16
   */
  throttleInMs?: number;
  /**
   * End the subscription after this many seconds without a new chunk (the parts stay).
   *
   * @default 60
   */
  timeoutInSeconds?: number;
  /** The first chunk index to read. @default 0 */
  startIndex?: number;
  /**
   * Resume after this event id (as returned in `lastEventId`: `<index>-<epoch>`, or a chunk index):
   * wins over `startIndex`. With its epoch, a stream whose storage was lost since ends with `error`
   * code `stream_reset` instead of resuming at an index that now holds something else.
   */
  lastEventId?: string | number;
  /**
   * Accepted for compatibility; only `"beginning"` is supported: the stream is read from its
   * first chunk (or `startIndex`).
   */
  from?: "beginning" | "latest";
  /** Keep only the last `maxParts` parts (the shared client keeps no more for this hook either). */
  maxParts?: number;
  /** Called for every chunk as it arrives, in order (not throttled). */
  onData?: (data: TPart) => void;
  /** Called once per throttled flush with the chunks of that flush. */
  onParts?: (parts: Array<StreamPart<TPart>>) => void;
};

export type UseRealtimeStreamInstance<TPart> = {
  /** Every chunk received, in order, each once. */
  parts: Array<TPart>;
  /**
   * The last part's event id, `<index>-<epoch>` (the stream's epoch, as in the bridge's SSE event ids;
   * the index alone until the server named it): pass it back as `lastEventId` to resume.
   */
  lastEventId: string | undefined;
  /**
   * A RealtimeError: `stream_failed` (the stream stopped for good), `stream_reset` (its storage was
   * lost, so `parts` may not be what it holds now: read it again without `lastEventId`), or the
   * subscription's error (`not_found`, `forbidden`, ...).
   */
  error: Error | undefined;
  /** Stops the subscription now; the parts stay. */
  stop: () => void;
};

const EMPTY_PARTS: never[] = [];

type View<TPart> = {
  identity: string;
  parts: TPart[];
  lastEventId: string | undefined;
  error: Error | undefined;
};

/** Where to start, and the epoch of what came before: from `lastEventId` (`<index>` or `<index>-<epoch>`), else `startIndex`. */
function resolveStart(options: UseRealtimeStreamOptions<unknown> | undefined): { startIndex: number; epoch?: string } {
  const last = options?.lastEventId;
  if (last !== undefined && last !== "") {
    const [index, epoch] = String(last).split("-", 2) as [string, string | undefined];
    const lastIndex = Number(index);
    if (index !== "" && Number.isInteger(lastIndex) && lastIndex >= 0) {
      return epoch ? { startIndex: lastIndex + 1, epoch } : { startIndex: lastIndex + 1 };
    }
  }
  const start = options?.startIndex;
  return { startIndex: typeof start === "number" && Number.isFinite(start) && start > 0 ? Math.floor(start) : 0 };
}

/** A chunk's event id: `<index>-<epoch>`, as the bridge's SSE route names it (the index alone without an epoch). */
function eventId(index: number, epoch: string | undefined): string {
  return epoch ? `${index}-${epoch}` : String(index);
}

function resolveTimeout(value: number | undefined): number {
  const seconds = value ?? DEFAULT_STREAM_TIMEOUT_SECONDS;
  if (!Number.isFinite(seconds)) return MAX_TIMEOUT_SECONDS;
  return Math.min(MAX_TIMEOUT_SECONDS, Math.max(MIN_TIMEOUT_SECONDS, Math.ceil(seconds)));
}

/**
 * Reads an output stream of a run over the shared WebSocket, with the official hook's
 * signatures:
 *
 * ```ts
 * const { parts, error } = useRealtimeStream<string>(runId, "ai", { accessToken });
 * const { parts } = useRealtimeStream(runId, { accessToken });             // the "default" stream
 * const { parts } = useRealtimeStream(defineStream<string>("ai"), runId, { accessToken });
 * ```
 *
 * Every chunk arrives once and in order, also across reconnects: the subscription resumes from
 * the last index received + 1, with the stream's epoch; if the stream's storage was lost meanwhile
 * (the bridge's Redis flushed, an in-memory bridge restarted), `error` is a RealtimeError with code
 * `stream_reset` rather than a silent resume.
 */
export function useRealtimeStream<TDefinedStream extends RealtimeDefinedStream<any>>(
  stream: TDefinedStream,
  runId: string | undefined,
  options?: UseRealtimeStreamOptions<InferStreamType<TDefinedStream>>,
): UseRealtimeStreamInstance<InferStreamType<TDefinedStream>>;
export function useRealtimeStream<TPart>(
  runId: string | undefined,
  streamKey: string,
  options?: UseRealtimeStreamOptions<TPart>,
): UseRealtimeStreamInstance<TPart>;
export function useRealtimeStream<TPart>(
  runId: string | undefined,
  options?: UseRealtimeStreamOptions<TPart>,
): UseRealtimeStreamInstance<TPart>;
export function useRealtimeStream(
  streamOrRunId: string | undefined | RealtimeDefinedStream<unknown>,
  runIdOrKeyOrOptions?: string | UseRealtimeStreamOptions<unknown>,
  options?: UseRealtimeStreamOptions<unknown>,
): UseRealtimeStreamInstance<unknown> {
  let runId: string | undefined;
  let key: string;
  let resolved: UseRealtimeStreamOptions<unknown> | undefined;
  if (streamOrRunId !== null && typeof streamOrRunId === "object") {
    if (typeof runIdOrKeyOrOptions !== "string" && runIdOrKeyOrOptions !== undefined) {
      throw new Error(
        "Invalid second argument to useRealtimeStream. When using a defined stream instance, the second argument to useRealtimeStream must be a run ID.",
      );
    }
    runId = runIdOrKeyOrOptions;
    key = streamOrRunId.id;
    resolved = options;
  } else {
    runId = streamOrRunId;
    if (typeof runIdOrKeyOrOptions === "string") {
      key = runIdOrKeyOrOptions;
      resolved = options;
    } else {
      key = DEFAULT_STREAM_KEY;
      resolved = runIdOrKeyOrOptions;
    }
  }
  return useStreamImplementation(runId, key, resolved);
}

function useStreamImplementation<TPart>(
  runId: string | undefined,
  key: string,
  options: UseRealtimeStreamOptions<TPart> | undefined,
): UseRealtimeStreamInstance<TPart> {
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false && !!runId;
  const start = resolveStart(options as UseRealtimeStreamOptions<unknown> | undefined);
  const timeoutInSeconds = resolveTimeout(options?.timeoutInSeconds);
  const spec: StreamSpec | undefined = runId ? { runId, key, ...start, timeoutInSeconds } : undefined;
  const baseURL = apiClient?.baseURL;
  const token = apiClient?.accessToken;
  const identity =
    spec && baseURL && token !== undefined ? `${baseURL}\n${streamKey(spec)}\n${token}` : undefined;
  const active = enabled && identity !== undefined;

  const [view, setView] = useState<View<TPart> | undefined>();
  const onData = useLatest(options?.onData);
  const onParts = useLatest(options?.onParts);
  const throttleInMs = useLatest(options?.throttleInMs ?? DEFAULT_STREAM_THROTTLE_MS);
  const maxParts = useLatest(options?.maxParts);
  const refresh = useLatest(apiClient?.refreshAccessToken);
  const hasRefresh = apiClient?.refreshAccessToken !== undefined;
  const stopRef = useRef<(() => void) | undefined>(undefined);
  const specRef = useLatest(spec);

  const stop = useCallback(() => {
    const current = stopRef.current;
    stopRef.current = undefined;
    current?.();
  }, []);

  useEffect(() => {
    const streamSpec = specRef.current;
    if (!active || !streamSpec || !baseURL || token === undefined || identity === undefined) return;
    const client = getRealtimeClient(baseURL);
    // Rebuilt from the subscription's chunks on every (re)mount: the parts never hold a chunk twice.
    let parts: TPart[] = [];
    const firstIndex = streamSpec.startIndex ?? 0;
    let next = firstIndex; // the index of the first chunk not handled yet
    let batch: Array<StreamPart<TPart>> = [];
    let latest: StreamState | undefined;
    let stopped = false;

    const throttle = createThrottle(
      () => {
        if (!latest) return;
        const flushed = batch;
        batch = [];
        if (flushed.length > 0) {
          parts = parts.concat(flushed.map((part) => part.chunk));
          const cap = maxParts.current;
          if (cap !== undefined && cap >= 0 && parts.length > cap) parts = parts.slice(parts.length - cap);
        }
        const lastEventId = latest.nextIndex > firstIndex ? eventId(latest.nextIndex - 1, latest.epoch) : undefined;
        setView({ identity, parts, lastEventId, error: latest.error });
        if (flushed.length > 0) onParts.current?.(flushed);
      },
      () => throttleInMs.current,
    );

    const deliver = (state: StreamState) => {
      if (stopped) return;
      const errorChanged = latest?.error !== state.error;
      latest = state;
      // The client may have let chunks before `state.startIndex` go (maxParts): start from there.
      for (let index = Math.max(next, state.startIndex); index < state.nextIndex; index++) {
        const i = index - state.startIndex;
        const chunk = state.chunks[i] as TPart;
        batch.push({ id: eventId(index, state.epoch), chunk, timestamp: state.receivedAt[i] ?? Date.now() });
        try {
          onData.current?.(chunk);
        } catch (error) {
          setTimeout(() => {
            throw error;
          }, 0);
        }
      }
      next = Math.max(next, state.nextIndex);
      if (state.done || errorChanged) {
        throttle.schedule();
        throttle.flushNow();
      } else if (batch.length > 0) {
        throttle.schedule();
      }
    };

    let sub: StreamSubscription | undefined = client.subscribeStream(streamSpec, token, deliver, {
      refreshAccessToken: hasRefresh ? () => refresh.current!() : undefined,
      maxParts: maxParts.current,
    });
    const initial = sub.getState();
    if (initial.nextIndex > firstIndex || initial.done || initial.error) deliver(initial);

    const end = () => {
      if (stopped) return;
      throttle.flushNow();
      stopped = true;
      throttle.cancel();
      sub?.unsubscribe();
      sub = undefined;
      if (stopRef.current === end) stopRef.current = undefined;
    };
    stopRef.current = end;
    return end;
  }, [active, identity, baseURL, token, hasRefresh, specRef, maxParts, onData, onParts, refresh, throttleInMs]);

  const current = view && view.identity === identity ? view : undefined;
  return {
    parts: current ? current.parts : (EMPTY_PARTS as TPart[]),
    lastEventId: current?.lastEventId,
    error: current?.error,
    stop,
  };
}
