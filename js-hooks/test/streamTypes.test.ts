/**
 * Type-level checks of the stream hooks (run by `npm run typecheck`; vitest runs them as no-ops).
 */
import { describe, expectTypeOf, test } from "vitest";
import {
  defineStream,
  type InferStreamType,
  type RealtimeDefinedStream,
  type UseRealtimeRunWithStreamsInstance,
  type UseRealtimeStreamInstance,
  type useRealtimeRunWithStreams,
  type useRealtimeStream,
} from "../src/index.js";

type Chunk = { delta: string; done?: boolean };
declare const runId: string;

// The official SDK's RealtimeDefinedStream<T> (from `streams.define<T>()`), reduced to its shape.
type OfficialDefinedStream<TPart> = {
  id: string;
  pipe: (value: AsyncIterable<TPart>) => unknown;
  read: (runId: string) => Promise<AsyncIterable<TPart>>;
  append: (value: TPart, options?: unknown) => Promise<void>;
  writer: (options: unknown) => unknown;
};

describe("stream typing", () => {
  test("defineStream<T> carries T to the hook's parts and onData", () => {
    const aiStream = defineStream<Chunk>("ai");
    expectTypeOf(aiStream).toEqualTypeOf<RealtimeDefinedStream<Chunk>>();
    expectTypeOf<InferStreamType<typeof aiStream>>().toEqualTypeOf<Chunk>();
    type Result = UseRealtimeStreamInstance<Chunk>;
    expectTypeOf<Result["parts"]>().toEqualTypeOf<Chunk[]>();
    const call = (hook: typeof useRealtimeStream) =>
      hook(aiStream, runId, {
        onData: (chunk) => {
          expectTypeOf(chunk).toEqualTypeOf<Chunk>();
        },
      });
    expectTypeOf<ReturnType<typeof call>>().toEqualTypeOf<UseRealtimeStreamInstance<Chunk>>();
  });

  test("an official defined stream infers its chunk type too", () => {
    expectTypeOf<InferStreamType<OfficialDefinedStream<number>>>().toEqualTypeOf<number>();
  });

  test("the (runId, key) and (runId, options) forms take the part type as a parameter", () => {
    const withKey = (hook: typeof useRealtimeStream) => hook<string>(runId, "ai", { throttleInMs: 50 });
    expectTypeOf<ReturnType<typeof withKey>["parts"]>().toEqualTypeOf<string[]>();
    const withDefault = (hook: typeof useRealtimeStream) => hook<number>(runId, { startIndex: 3 });
    expectTypeOf<ReturnType<typeof withDefault>["parts"]>().toEqualTypeOf<number[]>();
    const untyped = (hook: typeof useRealtimeStream) => hook(runId, "ai");
    expectTypeOf<ReturnType<typeof untyped>["parts"]>().toEqualTypeOf<unknown[]>();
    // @ts-expect-error a defined stream's second argument is the run id, not options
    const wrong = (hook: typeof useRealtimeStream) => hook(defineStream<string>("ai"), { startIndex: 1 });
    void wrong;
  });

  test("useRealtimeRunWithStreams types its streams", () => {
    const call = (hook: typeof useRealtimeRunWithStreams) =>
      hook<{ output: string }, { ai: string; progress: { done: number } }>(runId);
    type Result = ReturnType<typeof call>;
    expectTypeOf<Result>().toEqualTypeOf<
      UseRealtimeRunWithStreamsInstance<{ output: string }, { ai: string; progress: { done: number } }>
    >();
    expectTypeOf<Result["streams"]["ai"]>().toEqualTypeOf<string[]>();
    expectTypeOf<Result["streams"]["progress"]>().toEqualTypeOf<Array<{ done: number }>>();
  });
});
