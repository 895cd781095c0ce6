import { renderHook, waitFor } from "@testing-library/react";
import React from "react";
import { describe, expect, test, vi } from "vitest";
import {
  TriggerAuthContext,
  useRealtimeRun,
  type RealtimeRun,
  type UseRealtimeSingleRunOptions,
} from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

const TOKEN = "pk_test_token";

function follow(runId: string | undefined, options: UseRealtimeSingleRunOptions = {}) {
  const seen: Array<RealtimeRun | undefined> = [];
  const hook = renderHook(
    ({ id, opts }: { id: string | undefined; opts: UseRealtimeSingleRunOptions }) => {
      const result = useRealtimeRun(id, { accessToken: TOKEN, baseURL: bridge.baseURL, ...opts });
      seen.push(result.run);
      return result;
    },
    { initialProps: { id: runId, opts: options } },
  );
  return { ...hook, seen };
}

describe("useRealtimeRun", () => {
  test("shows the snapshot, then every update, as the official run object", async () => {
    const run = bridge.setRun(
      makeRun({
        status: "QUEUED",
        tags: ["user:1"],
        metadata: { progress: 0 },
        idempotencyKey: "key-1",
        realtimeStreams: ["default"],
      }),
    );
    const { result } = follow(run.id);

    await waitFor(() => expect(result.current.run?.status).toBe("QUEUED"));
    const subscribe = bridge.framesOfType("subscribe")[0]!;
    expect(subscribe).toMatchObject({ feed: "run", runId: run.id, token: TOKEN });

    const queued = result.current.run!;
    expect(queued).toMatchObject({
      id: run.id,
      taskIdentifier: "resize-image",
      payload: { url: "https://example.com/a.png" },
      output: undefined,
      tags: ["user:1"],
      metadata: { progress: 0 },
      idempotencyKey: "key-1",
      durationMs: 0,
      costInCents: 0,
      baseCostInCents: 0,
      isTest: false,
      realtimeStreams: ["default"],
      number: run.number,
      attemptNumber: 0,
      isQueued: true,
      isExecuting: false,
      isWaiting: false,
      isCompleted: false,
      isFailed: false,
      isSuccess: false,
      isCancelled: false,
    });
    expect(queued.createdAt).toBeInstanceOf(Date);
    expect(queued.createdAt.toISOString()).toBe(run.createdAt);
    expect(queued.updatedAt).toBeInstanceOf(Date);
    expect(queued.startedAt).toBeUndefined();
    expect(queued.finishedAt).toBeUndefined();
    expect(queued.error).toBeUndefined();

    const started = new Date().toISOString();
    bridge.change(run.id, { status: "EXECUTING", startedAt: started, metadata: { progress: 0.5 }, attemptNumber: 2 });
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    expect(result.current.run).toMatchObject({ isExecuting: true, metadata: { progress: 0.5 }, attemptNumber: 2 });
    expect(result.current.run!.startedAt).toEqual(new Date(started));

    bridge.change(run.id, { status: "WAITING" });
    await waitFor(() => expect(result.current.run?.isWaiting).toBe(true));
    expect(result.current.error).toBeUndefined();
  });

  test("keeps the highest version: an older update is discarded", async () => {
    const v1 = bridge.setRun(makeRun({ status: "QUEUED" }));
    const { result, seen } = follow(v1.id);
    await waitFor(() => expect(result.current.run?.status).toBe("QUEUED"));

    const [connection] = bridge.openConnections;
    const topic = `run:${v1.id}`;
    const v3 = { ...v1, status: "EXECUTING", version: 3 };
    const v2 = { ...v1, status: "WAITING", version: 2 };
    const v4 = { ...v1, status: "COMPLETED", version: 4, output: { ok: 1 }, finishedAt: new Date().toISOString() };
    expect(connection).toBeDefined();
    for (const run of [v3, v2, v3, v4]) bridge.publish(topic, run);

    await waitFor(() => expect(result.current.run?.status).toBe("COMPLETED"));
    const statuses = seen.filter(Boolean).map((run) => run!.status);
    expect(statuses).not.toContain("WAITING");
    expect(result.current.run!.output).toEqual({ ok: 1 });
    expect(result.current.run!.isSuccess).toBe(true);
  });

  test("an update that beats its snapshot is kept when newer than the snapshot", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED", version: 4 }));
    const newer = { ...run, status: "EXECUTING", version: 5 };
    bridge.onSubscribe = (frame, connection) => {
      // The live listener is attached before the snapshot is read: an update (v5) arrives
      // first, then a snapshot that still has v4.
      connection.subscriptions.set(frame.id, {
        id: frame.id,
        topic: `run:${run.id}`,
        token: frame.token,
        frame,
      });
      bridge.publish(`run:${run.id}`, newer);
      bridge.sendSnapshot(connection, frame.id, [run]);
      return { kind: "hold" };
    };
    const { result, seen } = follow(run.id);
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    expect(seen.filter(Boolean).map((r) => r!.status)).not.toContain("QUEUED");
  });

  test("onComplete fires once, only when finishedAt is set; then the subscription stops", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const onComplete = vi.fn();
    const { result } = follow(run.id, { onComplete });
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));

    // A final-looking status without finishedAt is not completion (official #2856 / #2929).
    bridge.change(run.id, { status: "COMPLETED", output: { thumb: "t.png" } });
    await waitFor(() => expect(result.current.run?.status).toBe("COMPLETED"));
    expect(onComplete).not.toHaveBeenCalled();

    const finishedAt = new Date().toISOString();
    bridge.change(run.id, { finishedAt, durationMs: 42 });
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    const [completed, error] = onComplete.mock.calls[0]!;
    expect(completed).toMatchObject({ id: run.id, status: "COMPLETED", output: { thumb: "t.png" }, durationMs: 42 });
    expect(completed.finishedAt).toEqual(new Date(finishedAt));
    expect(error).toBeUndefined();

    // stopOnCompletion (default true): the hook unsubscribes.
    await bridge.until(() => bridge.framesOfType("unsubscribe").length === 1, 5000, "unsubscribe");
    expect(bridge.framesOfType("unsubscribe")[0]!.id).toBe(bridge.framesOfType("subscribe")[0]!.id);
    expect(result.current.run?.status).toBe("COMPLETED");
    expect(onComplete).toHaveBeenCalledTimes(1);
  });

  test("stopOnCompletion: false keeps following a finished run; onComplete still fires once", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const onComplete = vi.fn();
    const { result } = follow(run.id, { onComplete, stopOnCompletion: false });
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));

    bridge.change(run.id, { status: "COMPLETED", finishedAt: new Date().toISOString() });
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    bridge.change(run.id, { metadata: { written: "after completion" } });
    await waitFor(() => expect(result.current.run?.metadata).toEqual({ written: "after completion" }));
    expect(onComplete).toHaveBeenCalledTimes(1);
    expect(bridge.framesOfType("unsubscribe")).toHaveLength(0);
  });

  test("a run that is already finished completes at once", async () => {
    const run = bridge.setRun(
      makeRun({ status: "FAILED", finishedAt: new Date().toISOString(), error: { name: "Error", message: "boom", stackTrace: "at x" } }),
    );
    const onComplete = vi.fn();
    const { result } = follow(run.id, { onComplete });
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    expect(result.current.run).toMatchObject({
      isFailed: true,
      isCompleted: true,
      isSuccess: false,
      error: { name: "Error", message: "boom", stackTrace: "at x" },
    });
  });

  test("CANCELED is isCancelled but not isCompleted, as in the official hooks", async () => {
    const run = bridge.setRun(makeRun({ status: "CANCELED", finishedAt: new Date().toISOString() }));
    const { result } = follow(run.id);
    await waitFor(() => expect(result.current.run?.status).toBe("CANCELED"));
    expect(result.current.run).toMatchObject({ isCancelled: true, isCompleted: false, isFailed: false });
  });

  test("stop() unsubscribes; later changes are not shown", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED" }));
    const { result } = follow(run.id);
    await waitFor(() => expect(result.current.run?.status).toBe("QUEUED"));
    result.current.stop();
    await bridge.until(() => bridge.liveSubscriptions.length === 0, 5000, "unsubscribe");
    bridge.change(run.id, { status: "EXECUTING" });
    expect(result.current.run?.status).toBe("QUEUED");
  });

  test("an error frame in answer to subscribe surfaces as error", async () => {
    bridge.onSubscribe = () => ({ kind: "error", code: "forbidden", message: "Unauthorized: read:runs needed" });
    const { result } = follow("run_000000000000000000000abc");
    await waitFor(() => expect(result.current.error).toBeDefined());
    expect(result.current.error).toMatchObject({
      name: "RealtimeError",
      code: "forbidden",
      message: "Unauthorized: read:runs needed",
    });
    expect(result.current.run).toBeUndefined();
  });

  test("token_expired ends the subscription and surfaces; the last state stays", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const { result } = follow(run.id);
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    const [connection] = bridge.openConnections;
    const subscription = [...connection!.subscriptions.values()][0]!;
    bridge.failSubscription(connection!, subscription.id, "token_expired");
    await waitFor(() => expect(result.current.error).toMatchObject({ code: "token_expired" }));
    expect(result.current.run?.status).toBe("EXECUTING");
  });

  test("with refreshAccessToken, an expired token is replaced and the feed resumes", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const refreshAccessToken = vi.fn(async () => "fresh-token");
    const { result } = follow(run.id, { refreshAccessToken });
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    const [connection] = bridge.openConnections;
    const subscription = [...connection!.subscriptions.values()][0]!;
    bridge.change(run.id, { status: "WAITING" }); // arrives before the expiry below
    bridge.failSubscription(connection!, subscription.id, "token_expired");
    await bridge.until(() => bridge.liveSubscriptions.some((s) => s.token === "fresh-token"));
    expect(refreshAccessToken).toHaveBeenCalledTimes(1);
    bridge.change(run.id, { status: "COMPLETED", finishedAt: new Date().toISOString() });
    await waitFor(() => expect(result.current.run?.status).toBe("COMPLETED"));
    expect(result.current.error).toBeUndefined();
  });

  test("enabled: false and a missing runId subscribe to nothing", async () => {
    const run = bridge.setRun(makeRun());
    const disabled = follow(run.id, { enabled: false });
    const noId = follow(undefined);
    // Another hook that does subscribe: once its snapshot is in, the others had their chance.
    const { result } = follow(run.id);
    await waitFor(() => expect(result.current.run).toBeDefined());
    expect(bridge.framesOfType("subscribe")).toHaveLength(1);
    expect(disabled.result.current.run).toBeUndefined();
    expect(noId.result.current.run).toBeUndefined();
  });

  test("switching runId follows the new run and never shows the old one for it", async () => {
    const a = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const b = bridge.setRun(makeRun({ status: "QUEUED" }));
    const { result, rerender } = follow(a.id);
    await waitFor(() => expect(result.current.run?.id).toBe(a.id));
    rerender({ id: b.id, opts: {} });
    expect(result.current.run?.id).not.toBe(a.id);
    await waitFor(() => expect(result.current.run?.id).toBe(b.id));
    await bridge.until(() => bridge.framesOfType("unsubscribe").length === 1);
  });

  test("reads accessToken and baseURL from TriggerAuthContext", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED" }));
    const wrapper = ({ children }: { children: React.ReactNode }) => (
      <TriggerAuthContext.Provider value={{ accessToken: "ctx-token", baseURL: bridge.baseURL }}>
        {children}
      </TriggerAuthContext.Provider>
    );
    const { result } = renderHook(() => useRealtimeRun(run.id), { wrapper });
    await waitFor(() => expect(result.current.run?.status).toBe("QUEUED"));
    expect(bridge.framesOfType("subscribe")[0]!.token).toBe("ctx-token");
  });

  test("throws a clear error without a baseURL (there is no cloud default)", () => {
    const spy = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      expect(() => renderHook(() => useRealtimeRun("run_1", { accessToken: TOKEN }))).toThrow(
        /Missing baseURL/,
      );
      expect(() => renderHook(() => useRealtimeRun("run_1", { baseURL: bridge.baseURL }))).toThrow(
        /Missing accessToken/,
      );
      // enabled: false makes a missing setting no error, as in the official hooks.
      const { result } = renderHook(() => useRealtimeRun("run_1", { enabled: false }));
      expect(result.current.run).toBeUndefined();
    } finally {
      spy.mockRestore();
    }
  });

  test("skipColumns leaves fields out of the run object", async () => {
    const run = bridge.setRun(
      makeRun({ status: "EXECUTING", payload: { big: "x".repeat(100) }, tags: ["a"], startedAt: new Date().toISOString() }),
    );
    const { result } = follow(run.id, { skipColumns: ["payload", "runTags", "startedAt"] });
    await waitFor(() => expect(result.current.run?.status).toBe("EXECUTING"));
    expect(result.current.run).toMatchObject({ payload: undefined, tags: [], startedAt: undefined });
  });

  test("a delayed run shows DELAYED and when; a packet's storage path is not shown as its value", async () => {
    const delayedUntil = new Date(Date.now() + 60_000).toISOString();
    const run = bridge.setRun(
      makeRun({ status: "DELAYED", delayedUntil, ttl: "10m", payload: "run_1/payload.json", payloadType: "application/store" }),
    );
    const { result } = follow(run.id);
    await waitFor(() => expect(result.current.run?.status).toBe("DELAYED"));
    expect(result.current.run).toMatchObject({ isQueued: true, delayedUntil: new Date(delayedUntil), ttl: "10m" });
    expect(result.current.run?.payload).toBeUndefined();
  });
});
