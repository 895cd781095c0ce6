// @vitest-environment node
import React from "react";
import { renderToString } from "react-dom/server";
import { describe, expect, test } from "vitest";
import {
  TriggerAuthContext,
  getRealtimeClient,
  useRealtimeBatch,
  useRealtimeRun,
  useRealtimeRunsWithTag,
  useRealtimeTaskTrigger,
  useRun,
  useWaitToken,
} from "../src/index.js";
import { makeRun, type FakeBridge } from "./support/fakeBridge.js";
import { useFakeBridge } from "./support/useFakeBridge.js";

let bridge: FakeBridge;
useFakeBridge((started) => (bridge = started));

describe("server-side rendering", () => {
  test("renderToString renders the initial state and opens no socket", async () => {
    expect(typeof window).toBe("undefined");
    const run = bridge.setRun(makeRun());
    function Page() {
      const single = useRealtimeRun(run.id);
      const tagged = useRealtimeRunsWithTag(["a"]);
      const batch = useRealtimeBatch("batch_1");
      const fetched = useRun(run.id);
      const trigger = useRealtimeTaskTrigger("resize-image");
      const wait = useWaitToken("waitpoint_1");
      const text = [
        single.run?.status ?? "none",
        tagged.runs.length,
        batch.runs.length,
        fetched.isLoading ? "loading" : "idle",
        trigger.isLoading ? "busy" : "ready",
        wait.isLoading || wait.isCompleted ? "completing" : "open",
      ].join("|");
      return <p>{text}</p>;
    }
    const html = renderToString(
      <TriggerAuthContext.Provider value={{ accessToken: "t", baseURL: bridge.baseURL }}>
        <Page />
      </TriggerAuthContext.Provider>,
    );
    expect(html).toBe("<p>none|0|0|loading|ready|open</p>");

    // The client itself does nothing without a window either.
    const subscription = getRealtimeClient(bridge.baseURL).subscribe(
      { feed: "run", runId: run.id },
      "t",
      () => {},
    );
    expect(subscription.getState()).toMatchObject({ runs: [], synced: false });
    subscription.unsubscribe();
    const completion = getRealtimeClient(bridge.baseURL).completeToken("waitpoint_1", true, "t");
    await expect(completion).rejects.toMatchObject({ code: "connection_failed" });

    // Give a socket every chance to show up: the server answers a request made after all that.
    const response = await fetch(`${bridge.baseURL}/anything`);
    expect(response.status).toBe(404);
    expect(bridge.connections).toHaveLength(0);
  });
});
