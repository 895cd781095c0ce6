import type { Locator, Page, WebSocket } from "@playwright/test";
import { expect, test } from "./fixtures";
import { startReview } from "./support/flows";

const TOKEN_ID = /^waitpoint_[0-9a-f]{24}$/;
const COMPLETE_ROUTE = /\/api\/v1\/waitpoints\/tokens\/waitpoint_[0-9a-f]{24}\/complete$/;
const CALLBACK_ROUTE = /\/api\/v1\/waitpoints\/tokens\/waitpoint_[0-9a-f]{24}\/callback\/[0-9a-f]+$/;

type Frame = { type: string; id?: string; tokenId?: string; data?: unknown; token?: string };

/** Every JSON frame the page's WebSockets send and receive. */
function recordFrames(page: Page): { sent: Frame[]; received: Frame[] } {
  const frames = { sent: [] as Frame[], received: [] as Frame[] };
  const parse = (payload: string | Buffer): Frame | undefined => {
    try {
      return JSON.parse(payload.toString()) as Frame;
    } catch {
      return undefined;
    }
  };
  page.on("websocket", (socket: WebSocket) => {
    socket.on("framesent", ({ payload }) => {
      const frame = parse(payload);
      if (frame) frames.sent.push(frame);
    });
    socket.on("framereceived", ({ payload }) => {
      const frame = parse(payload);
      if (frame) frames.received.push(frame);
    });
  });
  return frames;
}

/** The POSTs the page makes whose URL matches `route`, with their response status. */
function recordPosts(page: Page, route: RegExp): { url: string; status: number }[] {
  const posts: { url: string; status: number }[] = [];
  page.on("requestfinished", async (request) => {
    if (request.method() !== "POST" || !route.test(request.url())) return;
    posts.push({ url: request.url(), status: (await request.response())?.status() ?? 0 });
  });
  return posts;
}

async function outputOf(output: Locator): Promise<unknown> {
  return JSON.parse((await output.textContent()) ?? "null");
}

test.describe("Wait tokens", () => {
  for (const decision of ["approve", "reject"] as const) {
    const approved = decision === "approve";
    test(`${approved ? "Approve" : "Reject"} completes the review run's wait token with useWaitToken: approved ${approved}`, async ({
      page,
    }) => {
      const frames = recordFrames(page);
      const httpCompletions = recordPosts(page, /\/api\/v1\/waitpoints\//);
      const { card } = await startReview(page);

      // The demo's backend handed out the token's id, an access token for it and its callback URL.
      const tokenId = card.getByTestId("review-token-id");
      await expect(tokenId).toHaveText(TOKEN_ID);
      const id = (await tokenId.textContent())!;
      await expect(card.getByTestId("review-callback-url")).toHaveText(CALLBACK_ROUTE);
      await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-ready", "true");
      await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-completed", "false");

      const comment = `the ${decision} test`;
      await card.getByTestId("review-comment").fill(comment);
      await card.getByTestId(`review-${decision}`).click();

      await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-completed", "true");
      await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-loading", "false");
      await expect(card.getByTestId("review-status")).toHaveText("COMPLETED");
      await expect(card.getByTestId("review-step")).toHaveText(approved ? "approved" : "rejected");
      const output = card.getByTestId("review-output");
      await expect(output).toHaveAttribute("data-approved", String(approved));
      await expect(output).toHaveAttribute("data-via", "hook");
      expect(await outputOf(output)).toEqual({ approved, comment, via: "hook" });
      await expect(card.getByTestId("review-hook-error")).toHaveCount(0);
      await expect(card.getByTestId("review-access-error")).toHaveCount(0);
      for (const button of ["approve", "reject", "webhook"]) {
        await expect(card.getByTestId(`review-${button}`)).toBeDisabled();
      }

      // One `complete` frame on the page's WebSocket, acknowledged; no HTTP completion.
      const completes = frames.sent.filter((frame) => frame.type === "complete");
      expect(completes).toHaveLength(1);
      expect(completes[0]).toMatchObject({ tokenId: id, data: { approved, comment, via: "hook" } });
      expect(frames.received).toContainEqual(expect.objectContaining({ type: "ack", id: completes[0].id }));
      expect(httpCompletions).toEqual([]);
    });
  }

  test("Simulate webhook completes the token through its callback URL", async ({ page }) => {
    const frames = recordFrames(page);
    const callbacks = recordPosts(page, CALLBACK_ROUTE);
    const { card } = await startReview(page);
    await expect(card.getByTestId("review-webhook")).toBeEnabled();
    const callbackUrl = (await card.getByTestId("review-callback-url").textContent())!;
    await card.getByTestId("review-webhook").click();

    await expect(card.getByTestId("review-webhook-state")).toHaveText("sent");
    await expect(card.getByTestId("review-status")).toHaveText("COMPLETED");
    const output = card.getByTestId("review-output");
    await expect(output).toHaveAttribute("data-via", "webhook");
    expect(await outputOf(output)).toEqual({ approved: true, comment: null, via: "webhook" });
    await expect(card.getByTestId("review-webhook-error")).toHaveCount(0);
    // The hook did not complete anything: the webhook did, with one POST to the callback URL.
    await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-completed", "false");
    expect(frames.sent.filter((frame) => frame.type === "complete")).toEqual([]);
    await expect.poll(() => callbacks).toEqual([{ url: callbackUrl, status: 200 }]);
  });

  test("a review nobody completes within its timeout completes with timedOut", async ({ page }) => {
    const { card } = await startReview(page, "2s");
    await expect(card.getByTestId("review-status")).toHaveText("COMPLETED");
    const output = card.getByTestId("review-output");
    await expect(output).toHaveAttribute("data-timed-out", "true");
    expect(await outputOf(output)).toEqual({ timedOut: true });
    await expect(card.getByTestId("review-step")).toHaveText("timed out");
    await expect(card.getByTestId("review-approve")).toBeDisabled();
  });

  test("the demo's backend refuses review access for runs without a wait token", async ({ request, baseURL, demoApi }) => {
    const unknown = await request.post(`${baseURL}/demo/api/runs/run_000000000000000000000000/review-access`);
    expect(unknown.status()).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: "not_found" });

    const other = await demoApi.triggerRun(baseURL!, "draft-email", { stepSeconds: 0 });
    const notReview = await request.post(`${baseURL}/demo/api/runs/${other.runId}/review-access`);
    expect(notReview.status()).toBe(404);
    expect(await notReview.json()).toMatchObject({ error: expect.stringContaining("not a review run") });

    // A review run that fails before creating its token (a wrong timeout): 409 (not a 5xx), also once it ended.
    const failed = await demoApi.triggerRun(baseURL!, "review", { timeout: "soon" });
    const access = () => request.post(`${baseURL}/demo/api/runs/${failed.runId}/review-access`);
    expect((await access()).status()).toBe(409);
    await expect
      .poll(async () => {
        const response = await access();
        return { status: response.status(), body: await response.json() };
      })
      .toEqual({ status: 409, body: expect.objectContaining({ error: expect.stringContaining("ended (FAILED)") }) });
  });

  test("the official useWaitToken completes a review token through the bridge's HTTP route", async ({ page }) => {
    const sockets: WebSocket[] = [];
    page.on("websocket", (socket) => sockets.push(socket));
    const completions = recordPosts(page, COMPLETE_ROUTE);
    await page.goto("/#/official");
    await page.getByTestId("official-review-start").click();

    const card = page.getByTestId("official-review-card");
    await expect(card.getByTestId("official-review-status")).toHaveText("WAITING");
    await expect(card.getByTestId("official-review-approve")).toBeEnabled();
    await card.getByTestId("official-review-approve").click();

    await expect(card.getByTestId("official-review-hook-state")).toHaveAttribute("data-completed", "true");
    await expect(card.getByTestId("official-review-status")).toHaveText("COMPLETED");
    const output = card.getByTestId("official-review-output");
    await expect(output).toHaveAttribute("data-via", "official-hook");
    expect(await outputOf(output)).toEqual({
      approved: true,
      comment: "Approved with the official hook.",
      via: "official-hook",
    });
    await expect(card.getByTestId("official-review-hook-error")).toHaveCount(0);
    await expect(card.getByTestId("official-review-approve")).toBeDisabled();
    // One POST /api/v1/waitpoints/tokens/{id}/complete, and the page never opened the bridge's WebSocket.
    await expect.poll(() => completions.map((post) => post.status)).toEqual([200]);
    expect(sockets).toHaveLength(0);
  });
});
