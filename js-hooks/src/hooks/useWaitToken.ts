"use client";
import { useCallback, useEffect, useRef, useState } from "react";
import { RealtimeError } from "../client/errors.js";
import { getRealtimeClient } from "../client/registry.js";
import { useLatest } from "../utils/useLatest.js";
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

/** The completion state of one token id; `generation` tells a new id's state from an old one's. */
type State = {
  tokenId: string | undefined;
  generation: number;
  inFlight: number;
  isCompleted: boolean;
  error: Error | undefined;
};

const AUTH_ERRORS = new Set(["unauthorized", "token_expired"]);

function freshState(tokenId: string | undefined, generation: number): State {
  return { tokenId, generation, inFlight: 0, isCompleted: false, error: undefined };
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

  // Reset during render when the id changes (not in an effect): no render shows the old id's state.
  const [stored, setState] = useState<State>(() => freshState(waitpointId, 0));
  let state = stored;
  if (state.tokenId !== waitpointId) {
    state = freshState(waitpointId, state.generation + 1);
    setState(state);
  }

  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);

  const latest = useLatest({ apiClient, waitpointId, enabled, generation: state.generation });
  const completeAsync = useCallback(
    async (output: TOutput): Promise<void> => {
      const { apiClient: api, waitpointId: id, enabled: on, generation } = latest.current;
      // A completion that settles after the id changed leaves the new id's state alone.
      const update = (change: (current: State) => State) => {
        if (mounted.current) setState((current) => (current.generation === generation ? change(current) : current));
      };
      update((current) => ({ ...current, inFlight: current.inFlight + 1 }));
      try {
        if (!on) throw new Error("Could not complete wait token: the hook is disabled");
        if (!api) throw new Error("Could not complete wait token: Missing access token");
        if (!id) throw new Error("Could not complete wait token: Missing token ID");
        const client = getRealtimeClient(api.baseURL);
        try {
          await client.completeToken(id, output, api.accessToken);
        } catch (reason) {
          // A rejected token means nothing was stored: with a refresher, try once more.
          if (reason instanceof RealtimeError && AUTH_ERRORS.has(reason.code) && api.refreshAccessToken) {
            await client.completeToken(id, output, await api.refreshAccessToken());
          } else {
            throw reason;
          }
        }
        update((current) => ({ ...current, isCompleted: true, error: undefined }));
      } catch (reason) {
        const failure = reason instanceof Error ? reason : new Error(String(reason));
        update((current) => ({ ...current, error: failure }));
        throw failure;
      } finally {
        update((current) => ({ ...current, inFlight: Math.max(0, current.inFlight - 1) }));
      }
    },
    [latest],
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
    isCompleted: state.isCompleted,
    error: state.error,
    isReady,
  };
}
