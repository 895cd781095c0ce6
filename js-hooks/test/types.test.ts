/**
 * Type-level checks (run by `npm run typecheck`; vitest runs them as no-ops).
 */
import { describe, expectTypeOf, test } from "vitest";
import type {
  InferRunTypes,
  RealtimeRun,
  RetrieveRunResult,
  RunHandle,
  TaskPayload,
  UseRealtimeRunInstance,
  UseRealtimeRunsInstance,
  useRealtimeRun,
  useRealtimeTaskTrigger,
  useRun,
  useTaskTrigger,
} from "../src/index.js";

// The structure of the official `Task` type (`typeof myTask` with @trigger.dev/sdk), reduced to
// what the hooks read: id, trigger(payload) and triggerAndWait's result.
type TaskRunResult<TId extends string, TOutput> =
  | { ok: true; id: string; taskIdentifier: TId; output: TOutput }
  | { ok: false; id: string; taskIdentifier: TId; error: unknown };
interface Task<TId extends string, TInput = void, TOutput = any> {
  id: TId;
  description?: string;
  trigger: (payload: TInput, options?: unknown) => Promise<{ id: string; publicAccessToken: string; taskIdentifier: TId }>;
  batchTrigger: (items: Array<{ payload: TInput }>) => Promise<unknown>;
  triggerAndWait: (payload: TInput, options?: unknown) => Promise<TaskRunResult<TId, TOutput>> & { unwrap(): Promise<TOutput> };
}
declare const resizeTask: Task<"resize-image", { url: string }, { thumb: string }>;

type Resize = { payload: { url: string }; output: { thumb: string }; metadata?: { progress: number } };

describe("type parameters", () => {
  test("a { payload, output, metadata } spec", () => {
    type Run = RealtimeRun<Resize>;
    expectTypeOf<Run["payload"]>().toEqualTypeOf<{ url: string }>();
    expectTypeOf<Run["output"]>().toEqualTypeOf<{ thumb: string } | undefined>();
    expectTypeOf<Run["metadata"]>().toEqualTypeOf<{ progress: number } | undefined>();
    expectTypeOf<Run["taskIdentifier"]>().toEqualTypeOf<string>();
    expectTypeOf<Run["createdAt"]>().toEqualTypeOf<Date>();
    expectTypeOf<Run["finishedAt"]>().toEqualTypeOf<Date | undefined>();
    expectTypeOf<Run["isSuccess"]>().toEqualTypeOf<boolean>();
  });

  test("an official Task type (typeof myTask)", () => {
    type Run = RealtimeRun<typeof resizeTask>;
    expectTypeOf<Run["payload"]>().toEqualTypeOf<{ url: string }>();
    expectTypeOf<Run["output"]>().toEqualTypeOf<{ thumb: string } | undefined>();
    expectTypeOf<Run["taskIdentifier"]>().toEqualTypeOf<"resize-image">();
    expectTypeOf<TaskPayload<typeof resizeTask>>().toEqualTypeOf<{ url: string }>();
  });

  test("no type parameter: any", () => {
    expectTypeOf<RealtimeRun["payload"]>().toBeAny();
    expectTypeOf<InferRunTypes<any>["output"]>().toBeAny();
  });

  test("hooks carry the type through", () => {
    expectTypeOf<ReturnType<typeof useRealtimeRun<Resize>>>().toEqualTypeOf<UseRealtimeRunInstance<Resize>>();
    expectTypeOf<ReturnType<typeof useRealtimeRun<Resize>>["run"]>().toEqualTypeOf<RealtimeRun<Resize> | undefined>();
    expectTypeOf<UseRealtimeRunsInstance<Resize>["runs"]>().toEqualTypeOf<RealtimeRun<Resize>[]>();
    expectTypeOf<ReturnType<typeof useRun<Resize>>["run"]>().toEqualTypeOf<RetrieveRunResult<Resize> | undefined>();
    expectTypeOf<Parameters<ReturnType<typeof useTaskTrigger<Resize>>["submit"]>[0]>().toEqualTypeOf<{ url: string }>();
    expectTypeOf<ReturnType<typeof useTaskTrigger<typeof resizeTask>>["handle"]>().toEqualTypeOf<
      RunHandle<typeof resizeTask> | undefined
    >();
    expectTypeOf<Parameters<typeof useTaskTrigger<typeof resizeTask>>[0]>().toEqualTypeOf<"resize-image">();
    expectTypeOf<ReturnType<typeof useRealtimeTaskTrigger<Resize>>["run"]>().toEqualTypeOf<RealtimeRun<Resize> | undefined>();
  });
});
