"use client";
import { useMemo } from "react";
import { useTriggerAuthContextOptional } from "../contexts.js";
import { retrieveRun, triggerTask } from "../client/http.js";
import type { RetrieveRunResult, RunHandle, TriggerOptions } from "../types.js";

/** Options every hook takes to find the bridge and authenticate. */
export type UseApiClientOptions = {
  /** The token to send; default: `TriggerAuthContext`'s. */
  accessToken?: string;
  /** The bridge's URL; default: `TriggerAuthContext`'s. Required one way or the other. */
  baseURL?: string;
  /** Mints a fresh token when the bridge rejects an expired one (realtime hooks). */
  refreshAccessToken?: () => Promise<string>;
  /** `false`: a missing token or baseURL is not an error; the hook does nothing. */
  enabled?: boolean;
};

/** The bridge client of a hook: where to connect, with which token, and its two HTTP calls. */
export type ApiClient = {
  baseURL: string;
  accessToken: string;
  refreshAccessToken?: () => Promise<string>;
  retrieveRun<T = any>(runId: string, signal?: AbortSignal): Promise<RetrieveRunResult<T>>;
  triggerTask<T = any>(
    taskId: string,
    payload: unknown,
    options?: TriggerOptions,
  ): Promise<RunHandle<T>>;
};

export const MISSING_TOKEN = "Missing accessToken in TriggerAuthContext or useApiClient options";
export const MISSING_BASE_URL =
  "Missing baseURL in TriggerAuthContext or the hook's options: @realtime-bridge/react-hooks has no " +
  'default server (the official hooks default to the Trigger.dev cloud). Pass your bridge\'s URL, e.g. ' +
  '{ baseURL: "https://bridge.example.com" }.';

/**
 * Resolves `baseURL` and `accessToken` from the options, then `TriggerAuthContext`, as the official
 * `useApiClient` does, except that there is no default baseURL. Throws when one is missing, unless
 * `enabled` is `false` (then returns undefined).
 */
export function useApiClient(options?: UseApiClientOptions): ApiClient | undefined {
  const auth = useTriggerAuthContextOptional();
  const baseURL = options?.baseURL ?? auth.baseURL;
  const accessToken = options?.accessToken ?? auth.accessToken;
  const refreshAccessToken = options?.refreshAccessToken ?? auth.refreshAccessToken;
  const client = useMemo<ApiClient | undefined>(() => {
    if (!baseURL || !accessToken) return undefined;
    const base = baseURL.replace(/\/+$/, "");
    return {
      baseURL: base,
      accessToken,
      refreshAccessToken,
      retrieveRun: (runId, signal) => retrieveRun({ baseURL: base, accessToken, signal }, runId),
      triggerTask: (taskId, payload, triggerOptions) =>
        triggerTask({ baseURL: base, accessToken }, taskId, payload, triggerOptions),
    };
  }, [baseURL, accessToken, refreshAccessToken]);
  if (!accessToken) {
    if (options?.enabled === false) return undefined;
    throw new Error(MISSING_TOKEN);
  }
  if (!baseURL) {
    if (options?.enabled === false) return undefined;
    throw new Error(MISSING_BASE_URL);
  }
  return client;
}
