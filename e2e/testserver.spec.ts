/**
 * The Playwright helper (`@realtime-bridge/react-hooks/testing`, js-hooks/dist/testing.cjs) on the demo's
 * Chat page: each test gets a `realtime-bridge testserver` of its own serving examples/demo/tasks.py
 * (`bridgeFixture`); the page comes from examples/demo/web/dist at the test bridge's origin, and
 * Playwright plays the demo's backend route that triggers a run (with `bridge.trigger`). Memory
 * project only: the test bridge is its own, whatever the project's servers run on.
 */
import { readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import type { Page } from "@playwright/test";
// The built package (scripts/install builds js-hooks): its CommonJS entry, as this CommonJS suite loads it.
import { bridgeFixture, type TestBridge } from "../js-hooks/dist/testing.cjs";
import { expect, test as base } from "./fixtures";

const ROOT = join(__dirname, "..");
const WEB_DIST = join(ROOT, "examples/demo/web/dist");
const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

const test = base.extend<{ bridge: TestBridge }>({
  bridge: bridgeFixture({
    tasks: "examples/demo/tasks.py",
    cwd: ROOT,
    python: process.env.E2E_PYTHON ?? join(ROOT, ".venv/bin/python"),
  }),
});

// The page is fulfilled by Playwright, not loaded from 127.0.0.1: Chromium's local network access
// checks would block its WebSocket to the bridge on 127.0.0.1 (a served page is never blocked).
test.use({
  launchOptions: {
    executablePath: process.env.E2E_CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-features=LocalNetworkAccessChecks"],
  },
});

/** The demo page at the bridge's origin (its hooks connect there), and the demo backend's trigger route. */
async function serveDemo(page: Page, bridge: TestBridge): Promise<void> {
  await page.route(`${bridge.url}/demo/api/runs`, async (route) => {
    const { task, payload } = route.request().postDataJSON() as { task: string; payload: unknown };
    const { id, publicToken } = await bridge.trigger(task, payload);
    await route.fulfill({ json: { runId: id, publicAccessToken: publicToken } });
  });
  await page.route(new RegExp(`^${bridge.url}/(assets/[^?#]+)?$`), async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = join(WEB_DIST, path === "/" ? "index.html" : path);
    await route.fulfill({ body: await readFile(file), contentType: TYPES[extname(file)] ?? "application/octet-stream" });
  });
}

test("Chat: Stop ends the streamed reply early, with the helper following the run", async ({ page, bridge }) => {
  await serveDemo(page, bridge);
  await page.goto(`${bridge.url}/#/chat`);
  await page.getByTestId("chat-prompt").fill("Hello");
  await page.getByTestId("chat-delay").fill("1000"); // a word a second: Stop lands mid-reply
  await page.getByTestId("chat-send").click();
  await expect(page).toHaveURL(/#\/chat\?run=run_[0-9a-f]{24}&token=/);
  const runId = new URL(page.url()).hash.match(/run=(run_[0-9a-f]{24})/)![1]!;
  const card = page.getByTestId("chat-card");
  await expect(card.getByTestId("chat-reply")).toHaveText(/^Hello!/);

  await page.getByTestId("chat-stop").click();
  // The page's Stop is an input on the run's "cancel" stream: the run completes with the partial reply.
  const run = await bridge.waitForRun(runId, "COMPLETED", 30);
  const output = run.output as { text: string; stopped: boolean };
  expect(output.stopped).toBe(true);
  expect(output.text.startsWith("Hello!")).toBe(true);
  await expect(card.getByTestId("chat-status")).toHaveText("COMPLETED");
  await expect(card.getByTestId("chat-stopped")).toHaveText("stopped");
  await expect(card.getByTestId("chat-output")).toHaveText(output.text, { useInnerText: false });
});
