import { act, renderHook, waitFor } from "@testing-library/react";
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { describe, expect, test, vi } from "vitest";
import { useRealtimeTaskTrigger, useRun, useTaskTrigger } from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

type Seen = { method?: string; url?: string; headers: IncomingMessage["headers"]; body: any };

describe("useTaskTrigger", () => {
  test("POSTs {payload, options} with the token and reads x-trigger-jwt into the handle", async () => {
    const requests: Seen[] = [];
    bridge.onHttp = (req, res, body) => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body: JSON.parse(body) });
      res.writeHead(200, {
        "content-type": "application/json",
        "x-trigger-jwt": "jwt-for-run_1",
      });
      res.end(JSON.stringify({ id: "run_1", isCached: false }));
    };
    const { result } = renderHook(() =>
      useTaskTrigger<{ payload: { url: string } }>("resize-image", {
        accessToken: "tr_trigger_token",
        baseURL: `${bridge.baseURL}/`,
      }),
    );
    expect(result.current.isLoading).toBe(false);
    act(() =>
      result.current.submit(
        { url: "https://example.com/a.png" },
        { tags: ["user:1"], idempotencyKey: "order-7", queue: "images", version: "20260101.1", delay: "1m" },
      ),
    );
    expect(result.current.isLoading).toBe(true);
    await waitFor(() => expect(result.current.handle).toBeDefined());

    expect(result.current.handle).toEqual({
      id: "run_1",
      publicAccessToken: "jwt-for-run_1",
      taskIdentifier: "resize-image",
      isCached: false,
    });
    expect(result.current.isLoading).toBe(false);
    expect(result.current.error).toBeUndefined();

    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request!.method).toBe("POST");
    expect(request!.url).toBe("/api/v1/tasks/resize-image/trigger");
    expect(request!.headers.authorization).toBe("Bearer tr_trigger_token");
    expect(request!.headers["content-type"]).toBe("application/json");
    expect(request!.body).toEqual({
      payload: { url: "https://example.com/a.png" },
      options: {
        tags: ["user:1"],
        // As the official client: a key that isn't a 64-char hash is hashed.
        idempotencyKey: createHash("sha256").update("order-7").digest("hex"),
        queue: { name: "images" },
        lockToVersion: "20260101.1",
        delay: "1m",
      },
    });
  });

  test("an HTTP error surfaces as error (ApiError with status)", async () => {
    bridge.onHttp = (_req, res) => {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "Task not found: nope" }));
    };
    const { result } = renderHook(() => useTaskTrigger("nope", { accessToken: "t", baseURL: bridge.baseURL }));
    act(() => result.current.submit({}));
    await waitFor(() => expect(result.current.error).toBeDefined());
    expect(result.current.error).toMatchObject({ name: "ApiError", status: 404, message: "404 Task not found: nope" });
    expect(result.current.isLoading).toBe(false);
    expect(result.current.handle).toBeUndefined();
  });

  test("a later submit replaces the one before: only its outcome shows", async () => {
    let held: (() => void) | undefined;
    bridge.onHttp = (_req, res, body) => {
      if (JSON.parse(body).payload.n === 1) {
        held = () => {
          res.writeHead(404, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "too late" }));
        };
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "x-trigger-jwt": "jwt" });
      res.end(JSON.stringify({ id: "run_2" }));
    };
    const { result } = renderHook(() => useTaskTrigger("t", { accessToken: "t", baseURL: bridge.baseURL }));
    act(() => result.current.submit({ n: 1 }));
    await waitFor(() => expect(held).toBeDefined());
    act(() => result.current.submit({ n: 2 }));
    await waitFor(() => expect(result.current.handle?.id).toBe("run_2"));
    expect(result.current.isLoading).toBe(false);
    held!();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(result.current).toMatchObject({ isLoading: false, error: undefined, handle: { id: "run_2" } });
  });

  test("a 5xx is retried (3 attempts, like the official client)", async () => {
    let calls = 0;
    bridge.onHttp = (_req, res) => {
      calls += 1;
      if (calls < 3) {
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: "backend unavailable" }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "x-trigger-jwt": "jwt" });
      res.end(JSON.stringify({ id: "run_2" }));
    };
    const { result } = renderHook(() => useTaskTrigger("t", { accessToken: "t", baseURL: bridge.baseURL }));
    act(() => result.current.submit(null));
    await waitFor(() => expect(result.current.handle?.id).toBe("run_2"));
    expect(calls).toBe(3);
  });
});

describe("useRealtimeTaskTrigger", () => {
  test("triggers, then follows the run over the socket with the token from x-trigger-jwt", async () => {
    const run = makeRun({ status: "QUEUED", taskIdentifier: "resize-image" });
    bridge.onHttp = (_req, res) => {
      bridge.setRun(run);
      res.writeHead(200, { "content-type": "application/json", "x-trigger-jwt": "jwt-read-run" });
      res.end(JSON.stringify({ id: run.id }));
    };
    const onComplete = vi.fn();
    const { result } = renderHook(() =>
      useRealtimeTaskTrigger<{ payload: { n: number }; output: { doubled: number } }>("resize-image", {
        accessToken: "trigger-token",
        baseURL: bridge.baseURL,
        onComplete,
      }),
    );
    expect(result.current.run).toBeUndefined();
    act(() => result.current.submit({ n: 2 }));
    await waitFor(() => expect(result.current.run?.status).toBe("QUEUED"));
    expect(result.current.handle).toMatchObject({ id: run.id, publicAccessToken: "jwt-read-run" });
    expect(bridge.framesOfType("subscribe")[0]).toMatchObject({ runId: run.id, token: "jwt-read-run" });

    bridge.change(run.id, { status: "COMPLETED", output: { doubled: 4 }, finishedAt: new Date().toISOString() });
    await waitFor(() => expect(result.current.run?.output).toEqual({ doubled: 4 }));
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    expect(result.current.error).toBeUndefined();
    expect(typeof result.current.stop).toBe("function");
  });
});

describe("useRun", () => {
  test("fetches GET /api/v3/runs/{id} once, with dates as Date", async () => {
    const requests: Seen[] = [];
    bridge.onHttp = (req, res) => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body: undefined });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          id: "run_9",
          status: "COMPLETED",
          taskIdentifier: "resize-image",
          isQueued: false,
          isExecuting: false,
          isWaiting: false,
          isCompleted: true,
          isSuccess: true,
          isFailed: false,
          isCancelled: false,
          isTest: false,
          createdAt: "2026-01-01T00:00:00.000Z",
          updatedAt: "2026-01-01T00:00:05.000Z",
          startedAt: "2026-01-01T00:00:01.000Z",
          finishedAt: "2026-01-01T00:00:05.000Z",
          idempotencyKey: null,
          tags: ["a"],
          costInCents: 0,
          baseCostInCents: 0,
          durationMs: 4000,
          depth: 0,
          triggerFunction: "trigger",
          payload: { x: 1 },
          output: { y: 2 },
          relatedRuns: { root: null, children: [] },
          attemptCount: 1,
        }),
      );
    };
    const { result } = renderHook(() =>
      useRun<{ payload: { x: number }; output: { y: number } }>("run_9", {
        accessToken: "secret",
        baseURL: bridge.baseURL,
        revalidateOnFocus: false,
      }),
    );
    expect(result.current.isLoading).toBe(true);
    await waitFor(() => expect(result.current.run).toBeDefined());
    expect(result.current.isLoading).toBe(false);
    expect(result.current.isValidating).toBe(false);
    expect(result.current.isError).toBe(false);
    const run = result.current.run!;
    expect(run.createdAt).toEqual(new Date("2026-01-01T00:00:00.000Z"));
    expect(run.finishedAt).toBeInstanceOf(Date);
    expect(run.idempotencyKey).toBeUndefined();
    expect(run.output).toEqual({ y: 2 });
    expect(run.relatedRuns).toEqual({ children: [] });
    expect(requests).toHaveLength(1);
    expect(requests[0]!).toMatchObject({ method: "GET", url: "/api/v3/runs/run_9" });
    expect(requests[0]!.headers.authorization).toBe("Bearer secret");

    // mutate() fetches again.
    await act(async () => {
      await result.current.mutate();
    });
    expect(requests).toHaveLength(2);
  });

  test("a 404 is an error and isError", async () => {
    bridge.onHttp = (_req, res) => {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "Run not found" }));
    };
    const { result } = renderHook(() =>
      useRun("run_missing", { accessToken: "t", baseURL: bridge.baseURL, revalidateOnFocus: false }),
    );
    await waitFor(() => expect(result.current.isError).toBe(true));
    expect(result.current.error).toMatchObject({ status: 404, message: "404 Run not found" });
    expect(result.current.run).toBeUndefined();
    expect(result.current.isLoading).toBe(false);
  });
});
