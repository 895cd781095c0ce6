import type { Locator, Page } from "@playwright/test";
import { expect, test } from "./fixtures";

// The fake model of examples/demo/tasks.py (`chat`): a fixed reply per prompt, one word per chunk.
const HELLO_REPLY =
  "Hello! I am a pretend model living in examples/demo/tasks.py. " +
  "Every word you see arrived as its own chunk of the run's output stream.";
const echoReply = (prompt: string) =>
  `You said: ${prompt}. I am a fake model, so I only echo it back, one word at a time, ` +
  "about every forty milliseconds, and the page shows each word as it arrives.";
const tokenCount = (text: string) => text.split(" ").length;

/** Sends a prompt from the Chat page; returns once the page shows the run (its id is in the URL). */
async function ask(page: Page, prompt: string, delayMs: number): Promise<string> {
  await page.getByTestId("chat-prompt").fill(prompt);
  await page.getByTestId("chat-delay").fill(String(delayMs));
  await page.getByTestId("chat-send").click();
  await expect(page).toHaveURL(/#\/chat\?run=run_[0-9a-f]{24}&token=/);
  return new URL(page.url()).hash.match(/run=(run_[0-9a-f]{24})/)![1]!;
}

/** The part counts the page rendered, in order (ChatReply's log of renders with new text). */
async function renderedCounts(card: Locator, prefix: string): Promise<number[]> {
  const value = (await card.getByTestId(`${prefix}-updates`).getAttribute("data-lengths")) ?? "";
  return value ? value.split(",").map(Number) : [];
}

async function partsShown(card: Locator, prefix: string): Promise<number> {
  return Number((await card.getByTestId(`${prefix}-reply`).getAttribute("data-parts")) ?? "0");
}

test.describe("Chat page (useRealtimeStream over the WebSocket)", () => {
  test("the reply arrives progressively, token by token, and completely", async ({ page }) => {
    await page.goto("/#/chat");
    await expect(page.getByTestId("chat-empty")).toBeVisible();
    await ask(page, "Hello", 45);

    const card = page.getByTestId("chat-card");
    const reply = card.getByTestId("chat-reply");
    await expect(card.getByTestId("chat-prompt-shown")).toHaveText("Hello");
    await expect(reply).toHaveText(HELLO_REPLY);
    await expect(card.getByTestId("chat-status")).toHaveText("COMPLETED");
    await expect(card.getByTestId("chat-output")).toHaveText(HELLO_REPLY, { useInnerText: false });
    const total = tokenCount(HELLO_REPLY);
    await expect(card.getByTestId("chat-token-count")).toHaveText(String(total));

    // The page rendered partial replies on the way: several renders, growing, some before the end.
    const counts = await renderedCounts(card, "chat");
    expect(counts.length, `renders: ${counts}`).toBeGreaterThanOrEqual(3);
    expect(counts.some((count) => count > 0 && count < total), `renders: ${counts}`).toBe(true);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(counts.at(-1)).toBe(total);
  });

  test("reloading mid-reply shows the whole reply exactly once; a second tab sees the same text", async ({ page, context }) => {
    const prompt = "Tell me about streams";
    const expected = echoReply(prompt);
    const total = tokenCount(expected);
    await page.goto("/#/chat");
    await ask(page, prompt, 110);
    const url = page.url();

    const card = page.getByTestId("chat-card");
    // Mid-reply: some tokens shown, the run still executing.
    await expect.poll(() => partsShown(card, "chat")).toBeGreaterThanOrEqual(3);
    expect(await partsShown(card, "chat")).toBeLessThan(total);
    await expect(card.getByTestId("chat-status")).not.toHaveText("COMPLETED");

    // A second tab on the same run, opened mid-reply.
    const second = await context.newPage();
    await second.goto(url);

    await page.reload();
    // The form shows what this reply was asked with, not the defaults.
    await expect(page.getByTestId("chat-prompt")).toHaveValue(prompt);
    await expect(page.getByTestId("chat-delay")).toHaveValue("110");
    const reloaded = page.getByTestId("chat-card");
    await expect(reloaded.getByTestId("chat-reply")).toHaveText(expected);
    await expect(reloaded.getByTestId("chat-status")).toHaveText("COMPLETED");
    await expect(reloaded.getByTestId("chat-token-count")).toHaveText(String(total));
    // Never more parts than the stream has: no chunk was shown twice at any point.
    expect(Math.max(...(await renderedCounts(reloaded, "chat")))).toBe(total);

    await expect(second.getByTestId("chat-prompt")).toHaveValue(prompt);
    const other = second.getByTestId("chat-card");
    await expect(other.getByTestId("chat-reply")).toHaveText(expected);
    await expect(other.getByTestId("chat-token-count")).toHaveText(String(total));
    expect(Math.max(...(await renderedCounts(other, "chat")))).toBe(total);
    await expect(other.getByTestId("chat-output")).toHaveText(expected, { useInnerText: false });
  });

  test("the official useRealtimeStream reads the same text from the bridge", async ({ page, context }) => {
    const prompt = "Official readers welcome";
    const expected = echoReply(prompt);
    await page.goto("/#/chat");
    await ask(page, prompt, 60);

    // Opened mid-reply, from the Chat page's link: the official hook over the bridge's SSE route.
    const officialUrl = await page.getByTestId("chat-open-official").getAttribute("href");
    const official = await context.newPage();
    await official.goto(`/${officialUrl}`);
    const officialCard = official.getByTestId("official-chat-card");
    await expect(officialCard.getByTestId("official-chat-reply")).toHaveText(expected);
    await expect(officialCard.getByTestId("official-chat-token-count")).toHaveText(String(tokenCount(expected)));
    await expect(officialCard.getByTestId("official-chat-status")).toHaveText("COMPLETED");

    await expect(page.getByTestId("chat-reply")).toHaveText(expected);

    // And a run started from the official page itself.
    await official.getByTestId("official-chat-prompt").fill("Hello");
    await official.getByTestId("official-chat-send").click();
    await expect(official).toHaveURL(/#\/official\?run=run_[0-9a-f]{24}/);
    await expect(official.getByTestId("official-chat-reply")).toHaveText(HELLO_REPLY);
    await expect(official.getByTestId("official-chat-token-count")).toHaveText(String(tokenCount(HELLO_REPLY)));
  });
});
