/**
 * The first steps of the demo's waiting flows, shared by the specs that then finish them in
 * different ways (review.spec.ts, inputs.spec.ts, worker-restart.spec.ts).
 */
import type { Locator, Page } from "@playwright/test";
import { expect } from "../fixtures";

/** Opens the Review page, starts a review run, and waits until the page may complete its token. */
export async function startReview(page: Page, timeout?: string): Promise<{ card: Locator; runId: string }> {
  await page.goto("/#/review");
  await expect(page.getByTestId("review-empty")).toBeVisible();
  if (timeout !== undefined) await page.getByTestId("review-timeout").fill(timeout);
  await page.getByTestId("review-start").click();
  await expect(page).toHaveURL(/#\/review\?run=run_[0-9a-f]{24}&token=/);
  const runId = new URLSearchParams(page.url().split("?")[1]).get("run")!;
  const card = page.getByTestId("review-card");
  await expect(card.getByTestId("review-status")).toHaveText("WAITING");
  await expect(card.getByTestId("review-step")).toHaveText("waiting for review");
  return { card, runId };
}

/** Opens the Approval page, starts a `draft-approval` run on `topic`, and waits until it waits for the decision. */
export async function startApproval(page: Page, topic: string): Promise<Locator> {
  await page.goto("/#/approval");
  await expect(page.getByTestId("approval-empty")).toBeVisible();
  await page.getByTestId("approval-topic").fill(topic);
  await page.getByTestId("approval-start").click();
  await expect(page).toHaveURL(/#\/approval\?run=run_[0-9a-f]{24}&token=/);
  const card = page.getByTestId("approval-card");
  await expect(card.getByTestId("approval-draft")).toContainText(`a short note on ${topic}`);
  await expect(card.getByTestId("approval-status")).toHaveText("WAITING");
  return card;
}
