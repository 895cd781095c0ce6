/**
 * An `error` frame of the WebSocket protocol for one subscription (code `forbidden`,
 * `token_expired`, ...), or `connection_failed` when the bridge cannot be reached.
 */
export class RealtimeError extends Error {
  override readonly name = "RealtimeError";
  /** The protocol's error code, or `connection_failed`. */
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** A non-2xx answer of the bridge's HTTP API (useRun, useTaskTrigger). */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly status: number;
  /** The parsed JSON body, when there was one. */
  readonly body: unknown;

  constructor(status: number, message: string, body?: unknown) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** `reason` if it is an Error, else an Error with its text: what a hook shows as `error`. */
export function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
