import { expect, expectNotReloaded, markPage, ServerControl, test } from "./fixtures";

// While the bridge is down, the browser logs each refused reconnection attempt.
test.use({ allowConsoleErrors: [/^WebSocket connection to 'ws:\/\/[^']+\/ws' failed/] });

// Whatever happened in the test, leave the server running (a no-op when it is).
test.afterEach(async ({ request, restartable }) => {
  await new ServerControl(request, restartable.controlURL).start();
});

test("pages recover after the bridge restarts, without a reload", async ({
  page,
  context,
  request,
  restartable,
  backend,
  uniqueTag,
  demoApi,
}) => {
  const server = new ServerControl(request, restartable.controlURL);
  const { baseURL } = restartable;

  // The Run page, with a finished run.
  await page.goto(`${baseURL}/#/run`);
  await markPage(page);
  await page.getByTestId("trigger").click();
  const card = page.getByTestId("run-card");
  await expect(card.getByTestId("run-status")).toHaveText("COMPLETED");

  // A dashboard, following a tag live, with one run.
  const dashboard = await context.newPage();
  await dashboard.goto(`${baseURL}/#/dashboard?tag=${encodeURIComponent(uniqueTag)}`);
  await markPage(dashboard);
  const before = await demoApi.triggerRun(baseURL, "draft-email", { stepSeconds: 0.1 }, [uniqueTag]);
  const beforeRow = dashboard.locator(`[data-testid="dashboard-row"][data-run-id="${before.runId}"]`);
  await expect(beforeRow).toHaveAttribute("data-status", "COMPLETED");
  await expect(dashboard.getByTestId("connection")).toHaveAttribute("data-state", "live");

  // The bridge crashes: the dashboard shows it is reconnecting.
  await server.stop();
  await expect(dashboard.getByTestId("connection")).toHaveAttribute("data-state", "reconnecting");
  await expect(dashboard.getByTestId("connection")).toHaveText("Reconnecting…");

  // It comes back: the dashboard resubscribes by itself.
  await server.start();
  await expect(dashboard.getByTestId("connection")).toHaveAttribute("data-state", "live");
  if (backend === "redis") {
    // Runs live in Redis: the fresh snapshot still has the run.
    await expect(beforeRow).toHaveAttribute("data-status", "COMPLETED");
  } else {
    // The in-memory backend lost every run: the fresh snapshot replaces the stale rows.
    await expect(beforeRow).toHaveCount(0);
    await expect(dashboard.getByTestId("dashboard-empty")).toBeVisible();
  }
  const after = await demoApi.triggerRun(baseURL, "draft-email", { stepSeconds: 0.1 }, [uniqueTag]);
  const afterRow = dashboard.locator(`[data-testid="dashboard-row"][data-run-id="${after.runId}"]`);
  await expect(afterRow).toHaveAttribute("data-status", "COMPLETED");
  await expect(afterRow.getByTestId("row-progress")).toHaveAttribute("aria-valuenow", "100");

  // The Run page, never reloaded, watches a new run to the end.
  const firstRunId = await card.getByTestId("run-id").textContent();
  await page.getByTestId("recipient").fill("after-restart@example.com");
  await page.getByTestId("trigger").click();
  await expect(card.getByTestId("run-id")).not.toHaveText(firstRunId!);
  await expect(card.getByTestId("run-status")).toHaveText("COMPLETED");
  await expect(card.getByTestId("run-progress")).toHaveAttribute("aria-valuenow", "100");
  await expect(card.getByTestId("run-output")).toContainText("Hello after-restart@example.com");
  await expect(card.getByTestId("oncomplete-count")).toHaveText("1");

  await expectNotReloaded(page);
  await expectNotReloaded(dashboard);
});
