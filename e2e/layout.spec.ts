/**
 * No demo page scrolls sideways, on a laptop (1280 px) or a phone (390 px), once it shows its runs: each
 * page is filled as a user would fill it (run ids, JSON outputs, callback URLs: its widest content), then
 * measured at both widths. What is wider than its box (code, tables) scrolls inside the box.
 */
import type { Page } from "@playwright/test";
import { expect, test } from "./fixtures";
import { startApproval, startReview } from "./support/flows";

const WIDTHS = [1280, 390];

async function expectNoSidewaysScroll(page: Page): Promise<void> {
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    const { scroll, client } = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
    }));
    expect(scroll, `the page is ${scroll} px wide in a ${client} px window (${width} px viewport)`).toBe(client);
  }
}

test.describe("every demo page fits the window", () => {
  test("Run", async ({ page }) => {
    await page.goto("/#/run");
    await page.getByTestId("trigger").click();
    await expect(page.getByTestId("run-card").getByTestId("run-status")).toHaveText("COMPLETED");
    await expectNoSidewaysScroll(page);
  });

  test("Dashboard", async ({ page, uniqueTag }) => {
    await page.goto(`/#/dashboard?tag=${uniqueTag}`);
    await page.getByTestId("trigger-five").click();
    await expect(page.getByTestId("dashboard-row")).toHaveCount(5);
    await expectNoSidewaysScroll(page);
  });

  test("Ten hooks", async ({ page }) => {
    await page.goto("/#/ten");
    await page.getByTestId("start-ten").click();
    await expect(page.getByTestId("hook-card").getByTestId("run-status")).toHaveCount(10);
    await expectNoSidewaysScroll(page);
  });

  test("Chat", async ({ page }) => {
    await page.goto("/#/chat");
    await page.getByTestId("chat-delay").fill("0");
    await page.getByTestId("chat-send").click();
    await expect(page.getByTestId("chat-card").getByTestId("chat-status")).toHaveText("COMPLETED");
    await expectNoSidewaysScroll(page);
  });

  test("Approval", async ({ page }) => {
    const card = await startApproval(page, "layout");
    await card.getByTestId("approval-approve").click();
    await expect(card.getByTestId("approval-output")).toBeVisible();
    await expectNoSidewaysScroll(page);
  });

  test("Review", async ({ page }) => {
    const { card } = await startReview(page);
    await card.getByTestId("review-approve").click();
    await expect(card.getByTestId("review-output")).toBeVisible();
    await expectNoSidewaysScroll(page);
  });

  test("Official hooks", async ({ page }) => {
    await page.goto("/#/official");
    await page.getByTestId("trigger").click();
    await page.getByTestId("official-chat-send").click();
    await page.getByTestId("official-approval-start").click();
    await page.getByTestId("official-approval-approve").click();
    await page.getByTestId("official-review-start").click();
    await page.getByTestId("official-review-approve").click();
    await expect(page.getByTestId("run-card").getByTestId("run-status")).toHaveText("COMPLETED");
    await expect(page.getByTestId("official-chat-status")).toHaveText("COMPLETED");
    await expect(page.getByTestId("official-approval-output")).toBeVisible();
    await expect(page.getByTestId("official-review-output")).toBeVisible();
    await expectNoSidewaysScroll(page);
  });
});
