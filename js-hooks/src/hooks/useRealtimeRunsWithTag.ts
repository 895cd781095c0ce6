"use client";
import { useMemo } from "react";
import { normalizeTags, type FeedSpec } from "../client/protocol.js";
import type { RealtimeRun, RealtimeRunSkipColumns } from "../types.js";
import { useFeed, useRunList } from "../utils/useFeed.js";
import { useApiClient } from "./useApiClient.js";
import type { UseRealtimeRunOptions } from "./useRealtimeRun.js";

export type UseRealtimeRunsWithTagOptions = UseRealtimeRunOptions & {
  /**
   * Only runs created within this duration ("30m", "1h", "1d", "2w", or seconds). Default "1d".
   * The server applies it when (re)subscribing; the hook also applies it to runs that arrive later.
   */
  createdAt?: string;
  /** Leave these fields out of the run objects (applied in the browser). */
  skipColumns?: RealtimeRunSkipColumns;
};

export type UseRealtimeRunsInstance<T = any> = {
  /** The runs, oldest first (ordered by `createdAt`, as the official hooks order them). */
  runs: RealtimeRun<T>[];
  error: Error | undefined;
  /** Stops the subscription now. */
  stop: () => void;
};

/**
 * Follows every run that has all of the given tags.
 *
 * ```ts
 * const { runs, error } = useRealtimeRunsWithTag<{ payload: In; output: Out }>(["user:1"], { createdAt: "1h" });
 * ```
 */
export function useRealtimeRunsWithTag<T = any>(
  tag: string | string[],
  options?: UseRealtimeRunsWithTagOptions,
): UseRealtimeRunsInstance<T> {
  const apiClient = useApiClient(options);
  const tagsKey = JSON.stringify(normalizeTags(Array.isArray(tag) ? tag : [tag]));
  const createdAt = options?.createdAt;
  const spec = useMemo<FeedSpec | undefined>(() => {
    const tags = JSON.parse(tagsKey) as string[];
    return tags.length ? { feed: "tags", tags, createdAt } : undefined;
  }, [tagsKey, createdAt]);
  const { state, stop } = useFeed(spec, apiClient, options?.enabled !== false);
  const runs = useRunList<T>(state, options?.skipColumns);
  return { runs, error: state?.error, stop };
}
