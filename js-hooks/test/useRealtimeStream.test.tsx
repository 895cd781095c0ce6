import { act, render, renderHook, screen, waitFor } from "@testing-library/react";
import React, { StrictMode } from "react";
import { describe, expect, test } from "vitest";
import {
  defineStream,
  getRealtimeClient,
  useRealtimeRunWithStreams,
  useRealtimeStream,
  type RealtimeError,
} from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

const RUN = "run_000000000000000000000abc";

function streamSubscribes() {
  return bridge.framesOfType("subscribe").filter((frame) => frame.feed === "stream");
}

/** The fake bridge's current epoch of a stream of RUN. */
function epochOf(key: string): string {
  return bridge.epochs.get(`${RUN}\n${key}`)!;
}

describe("useRealtimeStream", () => {
  test("every chunk, in order: the ones written before subscribing, then live ones", async () => {
    for (const word of ["a", "b", "c"]) bridge.append(RUN, "ai", word);
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["a", "b", "c"]));
    for (const word of ["d", "e", "f", "g"]) bridge.append(RUN, "ai", word);
    await waitFor(() => expect(result.current.parts).toEqual(["a", "b", "c", "d", "e", "f", "g"]));
    expect(result.current.lastEventId).toBe(`6-${epochOf("ai")}`); // the index and the stream's epoch
    expect(result.current.error).toBeUndefined();

    const [frame] = streamSubscribes();
    expect(frame).toMatchObject({
      type: "subscribe",
      feed: "stream",
      runId: RUN,
      key: "ai",
      startIndex: 0,
      timeoutInSeconds: 60,
      token: "tok",
    });
    expect(streamSubscribes()).toHaveLength(1);
  });

  test("the (runId, options) form reads the \"default\" stream; JSON chunks arrive as they were written", async () => {
    bridge.append(RUN, "default", { delta: "x", n: 1 });
    bridge.append(RUN, "default", [1, 2]);
    const { result } = renderHook(() =>
      useRealtimeStream<unknown>(RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual([{ delta: "x", n: 1 }, [1, 2]]));
    expect(streamSubscribes()[0]).toMatchObject({ key: "default" });
  });

  test("defineStream: the stream's id is the key", async () => {
    const aiStream = defineStream<string>("ai");
    bridge.append(RUN, "ai", "hello");
    const { result } = renderHook(() =>
      useRealtimeStream(aiStream, RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["hello"]));
  });

  test("resumes after a reconnect at the last index + 1: no chunk twice, none missing", async () => {
    const seen: string[] = [];
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", {
        accessToken: "tok",
        baseURL: bridge.baseURL,
        onData: (chunk) => seen.push(chunk),
      }),
    );
    await bridge.until(() => bridge.streamSubscriptions(RUN, "ai").length === 1, 5000, "subscribe");
    for (const word of ["w0", "w1", "w2"]) bridge.append(RUN, "ai", word);
    await waitFor(() => expect(result.current.parts).toEqual(["w0", "w1", "w2"]));

    bridge.dropAll();
    // Written while the page is disconnected: the resumed subscription brings them.
    bridge.append(RUN, "ai", "w3");
    bridge.append(RUN, "ai", "w4");
    await bridge.until(() => streamSubscribes().length === 2, 5000, "resubscribe");
    expect(streamSubscribes()[1]).toMatchObject({ startIndex: 3, key: "ai", runId: RUN, epoch: epochOf("ai") });
    bridge.append(RUN, "ai", "w5");
    await waitFor(() => expect(result.current.parts).toEqual(["w0", "w1", "w2", "w3", "w4", "w5"]));
    expect(seen).toEqual(["w0", "w1", "w2", "w3", "w4", "w5"]);
    expect(bridge.connections).toHaveLength(2);
  });

  test("duplicate chunks from the server are dropped by index; a hole makes it read again from the missing index", async () => {
    bridge.onSubscribe = (frame) => (frame.feed === "stream" ? { kind: "hold" } : { kind: "snapshot" });
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL, throttleInMs: 0 }),
    );
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    const sub = bridge.streamSubscriptions()[0]!;
    const chunk = (index: number, data: string, id = sub.id) =>
      bridge.send(sub.connection, { type: "chunk", id, index, data });
    chunk(0, "a");
    chunk(1, "b");
    chunk(0, "a");
    chunk(1, "b");
    chunk(2, "c");
    await waitFor(() => expect(result.current.parts).toEqual(["a", "b", "c"]));
    // A hole: index 5 while 3 is next -> unsubscribe and subscribe again from 3.
    chunk(5, "f");
    await bridge.until(() => streamSubscribes().length === 2, 5000, "resubscribe after a hole");
    expect(streamSubscribes()[1]).toMatchObject({ startIndex: 3 });
    expect(bridge.framesOfType("unsubscribe").map((frame) => frame.id)).toEqual([sub.id]);
    const again = bridge.streamSubscriptions()[0]!;
    bridge.send(again.connection, { type: "chunk", id: again.id, index: 3, data: "d" });
    bridge.send(again.connection, { type: "chunk", id: again.id, index: 4, data: "e" });
    bridge.send(again.connection, { type: "chunk", id: again.id, index: 5, data: "f" });
    // Chunks of the abandoned subscription id are ignored.
    chunk(6, "stale");
    await waitFor(() => expect(result.current.parts).toEqual(["a", "b", "c", "d", "e", "f"]));
  });

  test("end with reason error: the stream failed, the parts stay and error says why", async () => {
    bridge.append(RUN, "ai", "one");
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["one"]));
    bridge.append(RUN, "ai", "two");
    bridge.endStream(RUN, "ai", { code: "stream_failed", message: "stream 'ai' failed: it stops at index 2" });
    await waitFor(() => expect(result.current.error).toBeDefined());
    expect(result.current.parts).toEqual(["one", "two"]);
    expect((result.current.error as RealtimeError).code).toBe("stream_failed");
    expect(result.current.error?.message).toBe("stream 'ai' failed: it stops at index 2");
  });

  test("end: the subscription is over, the parts stay, and a reconnect does not subscribe again", async () => {
    bridge.append(RUN, "ai", "one");
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["one"]));
    bridge.append(RUN, "ai", "two");
    bridge.endStream(RUN, "ai");
    await waitFor(() => expect(result.current.parts).toEqual(["one", "two"]));
    await bridge.until(() => bridge.streamSubscriptions().length === 0, 5000, "ended");
    const client = getRealtimeClient(bridge.baseURL);
    expect(client.streamCount).toBe(1); // still held by the hook, ended
    bridge.dropAll();
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Nothing live is left: no reconnect for an ended stream.
    expect(bridge.connections).toHaveLength(1);
    expect(streamSubscribes()).toHaveLength(1);
    expect(result.current.parts).toEqual(["one", "two"]);
  });

  test("a reader that joins after the stream ended gets all of it", async () => {
    for (const word of ["x", "y", "z"]) bridge.append(RUN, "ai", word);
    bridge.endStream(RUN, "ai");
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["x", "y", "z"]));
  });

  test("throttleInMs batches re-renders; onData still sees every chunk", async () => {
    let renders = 0;
    const seen: number[] = [];
    const { result } = renderHook(() => {
      renders += 1;
      return useRealtimeStream<number>(RUN, "n", {
        accessToken: "tok",
        baseURL: bridge.baseURL,
        throttleInMs: 300,
        onData: (n) => seen.push(n),
      });
    });
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    const before = renders;
    for (let i = 0; i < 50; i++) bridge.append(RUN, "n", i);
    await waitFor(() => expect(result.current.parts).toHaveLength(50));
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
    // Leading edge + at most a couple of trailing flushes, not 50 renders.
    expect(renders - before).toBeLessThanOrEqual(4);
  });

  test("default throttle is 16 ms; throttleInMs: 0 renders every chunk as it arrives", async () => {
    const lengths: number[] = [];
    const { result } = renderHook(() => {
      const value = useRealtimeStream<number>(RUN, "n", {
        accessToken: "tok",
        baseURL: bridge.baseURL,
        throttleInMs: 0,
      });
      lengths.push(value.parts.length);
      return value;
    });
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    for (let i = 0; i < 5; i++) {
      bridge.append(RUN, "n", i);
      await waitFor(() => expect(result.current.parts).toHaveLength(i + 1));
    }
    expect(new Set(lengths)).toEqual(new Set([0, 1, 2, 3, 4, 5]));
  });

  test("two hooks on one stream share one server subscription and show the same parts", async () => {
    function Reader({ testId }: { testId: string }) {
      const { parts } = useRealtimeStream<string>(RUN, "ai", { accessToken: "same", baseURL: bridge.baseURL });
      return <div data-testid={testId}>{parts.join("|")}</div>;
    }
    bridge.append(RUN, "ai", "a");
    render(
      <StrictMode>
        <Reader testId="one" />
        <Reader testId="two" />
      </StrictMode>,
    );
    await waitFor(() => expect(screen.getByTestId("one").textContent).toBe("a"));
    bridge.append(RUN, "ai", "b");
    bridge.append(RUN, "ai", "c");
    await waitFor(() => expect(screen.getByTestId("one").textContent).toBe("a|b|c"));
    await waitFor(() => expect(screen.getByTestId("two").textContent).toBe("a|b|c"));
    expect(streamSubscribes()).toHaveLength(1);
    expect(bridge.connections).toHaveLength(1);
  });

  test("a hook mounted later on a shared stream gets the chunks received before it", async () => {
    function Reader({ testId }: { testId: string }) {
      const { parts } = useRealtimeStream<string>(RUN, "ai", { accessToken: "same", baseURL: bridge.baseURL });
      return <div data-testid={testId}>{parts.join("|")}</div>;
    }
    function Page({ second }: { second: boolean }) {
      return (
        <>
          <Reader testId="one" />
          {second && <Reader testId="two" />}
        </>
      );
    }
    const view = render(<Page second={false} />);
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    bridge.append(RUN, "ai", "a");
    bridge.append(RUN, "ai", "b");
    await waitFor(() => expect(screen.getByTestId("one").textContent).toBe("a|b"));
    view.rerender(<Page second />);
    await waitFor(() => expect(screen.getByTestId("two").textContent).toBe("a|b"));
    bridge.append(RUN, "ai", "c");
    await waitFor(() => expect(screen.getByTestId("two").textContent).toBe("a|b|c"));
    expect(screen.getByTestId("one").textContent).toBe("a|b|c");
    expect(streamSubscribes()).toHaveLength(1);
  });

  test("startIndex and lastEventId choose the first chunk", async () => {
    for (const word of ["0", "1", "2", "3"]) bridge.append(RUN, "ai", word);
    const fromTwo = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL, startIndex: 2 }),
    );
    await waitFor(() => expect(fromTwo.result.current.parts).toEqual(["2", "3"]));
    expect(fromTwo.result.current.lastEventId).toBe(`3-${epochOf("ai")}`);
    const afterOne = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL, lastEventId: "0", startIndex: 3 }),
    );
    await waitFor(() => expect(afterOne.result.current.parts).toEqual(["1", "2", "3"]));
  });

  test("a stream reset (its storage lost) while read, or found when resuming, is `error` stream_reset; the parts stay", async () => {
    for (const word of ["a", "b"]) bridge.append(RUN, "ai", word);
    const live = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(live.result.current.parts).toEqual(["a", "b"]));
    const oldEpoch = epochOf("ai");
    bridge.resetStream(RUN, "ai");
    await waitFor(() => expect((live.result.current.error as RealtimeError | undefined)?.code).toBe("stream_reset"));
    expect(live.result.current.parts).toEqual(["a", "b"]);

    // A resume: by `lastEventId` (its epoch is sent), or after a reconnect (the epoch learned is sent).
    for (const word of ["x", "y", "z"]) bridge.append(RUN, "ai", word);
    const byId = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL, lastEventId: `0-${oldEpoch}` }),
    );
    await waitFor(() => expect((byId.result.current.error as RealtimeError | undefined)?.code).toBe("stream_reset"));
    expect(byId.result.current.parts).toEqual([]);
    expect(streamSubscribes().at(-1)).toMatchObject({ startIndex: 1, epoch: oldEpoch });

    const reconnecting = renderHook(() =>
      // Another token: not the ended subscription of `live`, which hooks with the same (stream, token) share.
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok2", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(reconnecting.result.current.parts).toEqual(["x", "y", "z"]));
    const readEpoch = epochOf("ai");
    bridge.dropAll();
    bridge.resetStream(RUN, "ai"); // lost while the page was away, and written again past where it was
    for (const word of ["p", "q", "r", "s"]) bridge.append(RUN, "ai", word);
    await waitFor(() => expect((reconnecting.result.current.error as RealtimeError | undefined)?.code).toBe("stream_reset"));
    expect(streamSubscribes().at(-1)).toMatchObject({ startIndex: 3, epoch: readEpoch });
    expect(reconnecting.result.current.parts).toEqual(["x", "y", "z"]); // never "s" as if it followed "z"
  });

  test("the epoch of the first chunk frame is sent on resubscribe; a chunk of another epoch ends it with stream_reset", async () => {
    bridge.onSubscribe = (frame) => (frame.feed === "stream" ? { kind: "hold" } : { kind: "snapshot" });
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL, throttleInMs: 0 }),
    );
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    const first = bridge.streamSubscriptions()[0]!;
    bridge.send(first.connection, { type: "chunk", id: first.id, epoch: "e7", index: 0, data: "a" });
    bridge.send(first.connection, { type: "chunk", id: first.id, index: 2, data: "c" }); // a hole: read again
    await bridge.until(() => streamSubscribes().length === 2, 5000, "resubscribe after a hole");
    expect(streamSubscribes()[1]).toMatchObject({ startIndex: 1, epoch: "e7" });
    const again = bridge.streamSubscriptions().find((sub) => sub.id !== first.id)!;
    // A server that did not check the epoch sent chunks of another one: they are not parts of this stream.
    bridge.send(again.connection, { type: "chunk", id: again.id, epoch: "e8", index: 1, data: "other" });
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("stream_reset"));
    expect(result.current.parts).toEqual(["a"]);
    expect(bridge.framesOfType("unsubscribe").map((frame) => frame.id)).toEqual([first.id, again.id]);
  });

  test("maxParts keeps the last parts; onParts gets each flush with ids", async () => {
    const batches: Array<Array<{ id: string; chunk: string }>> = [];
    for (const word of ["a", "b", "c", "d"]) bridge.append(RUN, "ai", word);
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", {
        accessToken: "tok",
        baseURL: bridge.baseURL,
        maxParts: 2,
        onParts: (parts) => batches.push(parts.map(({ id, chunk }) => ({ id, chunk }))),
      }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["c", "d"]));
    expect(batches.flat()).toEqual([
      { id: `0-${epochOf("ai")}`, chunk: "a" },
      { id: `1-${epochOf("ai")}`, chunk: "b" },
      { id: `2-${epochOf("ai")}`, chunk: "c" },
      { id: `3-${epochOf("ai")}`, chunk: "d" },
    ]);
  });

  test("maxParts bounds what the shared client keeps, not only the parts shown", async () => {
    const seen: number[] = [];
    const { result } = renderHook(() =>
      useRealtimeStream<number>(RUN, "n", {
        accessToken: "tok",
        baseURL: bridge.baseURL,
        maxParts: 10,
        onData: (n) => seen.push(n),
      }),
    );
    await bridge.until(() => bridge.streamSubscriptions().length === 1, 5000, "subscribe");
    for (let i = 0; i < 10_000; i++) bridge.append(RUN, "n", i);
    const last10 = Array.from({ length: 10 }, (_, i) => 9990 + i);
    await waitFor(() => expect(result.current.parts).toEqual(last10));
    expect(result.current.lastEventId).toBe(`9999-${epochOf("n")}`);
    expect(seen).toHaveLength(10_000);
    // The hook's subscription in the client (a probe with the same bound shares it).
    const probe = getRealtimeClient(bridge.baseURL).subscribeStream(
      { runId: RUN, key: "n", startIndex: 0, timeoutInSeconds: 60 },
      "tok",
      () => {},
      { maxParts: 10 },
    );
    expect(probe.getState()).toMatchObject({ startIndex: 9990, count: 10, nextIndex: 10_000 });
    expect(probe.getState().chunks).toEqual(last10);
    probe.unsubscribe();
    expect(streamSubscribes()).toHaveLength(1);
  });

  test("an error frame becomes `error`; enabled: false does not subscribe", async () => {
    bridge.onSubscribe = () => ({ kind: "error", code: "not_found", message: "no such run" });
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("not_found"));
    expect(result.current.parts).toEqual([]);

    const disabled = renderHook(() =>
      useRealtimeStream<string>(RUN, "other", { accessToken: "tok", baseURL: bridge.baseURL, enabled: false }),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(disabled.result.current.parts).toEqual([]);
    expect(streamSubscribes().filter((frame) => frame.key === "other")).toHaveLength(0);
  });

  test("stop() unsubscribes and keeps the parts", async () => {
    bridge.append(RUN, "ai", "a");
    const { result } = renderHook(() =>
      useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.parts).toEqual(["a"]));
    act(() => result.current.stop());
    await bridge.until(() => bridge.streamSubscriptions().length === 0, 5000, "unsubscribe");
    bridge.append(RUN, "ai", "b");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(result.current.parts).toEqual(["a"]);
  });
});

describe("useRealtimeRunWithStreams", () => {
  test("opens a stream subscription for each key the run lists, as it appears", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const { result } = renderHook(() =>
      useRealtimeRunWithStreams<any, { ai: string; progress: { done: number } }>(run.id, {
        accessToken: "tok",
        baseURL: bridge.baseURL,
      }),
    );
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    expect(result.current.streams).toEqual({});
    bridge.append(run.id, "ai", "Hel");
    bridge.append(run.id, "ai", "lo");
    await waitFor(() => expect(result.current.streams.ai).toEqual(["Hel", "lo"]));
    bridge.append(run.id, "progress", { done: 1 });
    await waitFor(() => expect(result.current.streams.progress).toEqual([{ done: 1 }]));
    bridge.append(run.id, "ai", "!");
    await waitFor(() => expect(result.current.streams.ai).toEqual(["Hel", "lo", "!"]));
    expect(result.current.streams.ai).toEqual(["Hel", "lo", "!"]);
    // One subscription per key, each from index 0, resumed but never repeated.
    expect(streamSubscribes().map((frame) => [frame.key, frame.startIndex])).toEqual([
      ["ai", 0],
      ["progress", 0],
    ]);

    bridge.change(run.id, { status: "COMPLETED", finishedAt: new Date().toISOString() });
    bridge.endStream(run.id, "ai");
    bridge.endStream(run.id, "progress");
    await waitFor(() => expect(result.current.run?.status).toBe("COMPLETED"));
    expect(result.current.streams.ai?.join("")).toBe("Hello!");
  });

  test("a stream reset is its `error`", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    bridge.append(run.id, "ai", "Hel");
    const { result } = renderHook(() =>
      useRealtimeRunWithStreams<any, { ai: string }>(run.id, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.streams.ai).toEqual(["Hel"]));
    bridge.resetStream(run.id, "ai");
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("stream_reset"));
    expect(result.current.error?.message).toContain("was reset");
  });
});
