import { expect, test } from "./fixtures";

test("the dashboard receives new runs live, in every window that shows it", async ({
  page,
  context,
  uniqueTag,
  demoApi,
  baseURL,
}) => {
  const dashboardURL = `/#/dashboard?tag=${encodeURIComponent(uniqueTag)}`;
  await page.goto(dashboardURL);
  await expect(page.getByTestId("dashboard-empty")).toBeVisible();
  const other = await context.newPage();
  await other.goto(dashboardURL);
  await expect(other.getByTestId("dashboard-empty")).toBeVisible();

  // Five runs from the page's button: both windows see them appear and complete.
  await page.getByTestId("trigger-five").click();
  for (const window of [page, other]) {
    await expect(window.getByTestId("dashboard-row")).toHaveCount(5);
    await expect(window.locator('[data-testid="dashboard-row"][data-status="COMPLETED"]')).toHaveCount(5);
    await expect(window.getByTestId("count-completed")).toHaveText("5");
    await expect(window.getByTestId("run-count")).toHaveText("5");
  }

  // A run triggered by someone else's backend call shows up too, at the top.
  const { runId } = await demoApi.triggerRun(baseURL!, "draft-email", { stepSeconds: 0.2 }, [uniqueTag]);
  for (const window of [page, other]) {
    const row = window.locator(`[data-testid="dashboard-row"][data-run-id="${runId}"]`);
    await expect(row).toHaveAttribute("data-status", "COMPLETED");
    await expect(row.getByTestId("row-progress")).toHaveAttribute("aria-valuenow", "100");
    await expect(window.getByTestId("dashboard-row").first()).toHaveAttribute("data-run-id", runId);
    await expect(window.getByTestId("run-count")).toHaveText("6");
  }

  // And a failing one, in red.
  await other.getByTestId("trigger-failing").click();
  for (const window of [page, other]) {
    await expect(window.locator('[data-testid="dashboard-row"][data-status="FAILED"]')).toHaveCount(1);
    await expect(window.getByTestId("count-failed")).toHaveText("1");
  }
});
