"use client";
import { useCallback } from "react";
import type { SendInputResult } from "../client/RealtimeClient.js";
import { getRealtimeClient } from "../client/registry.js";
import { newIdempotencyKey } from "../client/requests.js";
import { useLatest } from "../utils/useLatest.js";
import { useRequestState, withFreshToken } from "../utils/useRequestState.js";
import { useApiClient, type UseApiClientOptions } from "./useApiClient.js";

/**
 * A named input stream with the type of its values, for type-safe sends:
 *
 * ```ts
 * export const approval = defineInputStream<{ approved: boolean }>("approval"); // Python: streams.input("approval")
 * const { send } = useInputStreamSend(approval, runId, { accessToken });        // send({ approved: true })
 * ```
 *
 * An official input stream (from `streams.input` of `@trigger.dev/sdk`) fits too.
 */
export type RealtimeDefinedInputStream<TData> = {
  readonly id: string;
  /** Type-level only: never set. */
  readonly __inputType?: TData;
};

/** The value type of a defined input stream (ours or the official SDK's). */
export type InferInputStreamType<T> = T extends RealtimeDefinedInputStream<infer TData>
  ? unknown extends TData
    ? T extends { send: (runId: string, data: infer TSent, ...args: any[]) => any }
      ? TSent
      : TData
    : TData
  : T extends { send: (runId: string, data: infer TSent, ...args: any[]) => any }
    ? TSent
    : unknown;

/** Defines an input stream by its id, with the type of its values (nothing happens at runtime). */
export function defineInputStream<TData>(id: string): RealtimeDefinedInputStream<TData> {
  if (typeof id !== "string" || id.length === 0) {
    throw new Error("defineInputStream: id must be a non-empty string");
  }
  return Object.freeze({ id });
}

/** The official `InputStreamSendInstance`, plus `sendAsync`. */
export interface InputStreamSendInstance<TData> {
  /** Sends data to the input stream (fire and forget: `isLoading` and `error` tell how it went). */
  send: (data: TData) => void;
  /**
   * Bridge extra: the same send, as a promise that resolves once the bridge stored the value
   * (`{ index }`, its position in the run's input stream) and rejects with the `RealtimeError`
   * (`run_finished`, `not_found`, `forbidden`, `connection_lost`, ...). It also updates
   * `isLoading` and `error`.
   */
  sendAsync: (data: TData) => Promise<SendInputResult>;
  /** Whether a send is currently in progress. */
  isLoading: boolean;
  /** The error of the last send, until a send succeeds. */
  error?: Error;
  /** Whether the hook is ready to send (has a run id, an access token and a baseURL). */
  isReady: boolean;
}

/**
 * Sends data to an input stream of a running task over the shared WebSocket, with the official
 * hook's signature:
 *
 * ```ts
 * const { send, isLoading, isReady, error } = useInputStreamSend("cancel", runId, { accessToken });
 * send({ reason: "user pressed stop" });
 * const { send } = useInputStreamSend(defineInputStream<{ approved: boolean }>("approval"), runId, { accessToken });
 * ```
 *
 * A send resolves once the bridge acknowledged (stored) the value. Each call gets its own
 * idempotency key (`crypto.randomUUID()` where available, else a random string), so one written
 * to a connection that drops before the acknowledgement goes out again on the next connection and
 * is stored once. After 3 lost connections, `error` becomes a `RealtimeError` with code
 * `connection_lost` (it may or may not have been stored), and the caller decides.
 */
export function useInputStreamSend<TStream extends RealtimeDefinedInputStream<any>>(
  stream: TStream,
  runId?: string,
  options?: UseApiClientOptions,
): InputStreamSendInstance<InferInputStreamType<TStream>>;
export function useInputStreamSend<TData>(
  streamId: string,
  runId?: string,
  options?: UseApiClientOptions,
): InputStreamSendInstance<TData>;
export function useInputStreamSend(
  stream: string | RealtimeDefinedInputStream<unknown>,
  runId?: string,
  options?: UseApiClientOptions,
): InputStreamSendInstance<unknown> {
  const streamId = typeof stream === "string" ? stream : stream?.id;
  if (typeof streamId !== "string" || streamId.length === 0) {
    throw new Error("useInputStreamSend: the first argument must be an input stream id or a defined input stream");
  }
  const apiClient = useApiClient(options);
  const enabled = options?.enabled !== false;
  const isReady = enabled && !!runId && !!apiClient;

  const { inFlight, error, track } = useRequestState<SendInputResult>();
  const latest = useLatest({ apiClient, runId, streamId, enabled });
  const sendAsync = useCallback(
    (data: unknown): Promise<SendInputResult> =>
      track(() => {
        const { apiClient: api, runId: run, streamId: id, enabled: on } = latest.current;
        if (!on) throw new Error("Could not send to input stream: the hook is disabled");
        if (!api) throw new Error("Could not send to input stream: Missing access token");
        if (!run) throw new Error("Could not send to input stream: Missing run ID");
        const client = getRealtimeClient(api.baseURL);
        const idempotencyKey = newIdempotencyKey(); // one per call: its rewrites (reconnect, fresh token) reuse it
        return withFreshToken(api, (token) => client.sendInput(run, id, data, token, { idempotencyKey }));
      }),
    [latest, track],
  );

  const send = useCallback(
    (data: unknown) => {
      // The outcome shows in `error`: no unhandled rejection.
      sendAsync(data).catch(() => {});
    },
    [sendAsync],
  );

  return { send, sendAsync, isLoading: inFlight > 0, error, isReady };
}
