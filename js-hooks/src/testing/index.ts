/**
 * `@realtime-bridge/react-hooks/testing`: a real bridge for a Playwright (or any Node) test, started
 * through the Python CLI (`python -m bridge testserver`), and its test-only controls (`/_test/`).
 * Node only; nothing here imports @playwright/test: `bridgeFixture` is a plain fixture function.
 *
 *   import { test as base } from "@playwright/test";
 *   import { bridgeFixture, type TestBridge } from "@realtime-bridge/react-hooks/testing";
 *   const test = base.extend<{ bridge: TestBridge }>({ bridge: bridgeFixture({ tasks: "tasks.py" }) });
 */
import { spawn, type ChildProcess } from "node:child_process";

export type BridgeOptions = {
  /** Task modules or .py files (relative to `cwd`) the bridge serves. */
  tasks: string | string[];
  /** Where the command runs (default: this process's directory). */
  cwd?: string;
  /** A Python with realtime-bridge installed (default: $BRIDGE_PYTHON, else "python3"). */
  python?: string;
  /** A redis-server of the bridge's own instead of the in-memory backend. */
  redis?: boolean;
  /** How long the bridge may take to start (default: 30 s). */
  startupTimeoutMs?: number;
};

/** A run as the bridge shows it (the official field names). */
export type TestRun = {
  id: string;
  status: string;
  output: unknown;
  metadata: Record<string, unknown>;
  tags: string[];
  error: { message: string } | null;
  [field: string]: unknown;
};

export type TriggeredRun = { id: string; publicToken: string };

/** A `/_test/` call the bridge refused: its status and JSON error. */
export class TestBridgeError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`test bridge answered ${status}: ${JSON.stringify(body)}`);
    this.name = "TestBridgeError";
  }
}

const STOP_TIMEOUT_MS = 10_000; // then SIGKILL: a test run never hangs on a bridge that will not stop
const STDERR_KEPT = 16_384; // the end of the bridge's log, for the error when it does not start

type Line = { url: string; secretKey: string; pid: number };

export class TestBridge {
  private readonly exited: Promise<void>;

  constructor(
    readonly url: string,
    readonly secretKey: string,
    readonly pid: number,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once("exit", () => resolve());
    });
  }

  /** Triggers a task as a backend does; `publicToken` lets a page read the run. `options`: the official ones. */
  trigger(task: string, payload?: unknown, options?: Record<string, unknown>): Promise<TriggeredRun> {
    return this.call("POST", "/_test/triggers", { task, payload, options });
  }

  /** Completes a wait token, as a page's Approve button does. */
  async completeToken(tokenId: string, data?: unknown): Promise<void> {
    await this.call("POST", `/_test/tokens/${encodeURIComponent(tokenId)}/complete`, { data });
  }

  /** Appends a chunk to the run's output stream `key`; returns its index. */
  async pushChunk(runId: string, key: string, chunk: unknown): Promise<number> {
    const { index } = await this.call<{ index: number }>("POST", `${runPath(runId)}/chunks/${encodeURIComponent(key)}`, {
      chunk,
    });
    return index;
  }

  /** Sets these metadata keys; returns the run's metadata. */
  async setMetadata(runId: string, values: Record<string, unknown>): Promise<Record<string, unknown>> {
    const { metadata } = await this.call<{ metadata: Record<string, unknown> }>(
      "POST",
      `${runPath(runId)}/metadata`,
      values,
    );
    return metadata;
  }

  /** Sends a value on the run's input stream `streamId`. */
  async sendInput(runId: string, streamId: string, data: unknown): Promise<void> {
    await this.call("POST", `${runPath(runId)}/inputs/${encodeURIComponent(streamId)}`, { data });
  }

  /** Skips time on the bridge's clock ("24h", or seconds): token timeouts and waits that become due fire now. */
  async advanceClock(duration: string | number): Promise<void> {
    await this.call("POST", "/_test/clock/advance", { duration });
  }

  /** The run once it has `status`; a TestBridgeError (408, saying where it is) after `timeoutSeconds`. */
  waitForRun(runId: string, status: string, timeoutSeconds = 5): Promise<TestRun> {
    const query = new URLSearchParams({ status, timeout: String(timeoutSeconds) });
    return this.call("GET", `${runPath(runId)}/wait?${query}`);
  }

  /** Runs reaching `steps.run(step, ...)` pause there until `releaseHold(step)`. */
  async holdAt(step: string): Promise<void> {
    await this.call("POST", "/_test/holds", { step });
  }

  /** The id of the first run that reached the held step, once one did. */
  async holdReached(step: string, timeoutSeconds = 5): Promise<string> {
    const query = new URLSearchParams({ timeout: String(timeoutSeconds) });
    const { runId } = await this.call<{ runId: string }>("GET", `/_test/holds/${encodeURIComponent(step)}/reached?${query}`);
    return runId;
  }

  async releaseHold(step: string): Promise<void> {
    await this.call("POST", `/_test/holds/${encodeURIComponent(step)}/release`, {});
  }

  /** Stops the bridge (SIGTERM; SIGKILL after 10 s) and returns once it exited. */
  async stop(): Promise<void> {
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.secretKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer: unknown = await response.json();
    if (!response.ok) throw new TestBridgeError(response.status, answer);
    return answer as T;
  }
}

function runPath(runId: string): string {
  return `/_test/runs/${encodeURIComponent(runId)}`;
}

/** Starts `python -m bridge testserver --tasks ... --port 0`; resolves once it serves. */
export function startBridge(options: BridgeOptions): Promise<TestBridge> {
  const tasks = typeof options.tasks === "string" ? [options.tasks] : options.tasks;
  const python = options.python ?? process.env.BRIDGE_PYTHON ?? "python3";
  const args = ["-m", "bridge", "testserver", ...tasks.flatMap((spec) => ["--tasks", spec]), "--port", "0"];
  const child = spawn(python, options.redis ? [...args, "--redis"] : args, {
    cwd: options.cwd,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  // Always read: a full pipe would block the bridge's logging.
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-STDERR_KEPT);
  });
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`realtime-bridge testserver ${why}\n${stderr}`));
    };
    const timer = setTimeout(() => fail("did not start in time"), options.startupTimeoutMs ?? 30_000);
    child.once("error", (error) => fail(`could not be started with ${python}: ${error.message}`));
    child.once("exit", (code, signal) => fail(`exited (${signal ?? code}) before it served`));
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const end = stdout.indexOf("\n");
      if (end < 0) return;
      clearTimeout(timer);
      child.removeAllListeners("exit");
      child.removeAllListeners("error");
      child.stdout?.removeAllListeners("data");
      const line = JSON.parse(stdout.slice(0, end)) as Line;
      resolve(new TestBridge(line.url, line.secretKey, line.pid, child));
    });
  });
}

/** A Playwright fixture: `test.extend<{ bridge: TestBridge }>({ bridge: bridgeFixture({ tasks: "tasks.py" }) })`
 * gives each test a bridge of its own, stopped after it. */
export function bridgeFixture(
  options: BridgeOptions,
): (args: object, use: (bridge: TestBridge) => Promise<void>) => Promise<void> {
  // Playwright reads the fixture's first parameter: it must be an object pattern.
  // eslint-disable-next-line no-empty-pattern
  return async ({}, use) => {
    const bridge = await startBridge(options);
    try {
      await use(bridge);
    } finally {
      await bridge.stop();
    }
  };
}
