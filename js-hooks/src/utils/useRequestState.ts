"use client";
import { useCallback, useEffect, useRef, useState } from "react";
import { asError, RealtimeError } from "../client/errors.js";
import type { ApiClient } from "../hooks/useApiClient.js";
import { useLatest } from "./useLatest.js";

/** What a hook's requests (sends, completions, triggers) show. */
export type RequestState<R> = {
  /** Requests in flight. */
  inFlight: number;
  /** The result of the last request that succeeded. */
  result: R | undefined;
  /** True once a request succeeded. */
  succeeded: boolean;
  /** The error of the last request that failed, until one succeeds. */
  error: Error | undefined;
};

export type RequestTracker<R> = RequestState<R> & {
  /** Runs `call`, showing it in the state; resolves or rejects (with an Error) as it does. */
  track(call: () => Promise<R>): Promise<R>;
};

type Stored<R> = RequestState<R> & { scope: unknown; generation: number };

function fresh<R>(scope: unknown, generation: number): Stored<R> {
  return { scope, generation, inFlight: 0, result: undefined, succeeded: false, error: undefined };
}

/**
 * The state of a hook's requests. A new `scope` (e.g. another token id) starts a fresh state,
 * and what the old scope's requests answer later leaves it alone; so does anything answered
 * after unmount. With `latestOnly`, a request replaces the ones before it: only the latest one
 * shows (in flight, then its outcome).
 */
export function useRequestState<R>(scope?: unknown, latestOnly = false): RequestTracker<R> {
  // Reset during render when the scope changes (not in an effect): no render shows the old scope's state.
  const [stored, setStored] = useState<Stored<R>>(() => fresh(scope, 0));
  let state = stored;
  if (!Object.is(state.scope, scope)) {
    state = fresh(scope, state.generation + 1);
    setStored(state);
  }

  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);
  const generation = useLatest(state.generation);
  const lastCall = useRef(0);

  const track = useCallback(
    async (call: () => Promise<R>): Promise<R> => {
      const scoped = generation.current;
      const id = ++lastCall.current;
      const update = (change: (current: Stored<R>) => Stored<R>) => {
        if (!mounted.current || (latestOnly && id !== lastCall.current)) return;
        setStored((current) => (current.generation === scoped ? change(current) : current));
      };
      update((current) => ({ ...current, inFlight: latestOnly ? 1 : current.inFlight + 1 }));
      try {
        const result = await call();
        update((current) => ({ ...current, result, succeeded: true, error: undefined }));
        return result;
      } catch (reason) {
        const error = asError(reason);
        update((current) => ({ ...current, error }));
        throw error;
      } finally {
        update((current) => ({ ...current, inFlight: latestOnly ? 0 : Math.max(0, current.inFlight - 1) }));
      }
    },
    [generation, latestOnly],
  );

  return { inFlight: state.inFlight, result: state.result, succeeded: state.succeeded, error: state.error, track };
}

const AUTH_ERRORS = new Set(["unauthorized", "token_expired"]);

/**
 * Calls `call` with the hook's token and, when the bridge rejects that token (so nothing was
 * stored) and the hook can refresh it, once more with a fresh one.
 */
export async function withFreshToken<R>(api: ApiClient, call: (token: string) => Promise<R>): Promise<R> {
  try {
    return await call(api.accessToken);
  } catch (reason) {
    if (reason instanceof RealtimeError && AUTH_ERRORS.has(reason.code) && api.refreshAccessToken) {
      return call(await api.refreshAccessToken());
    }
    throw reason;
  }
}
