"use client";
import { useCallback, useEffect, useRef, useState } from "react";
import type { StreamState, StreamSubscription } from "../client/RealtimeClient.js";
import { getRealtimeClient } from "../client/registry.js";
import type { RealtimeRun } from "../types.js";
import { createThrottle } from "../utils/throttle.js";
import { useLatest } from "../utils/useLatest.js";
import { DEFAULT_STREAM_THROTTLE_MS } from "./useRealtimeStream.js";
import { useApiClient } from "./useApiClient.js";
import { useRealtimeRun, type UseRealtimeSingleRunOptions } from "./useRealtimeRun.js";

/** Per stream key, its chunks so far. */
export type StreamResults<TStreams extends Record<string, any>> = {
  [K in keyof TStreams]: Array<TStreams[K]>;
};

export type UseRealtimeRunWithStreamsInstance<
  T = any,
  TStreams extends Record<string, any> = Record<string, any>,
> = {
  run: RealtimeRun<T> | undefined;
  streams: StreamResults<TStreams>;
  error: Error | undefined;
  /** Stops the run subscription and every stream subscription now. */
  stop: () => void;
};

type View = { identity: string; streams: Record<string, unknown[]>; error: Error | undefined };

/**
 * Follows a run and every output stream it has (`run.realtimeStreams`): a stream subscription
 * opens, from index 0, for each key as soon as the run lists it.
 *
 * ```ts
 * const { run, streams } = useRealtimeRunWithStreams<Chat, { ai: string }>(runId, { accessToken });
 * streams.ai?.join("");
 * ```
 *
 * `throttleInMs` (default 16) batches the re-renders the streams cause. A stream that failed or was
 * reset (its storage lost: a RealtimeError with code `stream_failed` or `stream_reset`) is `error`.
 */
export function useRealtimeRunWithStreams<
  T = any,
  TStreams extends Record<string, any> = Record<string, any>,
>(
  runId?: string,
  options?: UseRealtimeSingleRunOptions<T>,
): UseRealtimeRunWithStreamsInstance<T, TStreams> {
  const { run, error: runError, stop: stopRun } = useRealtimeRun<T>(runId, options);
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false && !!runId;
  const baseURL = apiClient?.baseURL;
  const token = apiClient?.accessToken;
  const identity = runId && baseURL && token !== undefined ? `${baseURL}\n${runId}\n${token}` : undefined;
  const keys = run && run.id === runId ? (run.realtimeStreams ?? []) : [];
  const keysKey = JSON.stringify([...keys].sort());

  const [view, setView] = useState<View | undefined>();
  const [stopped, setStopped] = useState<string | undefined>();
  const throttleInMs = useLatest(options?.throttleInMs ?? DEFAULT_STREAM_THROTTLE_MS);
  const refresh = useLatest(apiClient?.refreshAccessToken);
  const hasRefresh = apiClient?.refreshAccessToken !== undefined;
  const stopStreams = useRef<(() => void) | undefined>(undefined);

  const stop = useCallback(() => {
    stopRun();
    const current = stopStreams.current;
    stopStreams.current = undefined;
    current?.();
  }, [stopRun]);

  // The streams' subscriptions are shared and linger briefly, so re-running this effect when a
  // new key appears re-attaches to the existing ones and loses nothing (their chunks are kept).
  useEffect(() => {
    if (!enabled || !baseURL || token === undefined || !identity || !runId) return;
    if (stopped === identity) return;
    const streamKeys: string[] = JSON.parse(keysKey);
    if (streamKeys.length === 0) return;
    const client = getRealtimeClient(baseURL);
    const states = new Map<string, StreamState>();
    let active = true;
    const throttle = createThrottle(
      () => {
        const streams: Record<string, unknown[]> = {};
        let error: Error | undefined;
        for (const [key, state] of states) {
          streams[key] = state.chunks.slice(0, state.count);
          error = error ?? state.error;
        }
        setView({ identity, streams, error });
      },
      () => throttleInMs.current,
    );
    const subscriptions: StreamSubscription[] = streamKeys.map((key) => {
      const listener = (state: StreamState) => {
        if (!active) return;
        states.set(key, state);
        throttle.schedule();
        if (state.done || state.error) throttle.flushNow();
      };
      const sub = client.subscribeStream({ runId, key, startIndex: 0 }, token, listener, {
        refreshAccessToken: hasRefresh ? () => refresh.current!() : undefined,
      });
      states.set(key, sub.getState());
      return sub;
    });
    throttle.schedule();
    const end = () => {
      if (!active) return;
      throttle.flushNow();
      active = false;
      throttle.cancel();
      for (const sub of subscriptions) sub.unsubscribe();
      if (stopStreams.current === end) stopStreams.current = undefined;
    };
    stopStreams.current = () => {
      end();
      setStopped(identity);
    };
    return end;
  }, [enabled, baseURL, token, identity, runId, keysKey, stopped, hasRefresh, refresh, throttleInMs]);

  const current = view && view.identity === identity ? view : undefined;
  return {
    run,
    streams: (current?.streams ?? EMPTY_STREAMS) as StreamResults<TStreams>,
    error: runError ?? current?.error,
    stop,
  };
}

const EMPTY_STREAMS: Record<string, unknown[]> = {};
