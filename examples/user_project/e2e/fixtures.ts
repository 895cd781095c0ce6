/**
 * The sample's Playwright fixture: each test gets a `realtime-bridge testserver` of its own serving
 * ../tasks.py (`bridgeFixture` from `@realtime-bridge/react-hooks/testing`), and `openRun` shows a run
 * on the built page (web/dist), served by Playwright at the bridge's origin.
 */
import { readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import { test as base, type Page } from "@playwright/test";
// The built hooks package (scripts/install builds js-hooks): a user imports "@realtime-bridge/react-hooks/testing".
import { bridgeFixture, type TestBridge } from "../../../js-hooks/dist/testing.cjs";

const PROJECT = join(__dirname, "..");
const REPO = join(PROJECT, "../..");
const WEB_DIST = join(PROJECT, "web/dist");
const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

export const test = base.extend<{ bridge: TestBridge }>({
  bridge: bridgeFixture({
    tasks: "tasks.py",
    cwd: PROJECT,
    python: process.env.E2E_PYTHON ?? join(REPO, ".venv/bin/python"),
  }),
});
export { expect } from "@playwright/test";

// The page is fulfilled by Playwright, not loaded from 127.0.0.1: Chromium's local network access
// checks would block its WebSocket to the bridge on 127.0.0.1 (a served page is never blocked).
test.use({
  launchOptions: {
    executablePath: process.env.E2E_CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-features=LocalNetworkAccessChecks"],
  },
});

/** Triggers `task` on the test bridge and opens the page on that run; resolves to the run's id. */
export async function openRun(page: Page, bridge: TestBridge, task: string, payload: unknown): Promise<string> {
  await page.route(new RegExp(`^${bridge.url}/(assets/[^?#]+)?(\\?.*)?$`), async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = join(WEB_DIST, path === "/" ? "index.html" : path);
    await route.fulfill({ body: await readFile(file), contentType: TYPES[extname(file)] ?? "application/octet-stream" });
  });
  const { id, publicToken } = await bridge.trigger(task, payload);
  await page.goto(`${bridge.url}/?run=${id}&token=${publicToken}`);
  return id;
}
