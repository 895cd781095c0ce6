import { expect, test } from "./fixtures";

test.describe("Run page (useRealtimeRun over the WebSocket)", () => {
  test("a run goes to COMPLETED live: progress to 100%, output shown, onComplete once", async ({ page }) => {
    await page.goto("/#/run");
    await expect(page.getByTestId("run-empty")).toBeVisible();

    await page.getByTestId("recipient").fill("e2e@example.com");
    await page.getByTestId("trigger").click();

    const card = page.getByTestId("run-card");
    const status = card.getByTestId("run-status");
    const progress = card.getByTestId("run-progress");
    await expect(card.getByTestId("run-id")).toHaveText(/^run_[0-9a-f]{24}$/);
    await expect(status).toHaveText("COMPLETED");
    // On the way, the page showed the run executing, its progress moving through the steps.
    const log = card.getByTestId("run-log");
    await expect(log).toContainText("EXECUTING");
    await expect(log).toContainText(/EXECUTING\s*(25|50|75)%/);
    await expect(progress).toHaveAttribute("aria-valuenow", "100");
    await expect(card.getByTestId("run-progress-label")).toHaveText("100%");
    await expect(card.getByTestId("run-output")).toContainText("Re: your question");
    await expect(card.getByTestId("run-output")).toContainText("Hello e2e@example.com");
    await expect(card.getByTestId("oncomplete-count")).toHaveText("1");

    // A second run replaces the first, with its own onComplete count.
    const firstRunId = await card.getByTestId("run-id").textContent();
    await page.getByTestId("recipient").fill("second@example.com");
    await page.getByTestId("trigger").click();
    await expect(card.getByTestId("run-id")).not.toHaveText(firstRunId!);
    await expect(status).toHaveText("COMPLETED");
    await expect(card.getByTestId("run-output")).toContainText("Hello second@example.com");
    await expect(card.getByTestId("oncomplete-count")).toHaveText("1");
    await expect(page.getByTestId("connection")).toHaveAttribute("data-state", /live|idle/);
  });

  test("the page triggers the task itself with one-time trigger tokens", async ({ page }) => {
    await page.goto("/#/run");
    await page.getByText("This page", { exact: true }).click();
    await expect(page.getByRole("radio", { name: "This page" })).toBeChecked();
    const card = page.getByTestId("run-card");
    for (const to of ["first@example.com", "again@example.com"]) {
      await page.getByTestId("recipient").fill(to);
      // Enabled once the backend has handed the page a fresh one-time token.
      await expect(page.getByTestId("trigger")).toBeEnabled();
      await page.getByTestId("trigger").click();
      await expect(card.getByTestId("run-output")).toContainText(`Hello ${to}`);
      await expect(card.getByTestId("run-status")).toHaveText("COMPLETED");
      await expect(card.getByTestId("oncomplete-count")).toHaveText("1");
    }
    await expect(page.getByTestId("trigger-error")).toHaveCount(0);
  });

  test("a failing run is retried once (attempt 2), then shows FAILED and its error", async ({ page }) => {
    await page.goto("/#/run");
    await page.getByTestId("trigger-failing").click();
    const card = page.getByTestId("run-card");
    // always-fails allows 2 attempts: the page saw the second one execute before the run failed.
    await expect(card.getByTestId("run-log")).toContainText(/EXECUTING\s*\d+% · attempt 2/);
    await expect(card.getByTestId("run-status")).toHaveText("FAILED");
    await expect(card.getByTestId("run-attempt")).toHaveText("attempt 2");
    await expect(card.getByTestId("run-failure")).toContainText("the demo task failed on purpose");
    await expect(card.getByTestId("run-progress")).toHaveAttribute("aria-valuenow", "50");
    await expect(card.getByTestId("oncomplete-count")).toHaveText("1");
  });
});
