"use client";
import { useCallback, useEffect, useSyncExternalStore } from "react";
import { asError } from "../client/errors.js";
import type { RetrieveRunResult } from "../types.js";
import { useLatest } from "../utils/useLatest.js";
import { useApiClient, type UseApiClientOptions } from "./useApiClient.js";

/** The official `CommonTriggerHookOptions`. */
export type UseRunOptions = UseApiClientOptions & {
  /** Fetch again every this many ms until the run has completed. Default 0 (off). */
  refreshInterval?: number;
  /** Fetch again when the browser comes back online. Default true (as SWR). */
  revalidateOnReconnect?: boolean;
  /** Fetch again when the window regains focus (at most every 5 s). Default true (as SWR). */
  revalidateOnFocus?: boolean;
};

export type UseRunInstance<T = any> = {
  run: RetrieveRunResult<T> | undefined;
  error: Error | undefined;
  /** No data yet and a request is in flight (or about to start). */
  isLoading: boolean;
  /** A request is in flight. */
  isValidating: boolean;
  isError: boolean;
  /** Fetches again now; resolves to the run, or undefined if that fetch failed. */
  mutate: () => Promise<RetrieveRunResult<T> | undefined>;
};

// A tiny shared cache, as SWR's for this one key space: hooks fetching the same run share the
// result and one request in flight (deduplicated for 2 s).
type Snapshot = {
  data: unknown;
  error: Error | undefined;
  validating: boolean;
  settled: boolean;
};
type Entry = {
  snapshot: Snapshot;
  listeners: Set<() => void>;
  promise: Promise<unknown> | undefined;
  startedAt: number;
  focusedAt: number;
};

const DEDUPE_MS = 2000;
const FOCUS_THROTTLE_MS = 5000;
const INITIAL: Snapshot = { data: undefined, error: undefined, validating: false, settled: false };
const entries = new Map<string, Entry>();

function entryOf(key: string): Entry {
  let entry = entries.get(key);
  if (!entry) {
    entry = { snapshot: INITIAL, listeners: new Set(), promise: undefined, startedAt: 0, focusedAt: 0 };
    entries.set(key, entry);
  }
  return entry;
}

function patch(entry: Entry, change: Partial<Snapshot>): void {
  entry.snapshot = { ...entry.snapshot, ...change };
  for (const listener of Array.from(entry.listeners)) listener();
}

function revalidate(key: string, fetcher: () => Promise<unknown>, force = false): Promise<unknown> {
  const entry = entryOf(key);
  if (!force && entry.promise && Date.now() - entry.startedAt < DEDUPE_MS) return entry.promise;
  entry.startedAt = Date.now();
  const promise: Promise<unknown> = fetcher().then(
    (data) => {
      if (entry.promise === promise) {
        entry.promise = undefined;
        patch(entry, { data, error: undefined, validating: false, settled: true });
      }
      return data;
    },
    (error: unknown) => {
      if (entry.promise === promise) {
        entry.promise = undefined;
        patch(entry, {
          error: asError(error),
          validating: false,
          settled: true,
        });
      }
      return undefined;
    },
  );
  entry.promise = promise;
  patch(entry, { validating: true });
  return promise;
}

/**
 * Fetches a run once over HTTP (GET /api/v3/runs/{runId}): the official `useRun`, without SWR.
 */
export function useRun<T = any>(runId: string, options?: UseRunOptions): UseRunInstance<T> {
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false;
  const key =
    runId && apiClient && enabled
      ? `${apiClient.baseURL}\n${apiClient.accessToken}\n${runId}`
      : undefined;
  const fetcher = useLatest(() => apiClient!.retrieveRun<T>(runId));

  const subscribe = useCallback(
    (onChange: () => void) => {
      if (!key) return () => {};
      const entry = entryOf(key);
      entry.listeners.add(onChange);
      return () => {
        entry.listeners.delete(onChange);
      };
    },
    [key],
  );
  const snapshot = useSyncExternalStore(
    subscribe,
    () => (key ? entryOf(key).snapshot : INITIAL),
    () => INITIAL,
  );

  const refreshInterval = options?.refreshInterval ?? 0;
  const onFocus = options?.revalidateOnFocus ?? true;
  const onReconnect = options?.revalidateOnReconnect ?? true;

  useEffect(() => {
    if (!key) return;
    const run = () => revalidate(key, () => fetcher.current());
    void run();
    const cleanups: Array<() => void> = [];
    if (refreshInterval > 0) {
      const timer = setInterval(() => {
        const data = entryOf(key).snapshot.data as { isCompleted?: boolean } | undefined;
        if (data?.isCompleted) return;
        void run();
      }, refreshInterval);
      cleanups.push(() => clearInterval(timer));
    }
    if (typeof window !== "undefined") {
      if (onFocus) {
        const focus = () => {
          if (typeof document !== "undefined" && document.visibilityState === "hidden") return;
          const entry = entryOf(key);
          if (Date.now() - entry.focusedAt < FOCUS_THROTTLE_MS) return;
          entry.focusedAt = Date.now();
          void run();
        };
        window.addEventListener("focus", focus);
        document.addEventListener("visibilitychange", focus);
        cleanups.push(() => {
          window.removeEventListener("focus", focus);
          document.removeEventListener("visibilitychange", focus);
        });
      }
      if (onReconnect) {
        const online = () => void run();
        window.addEventListener("online", online);
        cleanups.push(() => window.removeEventListener("online", online));
      }
    }
    return () => cleanups.forEach((cleanup) => cleanup());
  }, [key, refreshInterval, onFocus, onReconnect, fetcher]);

  const mutate = useCallback(async () => {
    if (!key) return undefined;
    return (await revalidate(key, () => fetcher.current(), true)) as
      | RetrieveRunResult<T>
      | undefined;
  }, [key, fetcher]);

  const data = key ? (snapshot.data as RetrieveRunResult<T> | undefined) : undefined;
  const error = key ? snapshot.error : undefined;
  const isLoading = !!key && data === undefined && (snapshot.validating || !snapshot.settled);
  return {
    run: data,
    error,
    isLoading,
    isValidating: !!key && (snapshot.validating || !snapshot.settled),
    isError: !!error,
    mutate,
  };
}
