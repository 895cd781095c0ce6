"use client";
import { useEffect, useMemo, useRef } from "react";
import { isFinished, type FeedSpec, type WireRun } from "../client/protocol.js";
import type { FeedState } from "../client/RealtimeClient.js";
import { toRealtimeRun } from "../client/runShape.js";
import type { RealtimeRun, RealtimeRunSkipColumns } from "../types.js";
import { useFeed } from "../utils/useFeed.js";
import { useLatest } from "../utils/useLatest.js";
import { useApiClient, type UseApiClientOptions } from "./useApiClient.js";

export type UseRealtimeRunOptions = UseApiClientOptions & {
  /**
   * Accepted for compatibility. The official hooks share state between hooks with the same `id`
   * (through SWR); here hooks that follow the same feed with the same token share one
   * subscription and see the same state, whatever their `id`.
   */
  id?: string;
  /** `false`: don't subscribe (and a missing token or baseURL is not an error). */
  enabled?: boolean;
  /** Accepted for compatibility; updates are applied as they arrive. */
  throttleInMs?: number;
};

export type UseRealtimeSingleRunOptions<T = any> = UseRealtimeRunOptions & {
  /**
   * Called once per run, when the run has finished (`finishedAt` is set), with the run and the
   * hook's error if any.
   */
  onComplete?: (run: RealtimeRun<T>, err?: Error) => void;
  /**
   * Unsubscribe once the run has finished. Set it to false to keep receiving changes (e.g.
   * metadata written after completion).
   *
   * @default true
   */
  stopOnCompletion?: boolean;
  /** Leave these fields out of the run object (applied in the browser; see the README). */
  skipColumns?: RealtimeRunSkipColumns;
};

export type UseRealtimeRunInstance<T = any> = {
  run: RealtimeRun<T> | undefined;
  error: Error | undefined;
  /** Stops the subscription now. */
  stop: () => void;
};

function findRun(state: FeedState | undefined, runId: string | undefined): WireRun | undefined {
  if (!state || !runId) return undefined;
  return state.runs.find((run) => run.id === runId);
}

/**
 * Follows one run in realtime.
 *
 * ```ts
 * const { run, error, stop } = useRealtimeRun<{ payload: In; output: Out }>(runId, { accessToken, baseURL });
 * ```
 */
export function useRealtimeRun<T = any>(
  runId?: string,
  options?: UseRealtimeSingleRunOptions<T>,
): UseRealtimeRunInstance<T> {
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false && !!runId;
  const spec = useMemo<FeedSpec | undefined>(
    () => (runId ? { feed: "run", runId } : undefined),
    [runId],
  );
  const stopOnCompletion = useLatest(options?.stopOnCompletion ?? true);
  const { state, stop } = useFeed(spec, apiClient, enabled, (next, stopFeed) => {
    if (stopOnCompletion.current && isFinished(findRun(next, runId))) stopFeed();
  });

  const wire = findRun(state, runId);
  const skipColumns = options?.skipColumns;
  const skipKey = skipColumns?.join(",") ?? "";
  const run = useMemo(
    () => (wire ? toRealtimeRun<T>(wire, skipColumns) : undefined),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [wire, skipKey],
  );
  const error = state?.error;
  const finished = isFinished(wire);

  const onComplete = useLatest(options?.onComplete);
  const completedRunId = useRef<string | undefined>(undefined);
  useEffect(() => {
    if (!run || !finished) return;
    const callback = onComplete.current;
    if (!callback || completedRunId.current === run.id) return;
    completedRunId.current = run.id;
    callback(run, error);
  }, [run, finished, error, onComplete]);

  return { run, error, stop };
}
