/** The Cancel button stops a summary while it streams: the run completes with the words so far. */
import { expect, openRun, test } from "./fixtures";

const TEXT = Array.from({ length: 50 }, (_, n) => `word${n}`).join(" "); // 10 s: Cancel lands long before the end

test("Cancel stops the summary mid-stream", async ({ page, bridge }) => {
  const runId = await openRun(page, bridge, "summarize", { text: TEXT });
  await expect(page.getByTestId("text")).toHaveText(/^word0/);
  await page.getByTestId("cancel").click();
  const run = await bridge.waitForRun(runId, "COMPLETED");
  const output = run.output as { text: string; stopped: boolean };
  expect(output.stopped).toBe(true);
  expect(output.text.split(" ").length).toBeLessThan(50);
  await expect(page.getByTestId("status")).toHaveText("COMPLETED");
  await expect(page.getByTestId("text")).toHaveText(output.text);
});
