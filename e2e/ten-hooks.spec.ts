import type { WebSocket } from "@playwright/test";
import { expect, test } from "./fixtures";

test("ten useRealtimeRun hooks share exactly one WebSocket", async ({ page }) => {
  const sockets: WebSocket[] = [];
  page.on("websocket", (socket) => sockets.push(socket));

  await page.goto("/#/ten");
  await page.getByTestId("start-ten").click();

  const cards = page.getByTestId("hook-card");
  await expect(cards).toHaveCount(10);
  await expect(cards.getByTestId("run-status")).toHaveCount(10);
  await expect(cards.locator('[data-testid="run-status"][data-status="COMPLETED"]')).toHaveCount(10);
  await expect(cards.locator('[data-testid="run-progress"][aria-valuenow="100"]')).toHaveCount(10);

  expect(sockets.map((socket) => socket.url())).toEqual([expect.stringMatching(/^ws:\/\/127\.0\.0\.1:\d+\/ws$/)]);
  await expect(page.getByTestId("sockets-opened")).toHaveText("1");
});
