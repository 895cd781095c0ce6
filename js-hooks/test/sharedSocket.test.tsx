import { render, renderHook, screen, waitFor } from "@testing-library/react";
import React, { StrictMode } from "react";
import { describe, expect, test } from "vitest";
import {
  useRealtimeBatch,
  useRealtimeRun,
  useRealtimeRunsWithTag,
} from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

function RunView({ runId, token }: { runId: string; token: string }) {
  const { run, error } = useRealtimeRun(runId, { accessToken: token, baseURL: bridge.baseURL });
  return (
    <div data-testid={runId}>
      {error ? `error:${(error as { code?: string }).code}` : (run?.status ?? "loading")}
    </div>
  );
}

function TagView({ tag, token }: { tag: string; token: string }) {
  const { runs } = useRealtimeRunsWithTag(tag, { accessToken: token, baseURL: bridge.baseURL });
  return <div data-testid={`tag:${tag}`}>{runs.map((run) => `${run.id}=${run.status}`).join(",")}</div>;
}

describe("one shared WebSocket per baseURL", () => {
  test("two hooks on one page share one socket, which closes after the last unmounts", async () => {
    const a = bridge.setRun(makeRun({ status: "QUEUED" }));
    const b = bridge.setRun(makeRun({ status: "EXECUTING" }));
    const first = render(<RunView runId={a.id} token="token-a" />);
    const second = render(<RunView runId={b.id} token="token-b" />);

    await waitFor(() => expect(screen.getByTestId(a.id).textContent).toBe("QUEUED"));
    await waitFor(() => expect(screen.getByTestId(b.id).textContent).toBe("EXECUTING"));
    expect(bridge.connections).toHaveLength(1);
    // Each subscription carries its own token.
    expect(bridge.liveSubscriptions.map((s) => [s.frame.runId, s.token]).sort()).toEqual(
      [
        [a.id, "token-a"],
        [b.id, "token-b"],
      ].sort(),
    );

    // Updates are routed by topic to the right hook.
    bridge.change(b.id, { status: "WAITING" });
    await waitFor(() => expect(screen.getByTestId(b.id).textContent).toBe("WAITING"));
    expect(screen.getByTestId(a.id).textContent).toBe("QUEUED");

    first.unmount();
    await bridge.until(() => bridge.liveSubscriptions.length === 1, 5000, "first unsubscribe");
    expect(bridge.openConnections).toHaveLength(1);

    second.unmount();
    await bridge.until(() => bridge.openConnections.length === 0, 5000, "socket close");
    expect(bridge.connections).toHaveLength(1);
    expect(bridge.framesOfType("unsubscribe")).toHaveLength(2);
  });

  test("hooks following the same run with the same token share one server subscription", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED" }));
    function Twice() {
      return (
        <>
          <RunView runId={run.id} token="same" />
          <div data-testid="second">
            <RunView runId={run.id} token="same" />
          </div>
        </>
      );
    }
    render(<Twice />);
    await waitFor(() => expect(screen.getAllByTestId(run.id).map((e) => e.textContent)).toEqual(["QUEUED", "QUEUED"]));
    expect(bridge.framesOfType("subscribe")).toHaveLength(1);
    bridge.change(run.id, { status: "EXECUTING" });
    await waitFor(() =>
      expect(screen.getAllByTestId(run.id).map((e) => e.textContent)).toEqual(["EXECUTING", "EXECUTING"]),
    );
  });

  test("StrictMode's double mount nets one subscription on one socket", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED" }));
    const view = render(
      <StrictMode>
        <RunView runId={run.id} token="t" />
      </StrictMode>,
    );
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("QUEUED"));
    bridge.change(run.id, { status: "EXECUTING" });
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("EXECUTING"));
    expect(bridge.connections).toHaveLength(1);
    expect(bridge.framesOfType("subscribe")).toHaveLength(1);
    expect(bridge.framesOfType("unsubscribe")).toHaveLength(0);
    expect(bridge.liveSubscriptions).toHaveLength(1);

    view.unmount();
    await bridge.until(() => bridge.openConnections.length === 0, 5000, "socket close");
    expect(bridge.connections).toHaveLength(1);
  });

  test("after the server drops the connection, every subscription is resubscribed and the new snapshot replaces state", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING", tags: ["team:a"] }));
    const gone = bridge.setRun(makeRun({ status: "COMPLETED", tags: ["team:a"], finishedAt: new Date().toISOString() }));
    render(
      <>
        <RunView runId={run.id} token="token-run" />
        <TagView tag="team:a" token="token-tags" />
      </>,
    );
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("EXECUTING"));
    await waitFor(() => expect(screen.getByTestId("tag:team:a").textContent).toContain(gone.id));

    // While the client is away: the run moves on, and one run leaves the tag feed (expired).
    bridge.dropAll();
    bridge.runs.set(run.id, { ...run, status: "WAITING", version: run.version + 5 });
    bridge.runs.delete(gone.id);

    await bridge.until(
      () => bridge.connections.length === 2 && bridge.openConnections.length === 1 && bridge.liveSubscriptions.length === 2,
      5000,
      "resubscribe",
    );
    const resubscribed = [...bridge.openConnections[0]!.subscriptions.values()];
    expect(resubscribed.map((s) => s.token).sort()).toEqual(["token-run", "token-tags"]);

    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("WAITING"));
    await waitFor(() => expect(screen.getByTestId("tag:team:a").textContent).toBe(`${run.id}=WAITING`));

    // And updates flow on the new connection.
    bridge.change(run.id, { status: "COMPLETED", finishedAt: new Date().toISOString() });
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("COMPLETED"));
  });

  test("the new snapshot wins after a reconnect even when its versions are lower (server restarted)", async () => {
    const run = bridge.setRun(makeRun({ status: "EXECUTING", version: 9 }));
    render(<RunView runId={run.id} token="t" />);
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("EXECUTING"));
    bridge.dropAll();
    bridge.runs.set(run.id, { ...run, status: "QUEUED", version: 1 });
    await waitFor(() => expect(screen.getByTestId(run.id).textContent).toBe("QUEUED"));
  });

  test("a fresh snapshot on a live subscription (server resync) never takes a run back", async () => {
    const run = bridge.setRun(makeRun({ status: "QUEUED", version: 1, tags: ["x"] }));
    const { result } = renderHook(() =>
      useRealtimeRunsWithTag("x", { accessToken: "t", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(result.current.runs.map((r) => r.status)).toEqual(["QUEUED"]));
    const connection = bridge.openConnections[0]!;
    const subscription = [...connection.subscriptions.values()][0]!;
    const stale = bridge.runs.get(run.id)!;
    const created = bridge.setRun(makeRun({ tags: ["x"] })); // new run, update only
    const advanced = bridge.change(run.id, { status: "EXECUTING" }); // v2 as an update
    // The resync snapshot was read before both changes.
    bridge.sendSnapshot(connection, subscription.id, [stale]);
    bridge.change(run.id, { status: "WAITING" });
    await waitFor(() =>
      expect(result.current.runs.map((r) => [r.id, r.status])).toEqual([
        [run.id, "WAITING"],
        [created.id, "QUEUED"],
      ]),
    );
    expect(advanced.version).toBe(2);
  });

  test("batch feeds share the socket too", async () => {
    const r1 = bridge.setRun(makeRun({ batchId: "batch_1", status: "QUEUED", createdAt: "2026-01-01T00:00:02.000Z" }));
    const r2 = bridge.setRun(makeRun({ batchId: "batch_1", status: "QUEUED", createdAt: "2026-01-01T00:00:01.000Z" }));
    const { result: batch } = renderHook(() =>
      useRealtimeBatch("batch_1", { accessToken: "t", baseURL: bridge.baseURL }),
    );
    const { result: single } = renderHook(() =>
      useRealtimeRun(r1.id, { accessToken: "t", baseURL: bridge.baseURL }),
    );
    await waitFor(() => expect(batch.current.runs.map((r) => r.id)).toEqual([r2.id, r1.id]));
    await waitFor(() => expect(single.current.run?.id).toBe(r1.id));
    bridge.change(r1.id, { status: "EXECUTING" });
    await waitFor(() => expect(batch.current.runs.find((r) => r.id === r1.id)?.status).toBe("EXECUTING"));
    await waitFor(() => expect(single.current.run?.status).toBe("EXECUTING"));
    expect(bridge.connections).toHaveLength(1);
    const topics = bridge.liveSubscriptions.map((s) => s.topic).sort();
    expect(topics).toEqual(["batch:batch_1", `run:${r1.id}`].sort());
  });
});
