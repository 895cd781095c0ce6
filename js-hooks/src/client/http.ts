/**
 * The two HTTP calls the hooks make (the bridge serves the official Trigger.dev routes):
 * GET /api/v3/runs/{id} and POST /api/v1/tasks/{id}/trigger.
 */
import { ApiError } from "./errors.js";
import { normalizeStatus, statusBooleans, toDate } from "./runShape.js";
import type { RetrieveRunResult, RunHandle, TriggerOptions } from "../types.js";

export type RequestConfig = {
  baseURL: string;
  accessToken: string;
  signal?: AbortSignal;
};

const RETRYABLE = new Set([408, 409, 429]);
const MAX_ATTEMPTS = 3;

function joinURL(baseURL: string, path: string): string {
  return `${baseURL.replace(/\/+$/, "")}${path}`;
}

function abortError(): Error {
  const error = new Error("The operation was aborted");
  error.name = "AbortError";
  return error;
}

function wait(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A JSON request with `Authorization: Bearer`. Retries 408, 409, 429, 5xx and network errors
 * (3 attempts in all, like the official client) unless the server says `x-should-retry: false`.
 */
export async function requestJSON(
  config: RequestConfig,
  path: string,
  init: { method: "GET" | "POST"; body?: unknown },
): Promise<{ data: unknown; response: Response }> {
  const headers: Record<string, string> = {
    Authorization: `Bearer ${config.accessToken}`,
    Accept: "application/json",
  };
  if (init.body !== undefined) headers["Content-Type"] = "application/json";
  const url = joinURL(config.baseURL, path);
  for (let attempt = 1; ; attempt++) {
    let response: Response;
    try {
      response = await fetch(url, {
        method: init.method,
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: config.signal,
      });
    } catch (error) {
      if (config.signal?.aborted || (error as Error)?.name === "AbortError") throw error;
      if (attempt >= MAX_ATTEMPTS) throw error;
      await wait(backoff(attempt), config.signal);
      continue;
    }
    const text = await response.text();
    let data: unknown = undefined;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (response.ok) return { data, response };
    const retry =
      response.headers.get("x-should-retry") !== "false" &&
      (RETRYABLE.has(response.status) || response.status >= 500);
    if (retry && attempt < MAX_ATTEMPTS) {
      await wait(backoff(attempt), config.signal);
      continue;
    }
    const message =
      data && typeof data === "object" && typeof (data as { error?: unknown }).error === "string"
        ? (data as { error: string }).error
        : typeof data === "string" && data
          ? data
          : response.statusText || "request failed";
    throw new ApiError(response.status, `${response.status} ${message}`, data);
  }
}

function backoff(attempt: number): number {
  return Math.floor(Math.random() * Math.min(4000, 250 * 2 ** attempt));
}

const DATE_FIELDS = [
  "createdAt",
  "updatedAt",
  "startedAt",
  "finishedAt",
  "delayedUntil",
  "expiredAt",
] as const;

/** As the official zod schema reads a run: dates become Dates, nulls become absent. */
function reviveRun(raw: Record<string, unknown>): Record<string, unknown> {
  const run: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value !== null) run[key] = value;
  }
  for (const field of DATE_FIELDS) {
    if (field in run) {
      const date = toDate(run[field]);
      if (date) run[field] = date;
      else delete run[field];
    }
  }
  if (typeof run.status === "string") {
    const status = normalizeStatus(run.status);
    run.status = status;
    const booleans = statusBooleans(status);
    for (const [key, value] of Object.entries(booleans)) {
      if (typeof run[key] !== "boolean") run[key] = value;
    }
  }
  if (!Array.isArray(run.tags)) run.tags = [];
  for (const field of ["costInCents", "baseCostInCents", "durationMs", "depth"]) {
    if (typeof run[field] !== "number") run[field] = 0;
  }
  if (typeof run.isTest !== "boolean") run.isTest = false;
  if (typeof run.triggerFunction !== "string") run.triggerFunction = "trigger";
  return run;
}

/** GET /api/v3/runs/{runId}, shaped like the official `retrieveRun` result. */
export async function retrieveRun<T = any>(
  config: RequestConfig,
  runId: string,
): Promise<RetrieveRunResult<T>> {
  const { data } = await requestJSON(config, `/api/v3/runs/${encodeURIComponent(runId)}`, {
    method: "GET",
  });
  if (!data || typeof data !== "object") {
    throw new ApiError(200, "the run response is not a JSON object", data);
  }
  const run = reviveRun(data as Record<string, unknown>);
  const related = (data as { relatedRuns?: Record<string, unknown> | null }).relatedRuns;
  const relatedRuns: Record<string, unknown> = {};
  if (related && typeof related === "object") {
    for (const key of ["root", "parent"] as const) {
      const value = related[key];
      if (value && typeof value === "object") {
        relatedRuns[key] = reviveRun(value as Record<string, unknown>);
      }
    }
    if (Array.isArray(related.children)) {
      relatedRuns.children = related.children
        .filter((child): child is Record<string, unknown> => !!child && typeof child === "object")
        .map(reviveRun);
    }
  }
  run.relatedRuns = relatedRuns;
  if (typeof run.attemptCount !== "number") run.attemptCount = 0;
  return run as RetrieveRunResult<T>;
}

async function sha256Hex(text: string): Promise<string | undefined> {
  const subtle = (globalThis as { crypto?: Crypto }).crypto?.subtle;
  if (!subtle) return undefined;
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest))
    .map((byte) => byte.toString(16).padStart(2, "0"))
    .join("");
}

/**
 * The official client's idempotency key: a 64-character string is taken as an already made key;
 * anything else is hashed (an array joined with "-" first). Without WebCrypto (an insecure
 * origin), the key is sent as given.
 */
export async function makeIdempotencyKey(
  key: string | string[] | undefined,
): Promise<string | undefined> {
  if (!key || (Array.isArray(key) && key.length === 0)) return undefined;
  if (typeof key === "string" && key.length === 64) return key;
  const material = Array.isArray(key) ? key.join("-") : key;
  return (await sha256Hex(material)) ?? material;
}

/** The trigger request's `options`, mapped from `TriggerOptions` as the official hook maps them. */
export async function triggerRequestOptions(
  options: TriggerOptions | undefined,
): Promise<Record<string, unknown>> {
  const concurrency = options?.concurrency
    ? Array.isArray(options.concurrency)
      ? options.concurrency
      : [options.concurrency]
    : undefined;
  if (concurrency && concurrency.length > 2) {
    throw new Error("The concurrency option accepts at most two named limits.");
  }
  const mapped: Record<string, unknown> = {
    queue: options?.queue ? { name: options.queue } : undefined,
    concurrency,
    concurrencyKey: options?.concurrencyKey,
    priority: options?.priority,
    idempotencyKey: await makeIdempotencyKey(options?.idempotencyKey),
    delay: options?.delay,
    ttl: options?.ttl,
    tags: options?.tags,
    maxAttempts: options?.maxAttempts,
    metadata: options?.metadata,
    maxDuration: options?.maxDuration,
    lockToVersion: options?.version,
    debounce: options?.debounce,
  };
  for (const key of Object.keys(mapped)) {
    if (mapped[key] === undefined) delete mapped[key];
  }
  return mapped;
}

/**
 * POST /api/v1/tasks/{taskId}/trigger with `{payload, options}`. The payload is sent as a plain
 * JSON value (a string with `payloadType: "text/plain"`). The handle's `publicAccessToken` is the
 * response's `x-trigger-jwt` header (or, when the server sends none, the token used to trigger).
 */
export async function triggerTask<T = any>(
  config: RequestConfig,
  taskId: string,
  payload: unknown,
  options?: TriggerOptions,
): Promise<RunHandle<T>> {
  const requestOptions = await triggerRequestOptions(options);
  // A string goes as text/plain, as the official client sends it; any other value as plain JSON
  // (no payloadType: the official server's default, "application/json", takes a JSON value).
  if (typeof payload === "string") requestOptions.payloadType = "text/plain";
  const body = { payload, options: requestOptions };
  const { data, response } = await requestJSON(
    config,
    `/api/v1/tasks/${encodeURIComponent(taskId)}/trigger`,
    { method: "POST", body },
  );
  const id = data && typeof data === "object" ? (data as { id?: unknown }).id : undefined;
  if (typeof id !== "string") {
    throw new ApiError(response.status, "the trigger response has no run id", data);
  }
  const handle: RunHandle<T> = {
    id,
    publicAccessToken: response.headers.get("x-trigger-jwt") ?? config.accessToken,
    taskIdentifier: taskId as RunHandle<T>["taskIdentifier"],
  };
  const isCached = (data as { isCached?: unknown }).isCached;
  if (typeof isCached === "boolean") handle.isCached = isCached;
  return handle;
}
