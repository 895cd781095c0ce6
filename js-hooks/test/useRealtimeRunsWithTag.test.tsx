import { renderHook, waitFor } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { useRealtimeRunsWithTag } from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
const HOUR = 3600_000;

describe("useRealtimeRunsWithTag", () => {
  test("subscribes with all tags, orders runs oldest first, adds new runs from updates", async () => {
    const older = bridge.setRun(makeRun({ tags: ["user:1", "team:a"], createdAt: ago(3 * 60_000) }));
    const newer = bridge.setRun(makeRun({ tags: ["user:1", "team:a"], createdAt: ago(60_000) }));
    bridge.setRun(makeRun({ tags: ["user:1"], createdAt: ago(30_000) })); // lacks team:a

    const { result } = renderHook(() =>
      useRealtimeRunsWithTag(["user:1", "team:a"], { accessToken: "t", baseURL: bridge.baseURL, createdAt: "1h" }),
    );
    await waitFor(() => expect(result.current.runs.map((r) => r.id)).toEqual([older.id, newer.id]));
    expect(bridge.framesOfType("subscribe")[0]).toMatchObject({
      feed: "tags",
      tags: ["team:a", "user:1"],
      createdAt: "1h",
      token: "t",
    });

    const latest = bridge.setRun(makeRun({ tags: ["team:a", "user:1"], createdAt: ago(0) }));
    await waitFor(() => expect(result.current.runs.map((r) => r.id)).toEqual([older.id, newer.id, latest.id]));
    expect(result.current.runs[2]!.createdAt).toBeInstanceOf(Date);

    bridge.change(older.id, { status: "EXECUTING" });
    await waitFor(() => expect(result.current.runs[0]!.status).toBe("EXECUTING"));
    expect(result.current.error).toBeUndefined();
  });

  test("applies its createdAt window to runs that arrive by update (the topic is shared across windows)", async () => {
    const inside = bridge.setRun(makeRun({ tags: ["w"], createdAt: ago(10 * 60_000) }));
    const { result: narrow } = renderHook(() =>
      useRealtimeRunsWithTag("w", { accessToken: "t", baseURL: bridge.baseURL, createdAt: "30m" }),
    );
    const { result: wide } = renderHook(() =>
      useRealtimeRunsWithTag("w", { accessToken: "t", baseURL: bridge.baseURL, createdAt: "1w" }),
    );
    await waitFor(() => expect(narrow.current.runs.map((r) => r.id)).toEqual([inside.id]));
    await waitFor(() => expect(wide.current.runs.map((r) => r.id)).toEqual([inside.id]));

    // An old run changes: both hooks' subscriptions follow the same topic, only the wide one may show it.
    const old = makeRun({ tags: ["w"], createdAt: ago(5 * HOUR) });
    bridge.setRun(old);
    await waitFor(() => expect(wide.current.runs.map((r) => r.id)).toEqual([old.id, inside.id]));
    // A marker after it on the same topic: once the narrow hook shows the marker, it has seen `old`.
    const marker = bridge.setRun(makeRun({ tags: ["w"], createdAt: ago(0) }));
    await waitFor(() => expect(narrow.current.runs.map((r) => r.id)).toEqual([inside.id, marker.id]));
    expect(bridge.connections).toHaveLength(1);
  });

  test("a single tag string works and the default window is 1 day", async () => {
    const run = bridge.setRun(makeRun({ tags: ["solo"], createdAt: ago(HOUR) }));
    const { result } = renderHook(() =>
      useRealtimeRunsWithTag("solo", { accessToken: "t", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.runs.map((r) => r.id)).toEqual([run.id]));
    expect(bridge.framesOfType("subscribe")[0]!.createdAt).toBeUndefined();
    const tooOld = makeRun({ tags: ["solo"], createdAt: ago(25 * HOUR) });
    bridge.setRun(tooOld);
    const marker = bridge.setRun(makeRun({ tags: ["solo"], createdAt: ago(0) }));
    await waitFor(() => expect(result.current.runs.map((r) => r.id)).toEqual([run.id, marker.id]));
  });

  test("an error frame surfaces as error", async () => {
    bridge.onSubscribe = () => ({ kind: "error", code: "invalid_request", message: "invalid duration" });
    const { result } = renderHook(() =>
      useRealtimeRunsWithTag("x", { accessToken: "t", baseURL: bridge.baseURL, createdAt: "soon" }),
    );
    await waitFor(() => expect(result.current.error).toMatchObject({ code: "invalid_request", message: "invalid duration" }));
    expect(result.current.runs).toEqual([]);
  });
});
