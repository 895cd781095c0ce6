"use client";
import type { RealtimeRunSkipColumns, TaskIdentifier } from "../types.js";
import { useRealtimeRun, type UseRealtimeRunInstance, type UseRealtimeSingleRunOptions } from "./useRealtimeRun.js";
import { useTaskTrigger, type TriggerInstance, type UseTaskTriggerOptions } from "./useTaskTrigger.js";

export type UseRealtimeTaskTriggerOptions<T = any> = UseTaskTriggerOptions &
  Pick<UseRealtimeSingleRunOptions<T>, "onComplete" | "stopOnCompletion"> & {
    /** `false`: don't subscribe to the triggered run. */
    enabled?: boolean;
    /** Accepted for compatibility; updates are applied as they arrive. */
    experimental_throttleInMs?: number;
    /** Leave these fields out of the run object (applied in the browser). */
    skipColumns?: RealtimeRunSkipColumns;
  };

/** The official `RealtimeTriggerInstance`. */
export type RealtimeTriggerInstance<T = any> = UseRealtimeRunInstance<T> & TriggerInstance<T>;

/**
 * Triggers a task, then follows the triggered run with the token the trigger returned.
 *
 * ```ts
 * const { submit, run, error, isLoading, handle, stop } = useRealtimeTaskTrigger<{ payload: In; output: Out }>("my-task", { accessToken, baseURL });
 * ```
 */
export function useRealtimeTaskTrigger<T = any>(
  id: TaskIdentifier<T>,
  options?: UseRealtimeTaskTriggerOptions<T>,
): RealtimeTriggerInstance<T> {
  const trigger = useTaskTrigger<T>(id, options);
  const realtime = useRealtimeRun<T>(trigger.handle?.id, {
    ...options,
    id: trigger.handle?.id,
    accessToken: trigger.handle?.publicAccessToken ?? options?.accessToken,
  });
  return {
    submit: trigger.submit,
    isLoading: trigger.isLoading,
    handle: trigger.handle,
    run: realtime.run,
    error: realtime.error ?? trigger.error,
    stop: realtime.stop,
  };
}
