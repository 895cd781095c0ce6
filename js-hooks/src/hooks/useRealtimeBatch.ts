"use client";
import { useMemo } from "react";
import type { FeedSpec } from "../client/protocol.js";
import type { RealtimeRunSkipColumns } from "../types.js";
import { useFeed, useRunList } from "../utils/useFeed.js";
import { useApiClient } from "./useApiClient.js";
import type { UseRealtimeRunOptions } from "./useRealtimeRun.js";
import type { UseRealtimeRunsInstance } from "./useRealtimeRunsWithTag.js";

export type UseRealtimeBatchOptions = UseRealtimeRunOptions & {
  /** Leave these fields out of the run objects (applied in the browser). Not in the official hook. */
  skipColumns?: RealtimeRunSkipColumns;
};

/**
 * Follows the runs of a batch.
 *
 * ```ts
 * const { runs, error } = useRealtimeBatch<{ payload: In; output: Out }>(batchId, { accessToken, baseURL });
 * ```
 */
export function useRealtimeBatch<T = any>(
  batchId: string,
  options?: UseRealtimeBatchOptions,
): UseRealtimeRunsInstance<T> {
  const apiClient = useApiClient(options);
  const spec = useMemo<FeedSpec | undefined>(
    () => (batchId ? { feed: "batch", batchId } : undefined),
    [batchId],
  );
  const { state, stop } = useFeed(spec, apiClient, options?.enabled !== false);
  const runs = useRunList<T>(state, options?.skipColumns);
  return { runs, error: state?.error, stop };
}
