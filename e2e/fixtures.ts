/**
 * The suite's `test`: Playwright's, plus
 * - `backend`, `restartable` and `workerControlURL` (set per project in playwright.config.ts):
 *   which backend the project's servers use, the server that only e2e/restart.spec.ts stops and
 *   starts, and (project "redis-worker") the control port of the server whose worker runs apart;
 * - a check that no page of the test logged a console error or threw (`allowConsoleErrors` to
 *   expect some);
 * - `uniqueTag`: a tag of the test's own, so its dashboard shows only its runs;
 * - `demoApi`: the demo's backend routes, to trigger runs from outside the page.
 */
import { test as base, expect, type APIRequestContext, type Page } from "@playwright/test";

export type ServerOptions = {
  backend: "memory" | "redis";
  restartable: { baseURL: string; controlURL: string };
  workerControlURL: string;
};

type Fixtures = {
  allowConsoleErrors: RegExp[];
  uniqueTag: string;
  demoApi: DemoApi;
};

export type StartedRun = { runId: string; publicAccessToken: string };

export class DemoApi {
  constructor(private readonly request: APIRequestContext) {}

  /** Triggers a run the way the demo's backend does for a page: POST /demo/api/runs. */
  async triggerRun(baseURL: string, task: string, payload: unknown, tags: string[] = []): Promise<StartedRun> {
    const response = await this.request.post(`${baseURL}/demo/api/runs`, { data: { task, payload, tags } });
    expect(response.ok(), await response.text()).toBeTruthy();
    return (await response.json()) as StartedRun;
  }
}

/** Stops and starts a server started by e2e/support/launcher.mjs, through its control port. */
export class ServerControl {
  constructor(
    private readonly request: APIRequestContext,
    private readonly controlURL: string,
  ) {}

  /** Kills the demo server (SIGKILL: like a crash, the pages get no close frame). */
  async stop(): Promise<void> {
    const response = await this.request.post(`${this.controlURL}/stop`, { timeout: 30_000 });
    expect(response.ok(), await response.text()).toBeTruthy();
  }

  /** Starts it again on the same port; returns once it answers /readyz. */
  async start(): Promise<void> {
    const response = await this.request.post(`${this.controlURL}/start`, { timeout: 60_000 });
    expect(response.ok(), await response.text()).toBeTruthy();
  }

  /** Stops the server's separate worker with SIGTERM (launcher --separate-worker); returns its exit. */
  async stopWorker(): Promise<{ code: number | null; signal: string | null }> {
    const response = await this.request.post(`${this.controlURL}/worker/stop`, { timeout: 30_000 });
    expect(response.ok(), await response.text()).toBeTruthy();
    return ((await response.json()) as { exit: { code: number | null; signal: string | null } }).exit;
  }

  /** Starts a new worker process; returns once it takes runs. */
  async startWorker(): Promise<void> {
    const response = await this.request.post(`${this.controlURL}/worker/start`, { timeout: 60_000 });
    expect(response.ok(), await response.text()).toBeTruthy();
  }
}

export const test = base.extend<ServerOptions & Fixtures>({
  backend: ["memory", { option: true }],
  restartable: [{ baseURL: "", controlURL: "" }, { option: true }],
  workerControlURL: ["", { option: true }],
  allowConsoleErrors: [[], { option: true }],

  context: async ({ context, allowConsoleErrors }, use) => {
    const problems: string[] = [];
    const watch = (page: Page) => {
      page.on("console", (message) => {
        if (message.type() !== "error") return;
        const text = message.text();
        if (!allowConsoleErrors.some((pattern) => pattern.test(text))) problems.push(`console error: ${text}`);
      });
      page.on("pageerror", (error) => problems.push(`uncaught: ${error.stack ?? error.message}`));
    };
    context.pages().forEach(watch);
    context.on("page", watch);
    await use(context);
    expect(problems, "the pages logged errors").toEqual([]);
  },

  uniqueTag: async ({}, use, testInfo) => {
    const suffix = `${testInfo.project.name}-${testInfo.workerIndex}-${Date.now().toString(36)}`;
    await use(`demo:e2e-${suffix}`);
  },

  demoApi: async ({ request }, use) => {
    await use(new DemoApi(request));
  },
});

export { expect };

/** Marks the page so a test can check later that it was never reloaded. */
export async function markPage(page: Page): Promise<void> {
  await page.evaluate(() => {
    (window as unknown as { __e2eMark: number }).__e2eMark = 42;
  });
}

export async function expectNotReloaded(page: Page): Promise<void> {
  expect(await page.evaluate(() => (window as unknown as { __e2eMark?: number }).__e2eMark)).toBe(42);
}
