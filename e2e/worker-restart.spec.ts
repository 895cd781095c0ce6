/**
 * Durable waits across a worker restart (project "redis-worker" only: its server runs no task, a
 * separate worker process on the same Redis does). The page opens a waiting run, the worker is
 * stopped with SIGTERM (as a deploy stops it) and a new worker process started, then the page's
 * button resumes the run: the run had parked (after BRIDGE_WAIT_HOLD, 0.2 s, or when its worker
 * stopped) and the new process finishes it.
 */
import { expect, ServerControl, test } from "./fixtures";
import { startApproval, startReview } from "./support/flows";

// Whatever happened in the test, leave a worker running (a no-op when one is).
test.afterEach(async ({ request, workerControlURL }) => {
  await new ServerControl(request, workerControlURL).startWorker();
});

async function restartWorker(server: ServerControl): Promise<void> {
  // A clean exit: the stopping worker let its waiting run go, it did not need a SIGKILL.
  expect(await server.stopWorker()).toEqual({ code: 0, signal: null });
  await server.startWorker();
}

test("review: the worker restarts while the run waits; Approve completes it", async ({
  page,
  request,
  workerControlURL,
}) => {
  const server = new ServerControl(request, workerControlURL);
  const { card } = await startReview(page);
  await expect(card.getByTestId("review-hook-state")).toHaveAttribute("data-ready", "true");

  await restartWorker(server);
  await expect(card.getByTestId("review-status")).toHaveText("WAITING");

  const comment = "approved across a worker restart";
  await card.getByTestId("review-comment").fill(comment);
  await card.getByTestId("review-approve").click();
  await expect(card.getByTestId("review-status")).toHaveText("COMPLETED");
  await expect(card.getByTestId("review-step")).toHaveText("approved");
  const output = card.getByTestId("review-output");
  expect(JSON.parse((await output.textContent()) ?? "null")).toEqual({ approved: true, comment, via: "hook" });
});

test("approval: the worker restarts while the run waits; Approve completes it", async ({
  page,
  request,
  workerControlURL,
}) => {
  const server = new ServerControl(request, workerControlURL);
  const card = await startApproval(page, "the worker restart");

  await restartWorker(server);
  await expect(card.getByTestId("approval-status")).toHaveText("WAITING");

  await card.getByTestId("approval-approve").click();
  await expect(card.getByTestId("approval-status")).toHaveText("COMPLETED");
  const output = card.getByTestId("approval-output");
  expect(JSON.parse((await output.textContent()) ?? "{}")).toEqual({
    approved: true,
    text: expect.stringContaining("a short note on the worker restart"),
  });
  await expect(card.getByTestId("approval-error")).toHaveCount(0);
});
