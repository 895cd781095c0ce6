"use client";
import { useCallback, useEffect, useRef, useState } from "react";
import type { RunHandle, TaskIdentifier, TaskPayload, TriggerOptions } from "../types.js";
import { useLatest } from "../utils/useLatest.js";
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

type TriggerState<T> = { isLoading: boolean; handle?: RunHandle<T>; error?: Error };

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
  const [state, setState] = useState<TriggerState<T>>({ isLoading: false });
  const latestCall = useRef(0);
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);

  const submit = useCallback(
    (payload: TaskPayload<T>, triggerOptions?: TriggerOptions) => {
      const call = ++latestCall.current;
      const current = client.current;
      const apply = (change: (previous: TriggerState<T>) => TriggerState<T>) => {
        if (mounted.current && call === latestCall.current) setState(change);
      };
      if (!current) {
        apply((previous) => ({ ...previous, isLoading: false, error: new Error(MISSING_TOKEN) }));
        return;
      }
      setState((previous) => ({ ...previous, isLoading: true }));
      current.triggerTask<T>(taskId.current, payload, triggerOptions).then(
        (handle) => apply(() => ({ isLoading: false, handle, error: undefined })),
        (error: unknown) =>
          apply((previous) => ({
            ...previous,
            isLoading: false,
            error: error instanceof Error ? error : new Error(String(error)),
          })),
      );
    },
    [client, taskId],
  );

  return { submit, isLoading: state.isLoading, handle: state.handle, error: state.error };
}
