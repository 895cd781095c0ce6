import { act, renderHook, waitFor } from "@testing-library/react";
import React from "react";
import { describe, expect, expectTypeOf, test } from "vitest";
import {
  getRealtimeClient,
  RealtimeError,
  TriggerAuthContext,
  useInputStreamSend,
  useRealtimeRun,
  useWaitToken,
} from "../src/index.js";
import { makeRun, type ClientFrame, type Connection, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

const TOKEN = "waitpoint_00000000000000000000000a";
const OTHER = "waitpoint_00000000000000000000000b";

/**
 * Renders useWaitToken(TOKEN) and calls `completeAsync("yes")`: it must reject with a RealtimeError
 * of `code`, which then shows in `error`, with isLoading and isCompleted false. Returns the hook's result.
 */
async function expectCompleteAsyncRejects(code: string) {
  const { result } = renderHook(() => useWaitToken<string>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }));
  let promise!: Promise<unknown>;
  act(() => {
    promise = result.current.completeAsync("yes");
  });
  const error = await promise.catch((reason: unknown) => reason);
  expect(error).toBeInstanceOf(RealtimeError);
  expect((error as RealtimeError).code).toBe(code);
  await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe(code));
  expect(result.current).toMatchObject({ isLoading: false, isCompleted: false });
  return result;
}

describe("useWaitToken", () => {
  test("sends a `complete` frame with the token; isLoading while in flight, then isCompleted on the ack", async () => {
    const held: Array<{ connection: Connection; frame: ClientFrame }> = [];
    bridge.onComplete = (frame, connection) => {
      held.push({ connection, frame });
      return { kind: "hold" };
    };
    const { result } = renderHook(() =>
      useWaitToken<{ approved: boolean }>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    expect(result.current).toMatchObject({ isReady: true, isLoading: false, isCompleted: false, error: undefined });

    let promise!: Promise<void>;
    act(() => {
      promise = result.current.completeAsync({ approved: true });
    });
    await waitFor(() => expect(held).toHaveLength(1));
    expect(result.current.isLoading).toBe(true);
    expect(result.current.isCompleted).toBe(false);
    expect(held[0]!.frame).toEqual({
      type: "complete",
      id: held[0]!.frame.id,
      tokenId: TOKEN,
      data: { approved: true },
      token: "tok",
    });
    expect(typeof held[0]!.frame.id).toBe("string");

    bridge.ackComplete(held[0]!.connection, held[0]!.frame);
    await expect(promise).resolves.toBeUndefined();
    await waitFor(() => expect(result.current.isCompleted).toBe(true));
    expect(result.current.isLoading).toBe(false);
    expect(result.current.error).toBeUndefined();
    expect(bridge.completions.get(TOKEN)).toEqual({ approved: true });
  });

  test("complete() is fire and forget; completing again acks again and keeps the first output", async () => {
    const { result } = renderHook(() => useWaitToken<string>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }));
    act(() => result.current.complete("first"));
    await waitFor(() => expect(result.current.isCompleted).toBe(true));
    act(() => result.current.complete("second"));
    await waitFor(() => expect(bridge.framesOfType("complete")).toHaveLength(2));
    await waitFor(() => expect(result.current.isLoading).toBe(false));
    expect(result.current).toMatchObject({ isCompleted: true, error: undefined });
    expect(bridge.completions.get(TOKEN)).toBe("first");
  });

  test("an error frame rejects with the bridge's code and sets `error`; isCompleted stays false until a success", async () => {
    bridge.onComplete = () => ({ kind: "error", code: "forbidden", message: "no write:waitpoints scope" });
    const result = await expectCompleteAsyncRejects("forbidden");

    // complete() never leaves an unhandled rejection: the error shows in `error`.
    bridge.onComplete = () => ({ kind: "error", code: "not_found" });
    act(() => result.current.complete("yes"));
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("not_found"));
    expect(result.current.isCompleted).toBe(false);

    bridge.onComplete = () => ({ kind: "ack" });
    act(() => result.current.complete("yes"));
    await waitFor(() => expect(result.current.isCompleted).toBe(true));
    expect(result.current.error).toBeUndefined();
  });

  test("an undefined output is sent as `\"data\": null` (the frame must carry data)", async () => {
    const raw: string[] = [];
    bridge.onComplete = (_frame, connection) => {
      raw.push(JSON.stringify(connection.frames.at(-1)));
      return { kind: "ack" };
    };
    const { result } = renderHook(() => useWaitToken<void>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }));
    await act(async () => {
      await result.current.completeAsync(undefined);
    });
    const [frame] = bridge.framesOfType("complete");
    expect("data" in frame!).toBe(true);
    expect(frame!.data).toBeNull();
    expect(raw[0]).toContain('"data":null');
    expect(bridge.completions.has(TOKEN)).toBe(true);
    expect(result.current.isCompleted).toBe(true);
  });

  test("a new token id resets the state; a completion of the old id settling later leaves it alone", async () => {
    const held: Array<{ connection: Connection; frame: ClientFrame }> = [];
    const { result, rerender } = renderHook(
      ({ id }: { id?: string }) => useWaitToken<string>(id, { accessToken: "tok", baseURL: bridge.baseURL }),
      { initialProps: { id: TOKEN } as { id?: string } },
    );
    await act(async () => {
      await result.current.completeAsync("done");
    });
    expect(result.current.isCompleted).toBe(true);

    rerender({ id: OTHER });
    expect(result.current).toMatchObject({ isCompleted: false, isLoading: false, error: undefined, isReady: true });

    // In flight for OTHER, then the id changes: its ack must not mark the next id completed.
    bridge.onComplete = (frame, connection) => {
      held.push({ connection, frame });
      return { kind: "hold" };
    };
    let promise!: Promise<void>;
    act(() => {
      promise = result.current.completeAsync("late");
    });
    await waitFor(() => expect(held).toHaveLength(1));
    expect(held[0]!.frame.tokenId).toBe(OTHER);
    expect(result.current.isLoading).toBe(true);
    rerender({ id: TOKEN });
    expect(result.current).toMatchObject({ isCompleted: false, isLoading: false });
    bridge.ackComplete(held[0]!.connection, held[0]!.frame);
    await act(async () => {
      await promise;
    });
    expect(result.current).toMatchObject({ isCompleted: false, isLoading: false, error: undefined });
    expect(bridge.completions.get(OTHER)).toBe("late");

    rerender({ id: undefined });
    expect(result.current).toMatchObject({ isReady: false, isCompleted: false });
  });

  test("shares the page's one WebSocket with the other hooks", async () => {
    const run = bridge.setRun(makeRun({ status: "WAITING" }));
    const { result } = renderHook(() => ({
      run: useRealtimeRun(run.id, { accessToken: "tok", baseURL: bridge.baseURL }),
      input: useInputStreamSend<string>("cancel", run.id, { accessToken: "tok", baseURL: bridge.baseURL }),
      approval: useWaitToken<{ approved: boolean }>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }),
    }));
    await waitFor(() => expect(result.current.run.run?.status).toBe("WAITING"));
    await act(async () => {
      await Promise.all([result.current.approval.completeAsync({ approved: true }), result.current.input.sendAsync("x")]);
    });
    expect(result.current.approval.isCompleted).toBe(true);
    expect(bridge.connections).toHaveLength(1);
    expect(bridge.framesOfType("complete")).toHaveLength(1);
  });

  test("not ready without a token id, an access token, or when disabled; completing then sends nothing", async () => {
    const { result, rerender } = renderHook(
      ({ id, accessToken, enabled }: { id?: string; accessToken?: string; enabled?: boolean }) =>
        useWaitToken<string>(id, { accessToken, baseURL: bridge.baseURL, enabled }),
      { initialProps: { accessToken: "tok" } as { id?: string; accessToken?: string; enabled?: boolean } },
    );
    expect(result.current.isReady).toBe(false);
    act(() => result.current.complete("x"));
    await waitFor(() => expect(result.current.error?.message).toMatch(/Missing token ID/));
    expect(result.current.isCompleted).toBe(false);

    rerender({ id: TOKEN, accessToken: undefined, enabled: false });
    expect(result.current.isReady).toBe(false);
    const error = await result.current.completeAsync("x").catch((reason: unknown) => reason);
    expect((error as Error).message).toMatch(/disabled/);

    rerender({ id: TOKEN, accessToken: "tok", enabled: false });
    expect(result.current.isReady).toBe(false);
    rerender({ id: TOKEN, accessToken: "tok", enabled: true });
    expect(result.current.isReady).toBe(true);
    expect(bridge.framesOfType("complete")).toHaveLength(0);
    expect(bridge.connections).toHaveLength(0);
  });

  test("reads the token and baseURL from TriggerAuthContext", async () => {
    const wrapper = ({ children }: { children: React.ReactNode }) => (
      <TriggerAuthContext.Provider value={{ accessToken: "ctx", baseURL: bridge.baseURL }}>{children}</TriggerAuthContext.Provider>
    );
    const { result } = renderHook(() => useWaitToken<boolean>(TOKEN), { wrapper });
    expect(result.current.isReady).toBe(true);
    await act(async () => {
      await result.current.completeAsync(true);
    });
    expect(bridge.framesOfType("complete")[0]).toMatchObject({ token: "ctx", data: true });
  });

  test("a completion in flight when the socket drops is sent again on the next connection (completing is idempotent)", async () => {
    bridge.onComplete = () => ({ kind: "hold" });
    const { result } = renderHook(() => useWaitToken<string>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }));
    let promise!: Promise<void>;
    act(() => {
      promise = result.current.completeAsync("yes");
    });
    await bridge.until(() => bridge.framesOfType("complete").length === 1, 5000, "the complete frame");
    bridge.onComplete = () => ({ kind: "ack" });
    bridge.dropAll();
    await expect(promise).resolves.toBeUndefined();
    await waitFor(() => expect(result.current.isCompleted).toBe(true));
    expect(result.current).toMatchObject({ isLoading: false, error: undefined });
    const frames = bridge.frames.filter(({ frame }) => frame.type === "complete");
    expect(frames.map(({ frame }) => [frame.tokenId, frame.data])).toEqual([
      [TOKEN, "yes"],
      [TOKEN, "yes"],
    ]);
    expect(frames[0]!.connection).not.toBe(frames[1]!.connection);
    expect(getRealtimeClient(bridge.baseURL).pendingSendCount).toBe(0);
  });

  test("a completion whose connection drops three times fails with connection_lost", async () => {
    bridge.onComplete = (_frame, connection) => {
      setTimeout(() => connection.ws.terminate(), 0);
      return { kind: "hold" };
    };
    await expectCompleteAsyncRejects("connection_lost");
    expect(bridge.framesOfType("complete")).toHaveLength(3);
    expect(new Set(bridge.frames.filter(({ frame }) => frame.type === "complete").map(({ connection }) => connection)).size).toBe(3);
  });

  test("an unauthorized completion is retried once with a refreshed token", async () => {
    bridge.onComplete = (frame) => (frame.token === "fresh" ? { kind: "ack" } : { kind: "error", code: "unauthorized" });
    const { result } = renderHook(() =>
      useWaitToken<string>(TOKEN, { accessToken: "old", baseURL: bridge.baseURL, refreshAccessToken: async () => "fresh" }),
    );
    await act(async () => {
      await result.current.completeAsync("yes");
    });
    expect(result.current.isCompleted).toBe(true);
    expect(bridge.framesOfType("complete").map((frame) => frame.token)).toEqual(["old", "fresh"]);
  });

  test("the client: a completion over the frame limit is refused locally; types follow the type parameter", async () => {
    const client = getRealtimeClient(bridge.baseURL);
    await expect(client.completeToken(TOKEN, "small", "tok")).resolves.toBeUndefined();
    // The fake bridge's welcome announces 64 KiB.
    const error = await client.completeToken(TOKEN, "x".repeat(70 * 1024), "tok").catch((reason) => reason);
    expect((error as RealtimeError).code).toBe("payload_too_large");
    expect(bridge.framesOfType("complete")).toHaveLength(1);

    const { result } = renderHook(() => useWaitToken<{ approved: boolean }>(TOKEN, { accessToken: "tok", baseURL: bridge.baseURL }));
    expectTypeOf(result.current.complete).parameter(0).toEqualTypeOf<{ approved: boolean }>();
    expectTypeOf(result.current.completeAsync).returns.toEqualTypeOf<Promise<void>>();
  });
});
