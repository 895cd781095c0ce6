/** The Approve button completes the run's wait token from the page: the document is published. */
import { expect, openRun, test } from "./fixtures";

test("Approve publishes", async ({ page, bridge }) => {
  const runId = await openRun(page, bridge, "publish", {});
  await expect(page.getByTestId("status")).toHaveText("WAITING");
  await page.getByTestId("approve").click();
  expect((await bridge.waitForRun(runId, "COMPLETED")).output).toEqual({ published: true });
  await expect(page.getByTestId("status")).toHaveText("COMPLETED");
});
