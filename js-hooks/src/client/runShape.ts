/**
 * Turns the bridge's wire run into the official hooks' run object (`RealtimeRun`).
 */
import type {
  RealtimeRun,
  RealtimeRunSkipColumns,
  RunStatus,
  SerializedError,
} from "../types.js";
import type { WireError, WireRun } from "./protocol.js";

const QUEUED: readonly string[] = ["PENDING_VERSION", "QUEUED", "PENDING", "DELAYED"];
const WAITING: readonly string[] = ["WAITING"];
const EXECUTING: readonly string[] = ["DEQUEUED", "EXECUTING"];
const FAILED: readonly string[] = ["FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"];
const SUCCESSFUL: readonly string[] = ["COMPLETED"];
const PACKET = "application/store";

/** The status booleans, defined exactly as the official hooks define them. */
export function statusBooleans(status: string) {
  return {
    isQueued: QUEUED.includes(status),
    isWaiting: WAITING.includes(status),
    isExecuting: EXECUTING.includes(status),
    isCompleted: SUCCESSFUL.includes(status) || FAILED.includes(status),
    isFailed: FAILED.includes(status),
    isSuccess: SUCCESSFUL.includes(status),
    isCancelled: status === "CANCELED",
  };
}

const API_STATUSES = new Set<string>([
  "PENDING_VERSION",
  "QUEUED",
  "DEQUEUED",
  "EXECUTING",
  "WAITING",
  "COMPLETED",
  "CANCELED",
  "FAILED",
  "CRASHED",
  "SYSTEM_FAILURE",
  "DELAYED",
  "EXPIRED",
  "TIMED_OUT",
]);

/** API statuses pass through; the official database names are mapped as the official client maps them. */
export function normalizeStatus(status: string): RunStatus {
  if (API_STATUSES.has(status)) return status as RunStatus;
  switch (status) {
    case "WAITING_FOR_DEPLOY":
      return "PENDING_VERSION";
    case "PENDING":
      return "QUEUED";
    case "PAUSED":
    case "WAITING_TO_RESUME":
      return "WAITING";
    case "RETRYING_AFTER_FAILURE":
      return "EXECUTING";
    case "COMPLETED_SUCCESSFULLY":
      return "COMPLETED";
    case "INTERRUPTED":
    case "COMPLETED_WITH_ERRORS":
      return "FAILED";
    default:
      return "QUEUED";
  }
}

export function toDate(value: unknown): Date | undefined {
  if (value instanceof Date) return value;
  if (typeof value !== "string" && typeof value !== "number") return undefined;
  if (value === "") return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** `{name, message, stackTrace}` as is; the official TaskRunError union as the official client shows it. */
export function toSerializedError(error: WireError | null | undefined): SerializedError | undefined {
  if (!error || typeof error !== "object") return undefined;
  switch (error.type) {
    case "STRING_ERROR":
    case "CUSTOM_ERROR":
      return { message: String(error.raw ?? error.message ?? "") };
    case "INTERNAL_ERROR":
      return { message: `trigger.dev internal error (${error.code ?? "unknown"})` };
    default: {
      const result = {} as SerializedError;
      if (error.name !== undefined) result.name = error.name;
      result.message = String(error.message ?? "");
      if (error.stackTrace !== undefined) result.stackTrace = error.stackTrace;
      if (error.causes?.length) result.causes = error.causes;
      return result;
    }
  }
}

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

const cache = new WeakMap<WireRun, Map<string, RealtimeRun>>();

/**
 * The run object of the realtime hooks. The same wire object (and skip set) gives the same
 * result object, so unchanged runs keep their identity between renders.
 */
export function toRealtimeRun<T = any>(
  wire: WireRun,
  skipColumns?: RealtimeRunSkipColumns,
): RealtimeRun<T> {
  const skipKey = skipColumns && skipColumns.length ? [...skipColumns].sort().join(",") : "";
  let byKey = cache.get(wire);
  const cached = byKey?.get(skipKey);
  if (cached) return cached as RealtimeRun<T>;

  const skip = new Set<string>(skipColumns ?? []);
  const status = normalizeStatus(String(wire.status));
  const createdAt = toDate(wire.createdAt) ?? new Date(0);
  // `output` is null until the run completes: the official object has no output then.
  // A packet's value is not in the frame (its path is): the official route
  // GET /api/v1/runs/{id}/packets/{payload|output} gives a URL to fetch it from.
  const output =
    skip.has("output") || skip.has("outputType") || wire.output === undefined || wire.outputType === PACKET
      ? undefined
      : wire.output === null && status !== "COMPLETED"
        ? undefined
        : wire.output;

  const run: RealtimeRun = {
    id: wire.id,
    taskIdentifier: wire.taskIdentifier,
    status,
    payload:
      skip.has("payload") || skip.has("payloadType") || wire.payloadType === PACKET ? undefined : wire.payload,
    output,
    createdAt,
    updatedAt: toDate(wire.updatedAt) ?? createdAt,
    durationMs: skip.has("usageDurationMs") ? 0 : (wire.durationMs ?? 0),
    costInCents: skip.has("costInCents") ? 0 : (wire.costInCents ?? 0),
    baseCostInCents: skip.has("baseCostInCents") ? 0 : (wire.baseCostInCents ?? 0),
    tags: skip.has("runTags") ? [] : (wire.tags ?? []),
    idempotencyKey: optionalString(wire.idempotencyKey),
    expiredAt: skip.has("expiredAt") ? undefined : toDate(wire.expiredAt),
    finishedAt: skip.has("completedAt") ? undefined : toDate(wire.finishedAt),
    startedAt: skip.has("startedAt") ? undefined : toDate(wire.startedAt),
    delayedUntil: skip.has("delayUntil") ? undefined : toDate(wire.delayedUntil ?? wire.delayUntil),
    // The bridge queues a run when it is created (its official feed says so too).
    queuedAt: skip.has("queuedAt") ? undefined : (toDate(wire.queuedAt) ?? createdAt),
    metadata: skip.has("metadata") ? undefined : (wire.metadata ?? undefined),
    error: skip.has("error") ? undefined : toSerializedError(wire.error),
    isTest: skip.has("isTest") ? false : (wire.isTest ?? false),
    realtimeStreams: wire.realtimeStreams ?? [],
    number: skip.has("number") ? 0 : (wire.number ?? 0),
    ...statusBooleans(status),
  };
  // Like the official object, no `ttl` key unless the run has one.
  const ttl = skip.has("ttl") ? undefined : optionalString(wire.ttl);
  if (ttl !== undefined) run.ttl = ttl;
  if (typeof wire.attemptNumber === "number") run.attemptNumber = wire.attemptNumber;

  if (!byKey) {
    byKey = new Map();
    cache.set(wire, byKey);
  }
  byKey.set(skipKey, run);
  return run as RealtimeRun<T>;
}

/** Runs ordered as the official hooks order them: by `createdAt`, oldest first. */
export function sortByCreatedAt<R extends { createdAt: Date; id: string }>(runs: R[]): R[] {
  return runs.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
}
