import type { Page } from "@playwright/test";
import { expect, test } from "./fixtures";
import { startApproval } from "./support/flows";

// The fake model's reply to any prompt it has no fixed answer for (examples/demo/tasks.py).
const echoReply = (prompt: string) =>
  `You said: ${prompt}. I am a fake model, so I only echo it back, one word at a time, ` +
  "about every forty milliseconds, and the page shows each word as it arrives.";
const tokenCount = (text: string) => text.split(" ").length;

type StopTiming = { clickedAt: number; ackAt: number; ackIndex: number; chunksAtAck: number; chunkTimes: number[] };

async function stopTiming(page: Page): Promise<StopTiming> {
  const element = page.getByTestId("chat-stop-timing");
  const read = async (name: string) => (await element.getAttribute(name)) ?? "";
  return {
    clickedAt: Number(await read("data-clicked-at")),
    ackAt: Number(await read("data-ack-at")),
    ackIndex: Number(await read("data-ack-index")),
    chunksAtAck: Number(await read("data-chunks-at-ack")),
    chunkTimes: JSON.parse((await read("data-chunk-times")) || "[]") as number[],
  };
}

/*
 * Why Stop is clicked right after a token shows, with tokens TOKEN_MS apart: the bridge acks a
 * value once it is stored, and the task stops appending once it has *seen* it. A token the task
 * appended in between (or just before, still on its way through the stream's delivery) reaches
 * the page after the ack. That window is a few milliseconds (send -> task handler latency plus
 * chunk delivery latency), so a click at a random moment hits it now and then (seen about once in
 * a dozen runs on Redis with 80 ms tokens). Clicking as a token arrives puts the next append
 * TOKEN_MS away from the stop, which is what this test can promise; closing the window for any
 * click needs the bridge to order the ack after the run's in-flight chunks.
 */
const TOKEN_MS = 300;

test.describe("Input streams", () => {
  test("Stop stops the reply: acknowledged within 500 ms, and no chunk arrives after the ack", async ({ page }) => {
    const prompt = "Please stop me halfway";
    const full = echoReply(prompt);
    await page.goto("/#/chat");
    await page.getByTestId("chat-prompt").fill(prompt);
    await page.getByTestId("chat-delay").fill(String(TOKEN_MS));
    await page.getByTestId("chat-send").click();
    await expect(page).toHaveURL(/#\/chat\?run=run_[0-9a-f]{24}&token=/);

    const card = page.getByTestId("chat-card");
    const reply = card.getByTestId("chat-reply");
    await expect.poll(async () => Number(await reply.getAttribute("data-parts"))).toBeGreaterThanOrEqual(3);
    // Click Stop as the next token shows, so the stop lands between two tokens (see the note above).
    await page.evaluate(
      () =>
        new Promise<void>((resolve) => {
          const shown = document.querySelector('[data-testid="chat-reply"]')!;
          const observer = new MutationObserver(() => {
            observer.disconnect();
            (document.querySelector('[data-testid="chat-stop"]') as HTMLButtonElement).click();
            resolve();
          });
          observer.observe(shown, { attributes: true, attributeFilter: ["data-parts"] });
        }),
    );

    // The ack comes back on the page's WebSocket.
    await expect(page.getByTestId("chat-stop-timing")).not.toHaveAttribute("data-ack-at", "");
    // The run completes with the partial reply, marked stopped.
    await expect(card.getByTestId("chat-status")).toHaveText("COMPLETED");
    await expect(card.getByTestId("chat-stopped")).toHaveText("stopped");
    // Give a late chunk every chance to show up before measuring.
    await page.waitForTimeout(500);

    const timing = await stopTiming(page);
    expect(timing.ackAt - timing.clickedAt, "ack within 500 ms of the click").toBeLessThan(500);
    expect(timing.ackIndex).toBe(0);
    expect(timing.chunksAtAck).toBeGreaterThanOrEqual(4);
    expect(timing.chunksAtAck).toBeLessThan(tokenCount(full));
    // Every chunk the page received came before the ack; none after it.
    expect(timing.chunkTimes).toHaveLength(timing.chunksAtAck);
    expect(timing.chunkTimes.filter((at) => at > timing.ackAt)).toEqual([]);
    expect(Number(await reply.getAttribute("data-parts"))).toBe(timing.chunksAtAck);

    // The text stays what arrived, and it is the run's output.
    const shown = (await reply.textContent()) ?? "";
    expect(full.startsWith(shown)).toBe(true);
    expect(shown.length).toBeLessThan(full.length);
    await expect(card.getByTestId("chat-output")).toHaveText(shown, { useInnerText: false });
    await expect(page.getByTestId("chat-stop")).toHaveCount(0);
  });

  for (const decision of ["approve", "reject"] as const) {
    test(`${decision === "approve" ? "Approve" : "Reject"} releases the WAITING run with approved: ${decision === "approve"}`, async ({ page }) => {
      const card = await startApproval(page, `the ${decision} test`);
      await card.getByTestId(`approval-${decision}`).click();

      await expect(card.getByTestId("approval-status")).toHaveText("COMPLETED");
      const output = card.getByTestId("approval-output");
      await expect(output).toHaveAttribute("data-approved", String(decision === "approve"));
      const parsed = JSON.parse((await output.textContent()) ?? "{}") as { approved: boolean; text: string };
      expect(parsed).toEqual({
        approved: decision === "approve",
        text: expect.stringContaining(`the ${decision} test`),
      });
      await expect(card.getByTestId("approval-error")).toHaveCount(0);
      await expect(card.getByTestId("approval-approve")).toBeDisabled();
    });
  }

  test("the official useInputStreamSend approves a run through the bridge's HTTP route", async ({ page }) => {
    const posts: string[] = [];
    page.on("request", (request) => {
      if (request.method() === "POST" && /\/realtime\/v1\/streams\/run_[0-9a-f]{24}\/input\/approval$/.test(request.url())) {
        posts.push(request.url());
      }
    });
    await page.goto("/#/official");
    await page.getByTestId("official-approval-start").click();
    const card = page.getByTestId("official-approval-card");
    await expect(card.getByTestId("official-approval-draft")).toContainText("a short note on the official hooks");
    await card.getByTestId("official-approval-approve").click();
    await expect(card.getByTestId("official-approval-status")).toHaveText("COMPLETED");
    await expect(card.getByTestId("official-approval-output")).toHaveAttribute("data-approved", "true");
    await expect(card.getByTestId("official-approval-error")).toHaveCount(0);
    expect(posts).toHaveLength(1);
  });
});
