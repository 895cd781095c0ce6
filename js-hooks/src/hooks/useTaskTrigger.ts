"use client";
import { useCallback } from "react";
import type { RunHandle, TaskIdentifier, TaskPayload, TriggerOptions } from "../types.js";
import { useLatest } from "../utils/useLatest.js";
import { useRequestState } from "../utils/useRequestState.js";
import { MISSING_TOKEN, useApiClient, type UseApiClientOptions } from "./useApiClient.js";

export type UseTaskTriggerOptions = UseApiClientOptions;

/** The official `TriggerInstance`. */
export type TriggerInstance<T = any> = {
  /** Triggers the task (POST /api/v1/tasks/{id}/trigger); the outcome lands in `handle` or `error`. */
  submit: (payload: TaskPayload<T>, options?: TriggerOptions) => void;
  /** A trigger request is in flight. */
  isLoading: boolean;
  /** The last triggered run: `{ id, publicAccessToken, taskIdentifier, isCached? }`. */
  handle?: RunHandle<T>;
  /** The last trigger's error. */
  error?: Error;
};

/**
 * Triggers a task from the browser with a trigger token.
 *
 * ```ts
 * const { submit, handle, isLoading, error } = useTaskTrigger<{ payload: In }>("my-task", { accessToken, baseURL });
 * submit({ url });
 * ```
 */
export function useTaskTrigger<T = any>(
  id: TaskIdentifier<T>,
  options?: UseTaskTriggerOptions,
): TriggerInstance<T> {
  const apiClient = useApiClient(options);
  const client = useLatest(apiClient);
  const taskId = useLatest(id as string);
  // A new submit replaces the one before: only the latest one's outcome shows.
  const { inFlight, result, error, track } = useRequestState<RunHandle<T>>(undefined, true);

  const submit = useCallback(
    (payload: TaskPayload<T>, triggerOptions?: TriggerOptions) => {
      const current = client.current;
      track(() => {
        if (!current) throw new Error(MISSING_TOKEN);
        return current.triggerTask<T>(taskId.current, payload, triggerOptions);
      }).catch(() => {
        // The outcome shows in `error`: no unhandled rejection.
      });
    },
    [client, taskId, track],
  );

  return { submit, isLoading: inFlight > 0, handle: result, error };
}
