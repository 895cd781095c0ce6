/**
 * Against a real realtime-bridge server (opt-in): set BRIDGE_URL and BRIDGE_SECRET_KEY, with the
 * test tasks of tests/support/tasks.py registered ("echo", "slow-progress", "fail", "stream-chunks", ...).
 * Skipped otherwise.
 *
 *   BRIDGE_URL=http://127.0.0.1:8787 BRIDGE_SECRET_KEY=... npx vitest run test/e2e
 */
import { act, renderHook, waitFor } from "@testing-library/react";
import { describe, expect, test, vi } from "vitest";
import {
  RealtimeError,
  useInputStreamSend,
  useRealtimeRun,
  useRealtimeRunsWithTag,
  useRealtimeStream,
  useRealtimeTaskTrigger,
  useRun,
  useTaskTrigger,
  useWaitToken,
} from "../../src/index.js";

const baseURL = process.env.BRIDGE_URL;
const secretKey = process.env.BRIDGE_SECRET_KEY ?? "";

/** Creates a wait token with the secret key: its id and its public access token (`x-trigger-jwt`). */
async function createWaitToken(): Promise<{ id: string; publicAccessToken: string }> {
  const response = await fetch(`${baseURL}/api/v1/waitpoints/tokens`, {
    method: "POST",
    headers: { Authorization: `Bearer ${secretKey}`, "content-type": "application/json" },
    body: JSON.stringify({ timeout: "10m" }),
  });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { id: string; isCached: boolean; url: string };
  expect(body).toMatchObject({ id: expect.any(String), isCached: false, url: expect.any(String) });
  const publicAccessToken = response.headers.get("x-trigger-jwt");
  expect(publicAccessToken).toBeTruthy();
  return { id: body.id, publicAccessToken: publicAccessToken! };
}

describe.skipIf(!baseURL)("against a real bridge", () => {
  test("trigger, then watch the run to completion over the shared socket", { timeout: 30_000 }, async () => {
    const onComplete = vi.fn();
    const progress: number[] = [];
    const { result } = renderHook(() => {
      const instance = useRealtimeTaskTrigger<{ payload: { delay: number; name: string }; output: { done: string }; metadata: { progress?: number } }>(
        "slow-progress",
        { accessToken: secretKey, baseURL, onComplete },
      );
      const value = instance.run?.metadata?.progress;
      if (typeof value === "number" && progress.at(-1) !== value) progress.push(value);
      return instance;
    });
    act(() => result.current.submit({ delay: 0.1, name: "e2e" }, { tags: ["e2e:js-hooks"] }));
    await waitFor(() => expect(result.current.handle).toBeDefined(), { timeout: 10_000 });
    expect(result.current.handle!.publicAccessToken).not.toBe(secretKey);
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1), { timeout: 20_000 });
    const run = result.current.run!;
    expect(run).toMatchObject({ status: "COMPLETED", isSuccess: true, isCompleted: true, output: { done: "e2e" } });
    expect(run.finishedAt).toBeInstanceOf(Date);
    expect(run.tags).toEqual(["e2e:js-hooks"]);
    expect(progress.at(-1)).toBe(1);
    expect(result.current.error).toBeUndefined();
  });

  test("tag feed, failing run, and useRun", { timeout: 30_000 }, async () => {
    const tag = `e2e:${Date.now()}`;
    const trigger = renderHook(() => useTaskTrigger("fail", { accessToken: secretKey, baseURL }));
    const feed = renderHook(() => useRealtimeRunsWithTag(tag, { accessToken: secretKey, baseURL, createdAt: "1h" }));
    act(() => trigger.result.current.submit({ why: "testing" }, { tags: [tag] }));
    await waitFor(() => expect(trigger.result.current.handle).toBeDefined(), { timeout: 10_000 });
    const runId = trigger.result.current.handle!.id;
    await waitFor(() => expect(feed.result.current.runs.map((r) => [r.id, r.status])).toEqual([[runId, "FAILED"]]), {
      timeout: 20_000,
    });
    const failed = feed.result.current.runs[0]!;
    expect(failed).toMatchObject({ isFailed: true, isCompleted: true, error: { name: "ValueError" } });
    expect(failed.error!.message).toContain("failed on purpose");

    const single = renderHook(() => useRealtimeRun(runId, { accessToken: trigger.result.current.handle!.publicAccessToken, baseURL }));
    await waitFor(() => expect(single.result.current.run?.status).toBe("FAILED"), { timeout: 10_000 });

    const fetched = renderHook(() => useRun(runId, { accessToken: secretKey, baseURL, revalidateOnFocus: false }));
    await waitFor(() => expect(fetched.result.current.run?.status).toBe("FAILED"), { timeout: 10_000 });
    expect(fetched.result.current.run!.createdAt).toBeInstanceOf(Date);
    expect(fetched.result.current.run!.isFailed).toBe(true);
  });

  test("a stream resumed by lastEventId: exact with its epoch, stream_reset with another", { timeout: 20_000 }, async () => {
    const trigger = renderHook(() => useTaskTrigger("stream-chunks", { accessToken: secretKey, baseURL }));
    act(() => trigger.result.current.submit({ count: 5 }));
    await waitFor(() => expect(trigger.result.current.handle).toBeDefined(), { timeout: 10_000 });
    const { id: runId, publicAccessToken: accessToken } = trigger.result.current.handle!;
    const whole = renderHook(() => useRealtimeStream<number>(runId, "numbers", { accessToken, baseURL }));
    await waitFor(() => expect(whole.result.current.parts).toEqual([0, 1, 2, 3, 4]), { timeout: 10_000 });
    const [, epoch] = whole.result.current.lastEventId!.split("-");
    expect(whole.result.current.lastEventId).toBe(`4-${epoch}`);
    expect(epoch).toMatch(/^[0-9a-f]{16}$/);

    const resumed = renderHook(() =>
      useRealtimeStream<number>(runId, "numbers", { accessToken, baseURL, lastEventId: `1-${epoch}` }),
    );
    await waitFor(() => expect(resumed.result.current.parts).toEqual([2, 3, 4]), { timeout: 10_000 });
    // An epoch of storage that is gone (another process, a flushed Redis): told, not resumed.
    const stale = renderHook(() =>
      useRealtimeStream<number>(runId, "numbers", { accessToken, baseURL, lastEventId: "1-0123456789abcdef" }),
    );
    await waitFor(() => expect(stale.result.current.error).toMatchObject({ code: "stream_reset" }), { timeout: 10_000 });
    expect(stale.result.current.parts).toEqual([]);
    expect(resumed.result.current.error).toBeUndefined();
  });

  test("a token that may not read the run gets a forbidden error", { timeout: 15_000 }, async () => {
    const trigger = renderHook(() => useTaskTrigger("echo", { accessToken: secretKey, baseURL }));
    act(() => trigger.result.current.submit("a string payload"));
    await waitFor(() => expect(trigger.result.current.handle).toBeDefined(), { timeout: 10_000 });
    const other = renderHook(() => useTaskTrigger("echo", { accessToken: secretKey, baseURL }));
    act(() => other.result.current.submit({ n: 1 }));
    await waitFor(() => expect(other.result.current.handle).toBeDefined(), { timeout: 10_000 });
    // The second run's token reads only the second run.
    const { result } = renderHook(() =>
      useRealtimeRun(trigger.result.current.handle!.id, { accessToken: other.result.current.handle!.publicAccessToken, baseURL }),
    );
    await waitFor(() => expect(result.current.error).toMatchObject({ code: "forbidden" }), { timeout: 10_000 });
    const echo = renderHook(() => useRealtimeRun(trigger.result.current.handle!.id, { accessToken: secretKey, baseURL }));
    await waitFor(() => expect(echo.result.current.run?.output).toEqual({ echo: "a string payload" }), { timeout: 10_000 });
  });

  test("useInputStreamSend releases a WAITING run; a send to the finished run is refused", { timeout: 30_000 }, async () => {
    const trigger = renderHook(() => useTaskTrigger("await-approval", { accessToken: secretKey, baseURL }));
    act(() => trigger.result.current.submit({ timeout: 20 }));
    await waitFor(() => expect(trigger.result.current.handle).toBeDefined(), { timeout: 10_000 });
    const { id: runId, publicAccessToken } = trigger.result.current.handle!;
    const { result } = renderHook(() => ({
      run: useRealtimeRun(runId, { accessToken: publicAccessToken, baseURL, stopOnCompletion: false }),
      approval: useInputStreamSend<{ approved: boolean }>("approval", runId, { accessToken: publicAccessToken, baseURL }),
    }));
    await waitFor(() => expect(result.current.run.run?.status).toBe("WAITING"), { timeout: 10_000 });
    expect(result.current.approval.isReady).toBe(true);
    let ack: { index: number } | undefined;
    await act(async () => {
      ack = await result.current.approval.sendAsync({ approved: true });
    });
    expect(ack).toEqual({ index: 0 });
    await waitFor(() => expect(result.current.run.run?.status).toBe("COMPLETED"), { timeout: 10_000 });
    expect(result.current.run.run!.output).toEqual({ approved: true });

    let refused: unknown;
    await act(async () => {
      refused = await result.current.approval.sendAsync({ approved: false }).catch((error: unknown) => error);
    });
    expect(refused).toBeInstanceOf(RealtimeError);
    expect((refused as RealtimeError).code).toBe("run_finished");
    await waitFor(() => expect(result.current.approval.error).toMatchObject({ code: "run_finished" }));
  });

  test("useWaitToken completes a wait token; a token for another wait token is forbidden", { timeout: 20_000 }, async () => {
    const token = await createWaitToken();
    const other = await createWaitToken();

    // The other token's public access token has write:waitpoints:<other id> only.
    const wrong = renderHook(() => useWaitToken<{ approved: boolean }>(token.id, { accessToken: other.publicAccessToken, baseURL }));
    let refused: unknown;
    await act(async () => {
      refused = await wrong.result.current.completeAsync({ approved: false }).catch((error: unknown) => error);
    });
    expect(refused).toBeInstanceOf(RealtimeError);
    expect((refused as RealtimeError).code).toBe("forbidden");
    await waitFor(() => expect(wrong.result.current.error).toMatchObject({ code: "forbidden" }));
    expect(wrong.result.current.isCompleted).toBe(false);

    const { result } = renderHook(() =>
      useWaitToken<{ approved: boolean }>(token.id, { accessToken: token.publicAccessToken, baseURL }),
    );
    expect(result.current.isReady).toBe(true);
    act(() => result.current.complete({ approved: true }));
    await waitFor(() => expect(result.current.isCompleted).toBe(true), { timeout: 10_000 });
    expect(result.current).toMatchObject({ isLoading: false, error: undefined });

    // Completing again is acknowledged and keeps the first output.
    await act(async () => {
      await result.current.completeAsync({ approved: false });
    });

    const response = await fetch(`${baseURL}/api/v1/waitpoints/tokens/${token.id}`, {
      headers: { Authorization: `Bearer ${secretKey}` },
    });
    expect(response.status).toBe(200);
    const retrieved = (await response.json()) as { status: string; output: string; outputType: string };
    expect(retrieved).toMatchObject({ status: "COMPLETED", outputType: "application/json" });
    expect(JSON.parse(retrieved.output)).toEqual({ approved: true });
  });
});
