// @vitest-environment node
/**
 * `@realtime-bridge/react-hooks/testing` against the real `python -m bridge testserver` (opt-in: set
 * BRIDGE_PYTHON to a Python with this checkout's bridge, as scripts/test does; skipped otherwise). It
 * serves tests/testing_kit/user_tasks.py.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { bridgeFixture, startBridge, TestBridgeError, type TestBridge } from "../../src/testing/index.js";

const python = process.env.BRIDGE_PYTHON;
const root = fileURLToPath(new URL("../../../", import.meta.url));
const options = { tasks: "tests/testing_kit/user_tasks.py", cwd: root, python };

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!python)("the test bridge", () => {
  let bridge: TestBridge;
  beforeAll(async () => {
    bridge = await startBridge(options);
  }, 30_000);
  afterAll(async () => {
    await bridge?.stop();
  });

  test("a page's Approve: the token completes the run's wait", async () => {
    const { id, publicToken } = await bridge.trigger("review", { doc: 1 });
    const page = await fetch(`${bridge.url}/api/v3/runs/${id}`, { headers: { Authorization: `Bearer ${publicToken}` } });
    expect(page.status).toBe(200);
    const waiting = await bridge.waitForRun(id, "WAITING");
    await bridge.completeToken(waiting.metadata.token as string, "yes");
    expect((await bridge.waitForRun(id, "COMPLETED")).output).toEqual({ approved: "yes" });
  });

  test("a 24-hour token timeout in well under a second", async () => {
    const { id } = await bridge.trigger("review", { doc: 2 });
    await bridge.waitForRun(id, "WAITING");
    const started = performance.now();
    await bridge.advanceClock("24h");
    expect((await bridge.waitForRun(id, "COMPLETED")).output).toEqual({ timedOut: true });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  test("chunks, metadata and an input reach the run", async () => {
    const { id } = await bridge.trigger("chat");
    expect(await bridge.pushChunk(id, "extra", { n: 0 })).toBe(0);
    expect(await bridge.setMetadata(id, { stage: "typing" })).toEqual({ stage: "typing" });
    await bridge.sendInput(id, "answers", "42");
    const run = await bridge.waitForRun(id, "COMPLETED");
    expect(run.output).toBe("42");
    expect(run.metadata).toEqual({ stage: "typing" });
  });

  test("a held step; a run elsewhere than asked is a 408 saying where it is", async () => {
    await bridge.holdAt("charge-card");
    const { id } = await bridge.trigger("charge", {});
    expect(await bridge.holdReached("charge-card")).toBe(id);
    const elsewhere = await bridge.waitForRun(id, "COMPLETED", 1).catch((error: unknown) => error);
    expect(elsewhere).toBeInstanceOf(TestBridgeError);
    expect(elsewhere).toMatchObject({ status: 408, body: { status: "EXECUTING" } });
    await bridge.releaseHold("charge-card");
    expect((await bridge.waitForRun(id, "COMPLETED")).output).toBe("done");
  });
});

describe.skipIf(!python)("starting and stopping", () => {
  test("the fixture gives a bridge for the test and stops it after", async () => {
    let pid = 0;
    await bridgeFixture(options)({}, async (bridge) => {
      pid = bridge.pid;
      expect((await fetch(`${bridge.url}/healthz`)).status).toBe(200);
    });
    expect(pid).toBeGreaterThan(0);
    expect(isRunning(pid)).toBe(false);
  }, 30_000);

  test("a tasks file that does not load is the CLI's one-line error", async () => {
    await expect(startBridge({ ...options, tasks: "missing.py" })).rejects.toThrow(
      /exited \(2\) before it served\nrealtime-bridge testserver: error: cannot load tasks from missing.py/,
    );
  }, 30_000);
});
