/** The demo's own backend (examples/demo/app.py): what your server would do with the Python SDK. */

/** The bridge serves this page, so the hooks connect to the page's own origin. */
export const baseURL = window.location.origin;

export type StartedRun = { runId: string; publicAccessToken: string };
export type StartedBatch = { batchId: string; publicAccessToken: string; runs: StartedRun[] };

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(path, {
    ...init,
    headers: { "Content-Type": "application/json", ...init?.headers },
  });
  const body = await response.json().catch(() => undefined);
  if (!response.ok) {
    throw new Error(body?.error ?? `${init?.method ?? "GET"} ${path}: HTTP ${response.status}`);
  }
  return body as T;
}

const post = <T>(path: string, body: unknown) =>
  call<T>(path, { method: "POST", body: JSON.stringify(body) });

/** Triggers a task from "your backend", which hands back the run id and a token that reads it. */
export function triggerRun(task: string, payload: unknown, tags?: string[]): Promise<StartedRun> {
  return post("/demo/api/runs", { task, payload, tags });
}

/** Triggers one run per payload, as one batch. */
export function triggerBatch(task: string, payloads: unknown[], tags?: string[]): Promise<StartedBatch> {
  return post("/demo/api/batches", { task, payloads, tags });
}

export function cancelRun(runId: string): Promise<unknown> {
  return post(`/demo/api/runs/${encodeURIComponent(runId)}/cancel`, {});
}

/** A token that reads every run with `tag` (the dashboard's). */
export async function tagsToken(tag: string): Promise<string> {
  return (await call<{ token: string }>(`/demo/api/tokens/tags?tag=${encodeURIComponent(tag)}`)).token;
}

/** A one-time token that lets this page trigger `task` itself. */
export async function triggerToken(task: string): Promise<string> {
  return (await call<{ token: string }>(`/demo/api/tokens/trigger?task=${encodeURIComponent(task)}`)).token;
}

/** What a reviewer needs to complete a review run's wait token (see `review_access` in app.py). */
export type ReviewAccess = {
  tokenId: string;
  /** Completes that one token (`write:waitpoints:<tokenId>`); your backend decides who gets it. */
  accessToken: string;
  /** The token's callback URL: POSTing JSON to it completes the token (what a webhook would do). */
  callbackUrl: string;
  tokenStatus: "WAITING" | "COMPLETED" | "TIMED_OUT";
};

/** Asks "your backend" for the right to complete the wait token the review run `runId` waits on. */
export function reviewAccess(runId: string): Promise<ReviewAccess> {
  return post(`/demo/api/runs/${encodeURIComponent(runId)}/review-access`, {});
}
