"use client";
import { useCallback } from "react";
import { getRealtimeClient } from "../client/registry.js";
import { useLatest } from "../utils/useLatest.js";
import { useRequestState, withFreshToken } from "../utils/useRequestState.js";
import { useApiClient, type UseApiClientOptions } from "./useApiClient.js";

/** The official `WaitTokenInstance`, plus `completeAsync`. */
export interface WaitTokenInstance<TOutput> {
  /** Completes the wait token with `output` (fire and forget: `isLoading`, `isCompleted` and `error` tell how it went). */
  complete: (output: TOutput) => void;
  /**
   * Bridge extra: the same completion, as a promise that resolves once the bridge stored it and
   * rejects with the `RealtimeError` (`forbidden`, `not_found`, `connection_lost`, ...). It also
   * updates `isLoading`, `isCompleted` and `error`.
   */
  completeAsync: (output: TOutput) => Promise<void>;
  /** Whether a completion is currently in progress. */
  isLoading: boolean;
  /** Whether the bridge acknowledged a completion of this token. */
  isCompleted: boolean;
  /** The error of the last completion, until one succeeds. */
  error?: Error;
  /** Whether the hook is ready to complete (has a token id, an access token and a baseURL). */
  isReady: boolean;
}

/**
 * Completes a wait token (what a Python task waits on with `wait.for_token`) over the shared
 * WebSocket, with the official hook's signature:
 *
 * ```ts
 * const { complete, isLoading, isCompleted, isReady, error } = useWaitToken<{ approved: boolean }>(tokenId, { accessToken });
 * complete({ approved: true });
 * ```
 *
 * The access token needs `write:waitpoints:<tokenId>` (the token's public access token has it).
 * Completing is idempotent on the bridge, so a completion whose connection drops before the
 * acknowledgement is sent again on the next connection. A new token id starts a fresh state.
 */
export function useWaitToken<TOutput>(
  waitpointId?: string,
  options?: UseApiClientOptions,
): WaitTokenInstance<TOutput> {
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false;
  const isReady = enabled && !!waitpointId && !!apiClient;

  // A new token id starts a fresh state; a completion of the old id that settles later leaves it alone.
  const state = useRequestState<void>(waitpointId);
  const { track } = state;
  const latest = useLatest({ apiClient, waitpointId, enabled });
  const completeAsync = useCallback(
    (output: TOutput): Promise<void> =>
      track(() => {
        const { apiClient: api, waitpointId: id, enabled: on } = latest.current;
        if (!on) throw new Error("Could not complete wait token: the hook is disabled");
        if (!api) throw new Error("Could not complete wait token: Missing access token");
        if (!id) throw new Error("Could not complete wait token: Missing token ID");
        const client = getRealtimeClient(api.baseURL);
        return withFreshToken(api, (token) => client.completeToken(id, output, token));
      }),
    [latest, track],
  );

  const complete = useCallback(
    (output: TOutput) => {
      // The outcome shows in `error`: no unhandled rejection.
      completeAsync(output).catch(() => {});
    },
    [completeAsync],
  );

  return {
    complete,
    completeAsync,
    isLoading: state.inFlight > 0,
    isCompleted: state.succeeded,
    error: state.error,
    isReady,
  };
}
