/**
 * Public types. They mirror `@trigger.dev/core`'s run types (RunShape / RealtimeRun,
 * RetrieveRunResult, RunHandle, TriggerOptions) without depending on that package.
 */

/** Any JSON value, as the official `DeserializedJson`. */
export type DeserializedJson =
  | string
  | number
  | boolean
  | null
  | { [key: string]: DeserializedJson }
  | DeserializedJson[];

/**
 * Every run status the official hooks can report. The bridge itself produces DELAYED, QUEUED,
 * EXECUTING, WAITING, COMPLETED, FAILED, CANCELED, CRASHED, EXPIRED and TIMED_OUT.
 */
export type RunStatus =
  | "PENDING_VERSION"
  | "QUEUED"
  | "DEQUEUED"
  | "EXECUTING"
  | "WAITING"
  | "COMPLETED"
  | "CANCELED"
  | "FAILED"
  | "CRASHED"
  | "SYSTEM_FAILURE"
  | "DELAYED"
  | "EXPIRED"
  | "TIMED_OUT";

/** A run's error, as the official `SerializedError`. */
export type SerializedError = {
  message: string;
  name?: string;
  stackTrace?: string;
  causes?: Array<{ name?: string; message: string; stackTrace?: string }>;
};

/**
 * What a run's type parameters resolve to. This is the official `RunTypes`, plus `metadata`.
 */
export type RunTypes<
  TTaskIdentifier extends string = string,
  TPayload = any,
  TOutput = any,
  TMetadata = Record<string, DeserializedJson>,
> = {
  taskIdentifier: TTaskIdentifier;
  payload: TPayload;
  output: TOutput;
  metadata: TMetadata;
};

export type AnyRunTypes = RunTypes<string, any, any, any>;

/**
 * The shape you describe a Python task with when typing a hook:
 *
 * ```ts
 * type Resize = { payload: { url: string }; output: { thumb: string }; metadata?: { progress: number } };
 * useRealtimeRun<Resize>(runId);
 * ```
 *
 * Every key is optional; a missing one stays `any`.
 */
export type RunTypesSpec = {
  taskIdentifier?: string;
  payload?: unknown;
  output?: unknown;
  metadata?: unknown;
};

/**
 * The structural part of an official `Task` (what `typeof myTask` is when the task is defined with
 * `@trigger.dev/sdk`), read without importing the SDK.
 */
type TaskLike = {
  id: string;
  trigger: (payload: any, ...rest: any[]) => any;
  triggerAndWait: (payload: any, ...rest: any[]) => PromiseLike<any>;
};

type TaskOutputOf<T extends TaskLike> =
  Extract<Awaited<ReturnType<T["triggerAndWait"]>>, { ok: true }> extends { output: infer O }
    ? O
    : any;

type SpecField<T, K extends keyof RunTypesSpec, TDefault> = K extends keyof T
  ? Exclude<T[K], undefined> extends never
    ? TDefault
    : Exclude<T[K], undefined>
  : TDefault;

type IsAny<T> = 0 extends 1 & T ? true : false;

/**
 * Resolves a hook's type parameter to {@link RunTypes}. Accepts, in this order:
 * - nothing / `any`: everything is `any`;
 * - an official `Task` type (`typeof myTask`), for projects that also have TypeScript task definitions;
 * - a {@link RunTypes}-like object type: `{ payload: P; output: O; metadata?: M; taskIdentifier?: "id" }`.
 */
export type InferRunTypes<T> =
  IsAny<T> extends true
    ? AnyRunTypes
    : T extends TaskLike
      ? RunTypes<
          T["id"],
          Parameters<T["trigger"]>[0],
          TaskOutputOf<T>,
          Record<string, DeserializedJson>
        >
      : T extends RunTypesSpec
        ? RunTypes<
            SpecField<T, "taskIdentifier", string> extends string
              ? SpecField<T, "taskIdentifier", string>
              : string,
            SpecField<T, "payload", any>,
            SpecField<T, "output", any>,
            SpecField<T, "metadata", Record<string, DeserializedJson>>
          >
        : AnyRunTypes;

/** The payload type of a hook's type parameter. */
export type TaskPayload<T> = InferRunTypes<T>["payload"];
/** The output type of a hook's type parameter. */
export type TaskOutput<T> = InferRunTypes<T>["output"];
/** The task identifier type of a hook's type parameter (`string` unless you say otherwise). */
export type TaskIdentifier<T> = InferRunTypes<T>["taskIdentifier"];

/**
 * A run as the realtime hooks return it: the official `RunShape` field for field, plus `number`.
 */
export type RunShape<TRunTypes extends AnyRunTypes> = {
  id: string;
  taskIdentifier: TRunTypes["taskIdentifier"];
  payload: TRunTypes["payload"];
  output?: TRunTypes["output"];
  createdAt: Date;
  updatedAt: Date;
  status: RunStatus;
  durationMs: number;
  costInCents: number;
  baseCostInCents: number;
  tags: string[];
  idempotencyKey?: string;
  expiredAt?: Date;
  ttl?: string;
  finishedAt?: Date;
  startedAt?: Date;
  delayedUntil?: Date;
  queuedAt?: Date;
  metadata?: TRunTypes["metadata"];
  error?: SerializedError;
  isTest: boolean;
  isQueued: boolean;
  isExecuting: boolean;
  isWaiting: boolean;
  isCompleted: boolean;
  isFailed: boolean;
  isSuccess: boolean;
  isCancelled: boolean;
  realtimeStreams: string[];
  /** The run's number (per task). Not in the official RunShape; the bridge sends it. */
  number: number;
  /**
   * The current attempt (1 for the first; 0 before it starts), when the feed carries it: the
   * bridge's WebSocket does, the official Electric feed does not. Not in the official RunShape.
   */
  attemptNumber?: number;
};

/** A run as `useRealtimeRun` & co. return it. `T` is anything {@link InferRunTypes} accepts. */
export type RealtimeRun<T = any> = RunShape<InferRunTypes<T>>;
export type AnyRealtimeRun = RealtimeRun<any>;

/** Columns that `skipColumns` can leave out (the official column names). */
export type RealtimeRunSkipColumns = Array<
  | "startedAt"
  | "delayUntil"
  | "queuedAt"
  | "expiredAt"
  | "completedAt"
  | "number"
  | "isTest"
  | "usageDurationMs"
  | "costInCents"
  | "baseCostInCents"
  | "ttl"
  | "payload"
  | "payloadType"
  | "metadata"
  | "output"
  | "outputType"
  | "runTags"
  | "error"
>;

/** A related run in {@link RetrieveRunResult}. */
export type RelatedRunDetails = {
  id: string;
  status: RunStatus;
  taskIdentifier: string;
  idempotencyKey?: string;
  version?: string;
  isQueued: boolean;
  isExecuting: boolean;
  isWaiting: boolean;
  isCompleted: boolean;
  isSuccess: boolean;
  isFailed: boolean;
  isCancelled: boolean;
  isTest: boolean;
  createdAt: Date;
  updatedAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
  delayedUntil?: Date;
  ttl?: string;
  expiredAt?: Date;
  tags: string[];
  costInCents: number;
  baseCostInCents: number;
  durationMs: number;
  metadata?: Record<string, any>;
  taskKind?: string;
  region?: string;
  depth: number;
  triggerFunction: "triggerAndWait" | "trigger" | "batchTriggerAndWait" | "batchTrigger";
  batchId?: string;
};

/** What `useRun` returns in `run`: the official `RetrieveRunResult` (GET /api/v3/runs/{id}). */
export type RetrieveRunResult<T = any> = Omit<RelatedRunDetails, "metadata"> & {
  payload?: TaskPayload<T>;
  payloadPresignedUrl?: string;
  output?: TaskOutput<T>;
  outputPresignedUrl?: string;
  metadata?: InferRunTypes<T>["metadata"];
  error?: SerializedError;
  schedule?: {
    id: string;
    externalId?: string;
    deduplicationKey?: string;
    generator: { type: "CRON"; expression: string; description: string };
  };
  relatedRuns: {
    root?: RelatedRunDetails;
    parent?: RelatedRunDetails;
    children?: RelatedRunDetails[];
  };
  attemptCount: number;
};

/** The handle `useTaskTrigger` returns once a run is triggered (the official `RunHandle`). */
export type RunHandle<T = any> = {
  id: string;
  /** A token that can read this run: the trigger response's `x-trigger-jwt` header. */
  publicAccessToken: string;
  taskIdentifier: TaskIdentifier<T>;
  isCached?: boolean;
};

/**
 * Options of `submit(payload, options)`: the official `TriggerOptions` that a browser trigger sends.
 * The bridge refuses `concurrency` and `version` (422 `unsupported_option`, naming the field): it does
 * not implement them.
 */
export type TriggerOptions = {
  /** Queue name. */
  queue?: string;
  /** One or two named concurrency limits. */
  concurrency?: string | string[];
  /** A copy of the queue, with its concurrency limit, per value of the key. */
  concurrencyKey?: string;
  /** Seconds: among runs waiting for a slot of their queue, ordered as if queued that much earlier. */
  priority?: number;
  /**
   * Deduplicates triggers. Like the official client, a key that is not already a 64-character
   * hash is hashed (SHA-256, hex) before sending; an array is joined with "-" first.
   */
  idempotencyKey?: string | string[];
  /** A duration ("1h", "30m") or a date to run at. */
  delay?: string | Date;
  /** A duration after which a run that has not started expires. */
  ttl?: string | number;
  tags?: string | string[];
  maxAttempts?: number;
  metadata?: Record<string, any>;
  maxDuration?: number;
  /** Sent as `lockToVersion`. */
  version?: string;
  debounce?: { key: string; delay: string; mode?: "leading" | "trailing"; maxDelay?: string };
};
