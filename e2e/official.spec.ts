import type { WebSocket } from "@playwright/test";
import { expect, test } from "./fixtures";

test("the unmodified official hooks, pointed at the bridge, watch a run to COMPLETED", async ({ page }) => {
  const sockets: WebSocket[] = [];
  page.on("websocket", (socket) => sockets.push(socket));

  await page.goto("/#/official");
  await page.getByTestId("recipient").fill("official@example.com");
  await page.getByTestId("trigger").click();

  const card = page.getByTestId("run-card");
  await expect(card.getByTestId("run-status")).toHaveText("COMPLETED");
  await expect(card.getByTestId("run-log")).toContainText(/EXECUTING\s*(25|50|75)%/);
  await expect(card.getByTestId("run-progress")).toHaveAttribute("aria-valuenow", "100");
  await expect(card.getByTestId("run-output")).toContainText("Hello official@example.com");
  await expect(card.getByTestId("oncomplete-count")).toHaveText("1");
  // The official hooks use the official HTTP protocol (Electric long-polls), not the WebSocket.
  expect(sockets).toHaveLength(0);
});
