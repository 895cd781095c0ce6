import { act, renderHook, waitFor } from "@testing-library/react";
import { describe, expect, expectTypeOf, test } from "vitest";
import {
  defineInputStream,
  getRealtimeClient,
  RealtimeError,
  useInputStreamSend,
  useRealtimeStream,
} from "../src/index.js";
import { newIdempotencyKey } from "../src/client/requests.js";
import type { ClientFrame, Connection, FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

const RUN = "run_000000000000000000000abc";

describe("useInputStreamSend", () => {
  test("an undefined value is sent as `\"data\": null` (the frame must carry data)", async () => {
    const { result } = renderHook(() =>
      useInputStreamSend<void>("stop", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await act(async () => {
      await result.current.sendAsync(undefined);
    });
    const [frame] = bridge.framesOfType("send");
    expect("data" in frame!).toBe(true);
    expect(frame!.data).toBeNull();
  });

  test("sends a `send` frame with the token and resolves on the ack; isLoading while in flight", async () => {
    const held: Array<{ connection: Connection; frame: ClientFrame }> = [];
    bridge.onSend = (frame, connection) => {
      held.push({ connection, frame });
      return { kind: "hold" };
    };
    const { result } = renderHook(() =>
      useInputStreamSend<{ approved: boolean }>("approval", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    expect(result.current.isReady).toBe(true);
    expect(result.current.isLoading).toBe(false);

    let promise!: Promise<{ index: number }>;
    act(() => {
      promise = result.current.sendAsync({ approved: true });
    });
    await waitFor(() => expect(held).toHaveLength(1));
    expect(result.current.isLoading).toBe(true);
    expect(held[0]!.frame).toMatchObject({
      type: "send",
      runId: RUN,
      streamId: "approval",
      data: { approved: true },
      token: "tok",
    });
    expect(typeof held[0]!.frame.id).toBe("string");

    bridge.ackSend(held[0]!.connection, held[0]!.frame);
    await expect(promise).resolves.toEqual({ index: 0 });
    await waitFor(() => expect(result.current.isLoading).toBe(false));
    expect(result.current.error).toBeUndefined();
    expect(bridge.inputValues(RUN, "approval")).toEqual([{ approved: true }]);
  });

  test("send() is fire and forget: values are stored in order, over the one shared socket", async () => {
    const { result } = renderHook(() => ({
      cancel: useInputStreamSend<string>("cancel", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
      stream: useRealtimeStream<string>(RUN, "ai", { accessToken: "tok", baseURL: bridge.baseURL }),
    }));
    act(() => {
      for (const value of ["a", "b", "c"]) result.current.cancel.send(value);
    });
    await waitFor(() => expect(bridge.inputValues(RUN, "cancel")).toEqual(["a", "b", "c"]));
    await waitFor(() => expect(result.current.cancel.isLoading).toBe(false));
    expect(bridge.connections).toHaveLength(1);
    expect(bridge.framesOfType("send").map((frame) => frame.data)).toEqual(["a", "b", "c"]);
  });

  test("an error frame rejects the send and sets `error` with the bridge's code; a later success clears it", async () => {
    bridge.onSend = () => ({ kind: "error", code: "run_finished", message: "the run is COMPLETED" });
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    let promise!: Promise<unknown>;
    act(() => {
      promise = result.current.sendAsync("stop");
    });
    const error = await promise.catch((reason: unknown) => reason);
    expect(error).toBeInstanceOf(RealtimeError);
    expect((error as RealtimeError).code).toBe("run_finished");
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("run_finished"));
    expect(result.current.isLoading).toBe(false);

    // send() never leaves an unhandled rejection: the error shows in `error`.
    bridge.onSend = () => ({ kind: "error", code: "forbidden" });
    act(() => result.current.send("stop"));
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("forbidden"));

    bridge.onSend = () => ({ kind: "ack" });
    act(() => result.current.send("stop"));
    await waitFor(() => expect(result.current.error).toBeUndefined());
    expect(bridge.inputValues(RUN, "cancel")).toEqual(["stop"]);
  });

  test("every send carries its own idempotency key", async () => {
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    await act(async () => {
      await result.current.sendAsync("a");
      await result.current.sendAsync("a"); // the same value again: another send, stored again
    });
    const keys = bridge.framesOfType("send").map((frame) => frame.idempotencyKey);
    expect(keys).toHaveLength(2);
    for (const key of keys) expect(key).toMatch(/^[0-9a-f-]{32,36}$/);
    expect(keys[0]).not.toBe(keys[1]);
    expect(bridge.inputValues(RUN, "cancel")).toEqual(["a", "a"]);
  });

  test("a send whose socket drops before the ack goes out again with its key and is stored once", async () => {
    const held: Array<{ connection: Connection; frame: ClientFrame }> = [];
    bridge.onSend = (frame, connection) => {
      held.push({ connection, frame });
      return { kind: "hold" };
    };
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    let promise!: Promise<{ index: number }>;
    act(() => {
      promise = result.current.sendAsync("stop");
    });
    await bridge.until(() => held.length === 1, 5000, "the send frame");
    // The bridge stores the value, then the connection drops before the ack reaches the client.
    bridge.dropAll();
    bridge.ackSend(held[0]!.connection, held[0]!.frame);
    bridge.onSend = () => ({ kind: "ack" });
    await expect(promise).resolves.toEqual({ index: 0 });
    const frames = bridge.framesOfType("send");
    expect(frames).toHaveLength(2);
    expect(frames[1]).toEqual(frames[0]); // the same frame: same id, same key
    expect(typeof frames[0]!.idempotencyKey).toBe("string");
    expect(bridge.inputValues(RUN, "cancel")).toEqual(["stop"]); // stored once
    await waitFor(() => expect(result.current.isLoading).toBe(false));
    expect(result.current.error).toBeUndefined();
  });

  test("a send that lost 3 connections before its ack fails with connection_lost, and goes no more", async () => {
    bridge.onSend = () => ({ kind: "hold" });
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    let promise!: Promise<unknown>;
    act(() => {
      promise = result.current.sendAsync("stop");
    });
    for (let writes = 1; writes <= 3; writes++) {
      await bridge.until(() => bridge.framesOfType("send").length === writes, 5000, `send write ${writes}`);
      bridge.dropAll();
    }
    const error = await promise.catch((reason: unknown) => reason);
    expect((error as RealtimeError).code).toBe("connection_lost");
    await waitFor(() => expect((result.current.error as RealtimeError | undefined)?.code).toBe("connection_lost"));
    expect(result.current.isLoading).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const frames = bridge.framesOfType("send");
    expect(frames).toHaveLength(3);
    expect(new Set(frames.map((frame) => frame.idempotencyKey)).size).toBe(1);

    // The caller decides: sending again is a new send (a new key) on a new connection.
    bridge.onSend = () => ({ kind: "ack" });
    await act(async () => {
      await expect(result.current.sendAsync("stop")).resolves.toEqual({ index: 0 });
    });
    expect(bridge.framesOfType("send")[3]!.idempotencyKey).not.toBe(frames[0]!.idempotencyKey);
  });

  test("the idempotency key: a UUID, else 128 random bits from getRandomValues, else from Math.random", () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    expect(newIdempotencyKey()).toMatch(uuid);
    const withoutUUID = { getRandomValues: globalThis.crypto.getRandomValues.bind(globalThis.crypto) } as Partial<Crypto>;
    const noCrypto = {} as Partial<Crypto>;
    for (const source of [withoutUUID, noCrypto]) {
      const keys = new Set(Array.from({ length: 50 }, () => newIdempotencyKey(source)));
      expect(keys.size).toBe(50);
      for (const key of keys) expect(key).toMatch(/^[0-9a-f]{32}$/);
    }
  });

  test("a send retried with a refreshed token keeps its key", async () => {
    bridge.onSend = (frame) => (frame.token === "fresh" ? { kind: "ack" } : { kind: "error", code: "unauthorized" });
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, {
        accessToken: "old",
        baseURL: bridge.baseURL,
        refreshAccessToken: async () => "fresh",
      }),
    );
    await act(async () => {
      await expect(result.current.sendAsync("stop")).resolves.toEqual({ index: 0 });
    });
    const [first, second] = bridge.framesOfType("send");
    expect(second!.idempotencyKey).toBe(first!.idempotencyKey);
  });

  test("a send made before the socket is open waits for it and goes out once", async () => {
    const client = getRealtimeClient(bridge.baseURL);
    const first = client.sendInput(RUN, "cancel", 1, "tok");
    const second = client.sendInput(RUN, "cancel", 2, "tok");
    await expect(first).resolves.toEqual({ index: 0 });
    await expect(second).resolves.toEqual({ index: 1 });
    expect(bridge.framesOfType("send")).toHaveLength(2);
    expect(client.pendingSendCount).toBe(0);
    // No subscription and no send left: the socket closes after its linger.
    await bridge.until(() => bridge.openConnections.length === 0, 5000, "the socket to close");
  });

  test("a frame over the bridge's frame limit is refused locally with payload_too_large (the connection stays)", async () => {
    const client = getRealtimeClient(bridge.baseURL);
    // Before any welcome: the bridge's default limit (1 MiB + 16 KiB).
    let error = await client.sendInput(RUN, "cancel", "x".repeat(1100 * 1024), "tok").catch((reason) => reason);
    expect((error as RealtimeError).code).toBe("payload_too_large");
    // The fake bridge's welcome announces 64 KiB: the client keeps to it.
    await expect(client.sendInput(RUN, "cancel", "small", "tok")).resolves.toEqual({ index: 0 });
    error = await client.sendInput(RUN, "cancel", "x".repeat(70 * 1024), "tok").catch((reason) => reason);
    expect((error as RealtimeError).code).toBe("payload_too_large");
    expect(bridge.framesOfType("send")).toHaveLength(1);
  });

  test("an unauthorized send is retried once with a refreshed token", async () => {
    bridge.onSend = (frame) => (frame.token === "fresh" ? { kind: "ack" } : { kind: "error", code: "unauthorized" });
    const { result } = renderHook(() =>
      useInputStreamSend<string>("cancel", RUN, {
        accessToken: "old",
        baseURL: bridge.baseURL,
        refreshAccessToken: async () => "fresh",
      }),
    );
    await act(async () => {
      await expect(result.current.sendAsync("stop")).resolves.toEqual({ index: 0 });
    });
    expect(bridge.framesOfType("send").map((frame) => frame.token)).toEqual(["old", "fresh"]);
  });

  test("not ready without a run id or when disabled; sending then sets an error and sends nothing", async () => {
    const { result, rerender } = renderHook(
      ({ runId, enabled }: { runId?: string; enabled?: boolean }) =>
        useInputStreamSend<string>("cancel", runId, { accessToken: "tok", baseURL: bridge.baseURL, enabled }),
      { initialProps: {} as { runId?: string; enabled?: boolean } },
    );
    expect(result.current.isReady).toBe(false);
    act(() => result.current.send("stop"));
    await waitFor(() => expect(result.current.error?.message).toMatch(/Missing run ID/));
    rerender({ runId: RUN, enabled: false });
    expect(result.current.isReady).toBe(false);
    rerender({ runId: RUN, enabled: true });
    expect(result.current.isReady).toBe(true);
    expect(bridge.framesOfType("send")).toHaveLength(0);
  });

  test("a defined input stream gives the id and the value type", async () => {
    const approval = defineInputStream<{ approved: boolean; reviewer?: string }>("approval");
    expect(approval.id).toBe("approval");
    const { result } = renderHook(() =>
      useInputStreamSend(approval, RUN, { accessToken: "tok", baseURL: bridge.baseURL }),
    );
    expectTypeOf(result.current.send).parameter(0).toEqualTypeOf<{ approved: boolean; reviewer?: string }>();
    await act(async () => {
      await result.current.sendAsync({ approved: false });
    });
    expect(bridge.inputValues(RUN, "approval")).toEqual([{ approved: false }]);
    expect(() => defineInputStream("")).toThrow();
  });
});
