/**
 * Browser end-to-end tests of the demo (examples/demo): `npx playwright test` (or `npm run e2e`).
 *
 * Debian's Chromium (/usr/bin/chromium) drives the pages; Playwright never downloads a browser.
 * The config starts the servers itself (e2e/support/launcher.mjs), two per backend: one the
 * tests share, and one that e2e/restart.spec.ts stops and starts (so no other test sees it go).
 * The Redis ones each start their own redis-server on a free port. A fifth server, on Redis, runs
 * its tasks in a separate worker process that e2e/worker-restart.spec.ts stops and starts: that
 * spec is the project "redis-worker" alone.
 *
 * The project "user-project" runs the sample user project's specs (examples/user_project/e2e).
 *
 * Ports: E2E_PORT_BASE (default 18790) and the next nine.
 */
import { defineConfig, devices } from "@playwright/test";
import type { ServerOptions } from "./e2e/fixtures";

const base = Number(process.env.E2E_PORT_BASE ?? 18790);
const backends = ["memory", "redis"] as const;

type Server = { backend: string; port: number; controlPort: number };

function servers(backend: string, index: number): { shared: Server; restartable: Server } {
  const first = base + index * 4;
  return {
    shared: { backend, port: first, controlPort: first + 1 },
    restartable: { backend, port: first + 2, controlPort: first + 3 },
  };
}

const url = (port: number) => `http://127.0.0.1:${port}`;

const workerSpec = "worker-restart.spec.ts";
const testServerSpec = "testserver.spec.ts";
const separateWorker = { backend: "redis", port: base + 8, controlPort: base + 9 };
const launch = (server: Server, extra = "") => ({
  command: `node e2e/support/launcher.mjs --backend ${server.backend} --port ${server.port} --control-port ${server.controlPort}${extra}`,
  url: `${url(server.port)}/readyz`,
  reuseExistingServer: false,
  timeout: 60_000,
  stdout: "ignore" as const,
  stderr: "pipe" as const,
  gracefulShutdown: { signal: "SIGTERM" as const, timeout: 10_000 },
});

export default defineConfig({
  testDir: "e2e",
  testMatch: "*.spec.ts",
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: process.env.E2E_WORKERS ? Number(process.env.E2E_WORKERS) : 2,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [["list"], ["html", { open: "never" }]],
  use: {
    ...devices["Desktop Chrome"],
    viewport: { width: 1280, height: 900 },
    launchOptions: {
      executablePath: process.env.E2E_CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
    screenshot: "only-on-failure",
    trace: "retain-on-failure",
    video: "off",
  },
  projects: [
    ...backends.map((backend, index) => {
      const { shared, restartable } = servers(backend, index);
      return {
        name: backend,
        // The Playwright helper's spec starts a test bridge of its own: once is enough.
        testIgnore: backend === "memory" ? workerSpec : [workerSpec, testServerSpec],
        use: {
          baseURL: url(shared.port),
          restartable: { baseURL: url(restartable.port), controlURL: url(restartable.controlPort) },
          backend,
        } satisfies { baseURL: string } & ServerOptions,
      };
    }),
    {
      name: "redis-worker",
      testMatch: workerSpec,
      use: {
        baseURL: url(separateWorker.port),
        backend: "redis",
        workerControlURL: url(separateWorker.controlPort),
      } satisfies { baseURL: string } & Partial<ServerOptions>,
    },
    // The sample user project's specs (examples/user_project/e2e): each starts a test bridge of its own.
    { name: "user-project", testDir: "examples/user_project/e2e" },
  ],
  webServer: [
    ...backends.flatMap((backend, index) => Object.values(servers(backend, index)).map((server) => launch(server))),
    launch(separateWorker, " --separate-worker"),
  ],
});
