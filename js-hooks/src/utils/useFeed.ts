"use client";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { FeedState, FeedSubscription } from "../client/RealtimeClient.js";
import { feedKey, type FeedSpec } from "../client/protocol.js";
import { getRealtimeClient } from "../client/registry.js";
import { toRealtimeRun, sortByCreatedAt } from "../client/runShape.js";
import type { ApiClient } from "../hooks/useApiClient.js";
import type { RealtimeRun, RealtimeRunSkipColumns } from "../types.js";
import { useLatest } from "./useLatest.js";

export type FeedHandle = {
  /** The feed's state, once subscribed; kept after `stop()`; undefined for another feed. */
  state: FeedState | undefined;
  /** Stops this hook's subscription until the feed, token or `enabled` changes. */
  stop: () => void;
};

/**
 * Subscribes to one feed of the shared client while `enabled`, re-subscribing when the feed,
 * the bridge or the token changes. `onState` sees every state (and can stop the subscription).
 */
export function useFeed(
  spec: FeedSpec | undefined,
  apiClient: ApiClient | undefined,
  enabled: boolean,
  onState?: (state: FeedState, stop: () => void) => void,
): FeedHandle {
  const identity = spec && apiClient ? `${apiClient.baseURL}\n${feedKey(spec)}` : undefined;
  const token = apiClient?.accessToken;
  const active = enabled && identity !== undefined && token !== undefined;
  const [holder, setHolder] = useState<{ identity: string; state: FeedState } | undefined>();
  const subscription = useRef<FeedSubscription | undefined>(undefined);
  const onStateRef = useLatest(onState);
  const refreshRef = useLatest(apiClient?.refreshAccessToken);
  const hasRefresh = apiClient?.refreshAccessToken !== undefined;
  const specRef = useLatest(spec);
  const baseURL = apiClient?.baseURL;

  const stop = useCallback(() => {
    const current = subscription.current;
    subscription.current = undefined;
    current?.unsubscribe();
  }, []);

  useEffect(() => {
    const feedSpec = specRef.current;
    if (!active || !feedSpec || !baseURL || token === undefined || identity === undefined) return;
    const client = getRealtimeClient(baseURL);
    let sub: FeedSubscription | undefined;
    const stopThis = () => {
      sub?.unsubscribe();
      if (subscription.current === sub) subscription.current = undefined;
    };
    const deliver = (state: FeedState) => {
      setHolder({ identity, state });
      onStateRef.current?.(state, stopThis);
    };
    sub = client.subscribe(feedSpec, token, deliver, {
      refreshAccessToken: hasRefresh ? () => refreshRef.current!() : undefined,
    });
    subscription.current = sub;
    deliver(sub.getState());
    return stopThis;
  }, [active, identity, baseURL, token, hasRefresh, onStateRef, refreshRef, specRef]);

  return { state: holder && holder.identity === identity ? holder.state : undefined, stop };
}

/** The feed's runs as run objects, oldest first (the official hooks' order). */
export function useRunList<T>(
  state: FeedState | undefined,
  skipColumns: RealtimeRunSkipColumns | undefined,
): RealtimeRun<T>[] {
  const skipKey = skipColumns?.join(",") ?? "";
  const wireRuns = state?.runs;
  return useMemo(
    () =>
      wireRuns
        ? sortByCreatedAt(wireRuns.map((wire) => toRealtimeRun<T>(wire, skipColumns)))
        : [],
    // skipColumns is read through skipKey
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [wireRuns, skipKey],
  );
}
