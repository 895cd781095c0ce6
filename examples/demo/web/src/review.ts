/** The `review` task (examples/demo/tasks.py) and what both review views share. */
import { useEffect, useState } from "react";
import { reviewAccess, type ReviewAccess } from "./api";

export type ReviewPayload = { timeout?: string; idempotencyKey?: string };
/** What a reviewer sends: the token's output (a webhook may send any JSON; only `approved: true` approves). */
export type ReviewDecision = { approved: boolean; comment?: string; via: string };
export type ReviewOutput = { approved: boolean; comment: string | null; via: string | null } | { timedOut: true };
export type ReviewMetadata = { tokenId?: string; step?: string };
export type Review = {
  taskIdentifier: "review";
  payload: ReviewPayload;
  output: ReviewOutput;
  metadata: ReviewMetadata;
};

export function tokenIdOf(metadata: unknown): string | undefined {
  const value = metadata && typeof metadata === "object" ? (metadata as ReviewMetadata).tokenId : undefined;
  return typeof value === "string" && value ? value : undefined;
}

export type ReviewAccessState = { access?: ReviewAccess; error?: string };

/**
 * Asks the demo's backend for the review access once the run shows WAITING with a `tokenId` in its
 * metadata (once per token id). Keeps what it got after the run moves on.
 */
export function useReviewAccess(runId: string, status: string | undefined, tokenId: string | undefined) {
  const [state, setState] = useState<ReviewAccessState & { tokenId?: string }>({});
  const wanted = status === "WAITING" ? tokenId : undefined;
  const have = state.tokenId;
  useEffect(() => {
    if (!wanted || have === wanted) return;
    let cancelled = false;
    reviewAccess(runId).then(
      (access) => !cancelled && setState({ tokenId: wanted, access }),
      (error: unknown) =>
        !cancelled && setState({ tokenId: wanted, error: error instanceof Error ? error.message : String(error) }),
    );
    return () => {
      cancelled = true;
    };
  }, [runId, wanted, have]);
  return { access: state.access, error: state.error } satisfies ReviewAccessState;
}

/** POSTs `body` to the token's callback URL, as a webhook from another service would. */
export async function postToCallback(callbackUrl: string, body: unknown): Promise<unknown> {
  const response = await fetch(callbackUrl, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });
  const answer = await response.json().catch(() => undefined);
  if (!response.ok) {
    throw new Error(answer?.error ?? `POST callback URL: HTTP ${response.status}`);
  }
  return answer;
}
