/** The `review` task (examples/demo/tasks.py) and what both review views share. */
import type { RunTypes } from "@realtime-bridge/react-hooks";
import { useEffect, useState } from "react";
import { reviewAccess, type ReviewAccess } from "./api";
import { isFinal } from "./runs";

export type ReviewPayload = { timeout?: string; idempotencyKey?: string };
/** What a reviewer sends: the token's output (a webhook may send any JSON; only `approved: true` approves). */
export type ReviewDecision = { approved: boolean; comment?: string; via: string };
export type ReviewOutput = { approved: boolean; comment: string | null; via: string | null } | { timedOut: true };
export type ReviewMetadata = { tokenId?: string; step?: string };
export type Review = RunTypes<"review", ReviewPayload, ReviewOutput, ReviewMetadata>;

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

/**
 * What both review views (our hooks, the official ones) make of the review run: its wait token's id,
 * the review access for it (useReviewAccess), whether the run is over, its output and the decision in it.
 */
export function useReviewRun(
  runId: string,
  run: { status: string; metadata?: unknown; output?: unknown } | undefined,
): ReviewRunState {
  const tokenId = tokenIdOf(run?.metadata);
  const { access, error: accessError } = useReviewAccess(runId, run?.status, tokenId);
  const finished = isFinal(run?.status);
  const output = run?.status === "COMPLETED" ? (run.output as ReviewOutput | undefined) : undefined;
  const decision = output && "approved" in output ? output : undefined;
  return { tokenId, access, accessError, finished, output, decision };
}

export type ReviewRunState = {
  tokenId: string | undefined;
  access: ReviewAccess | undefined;
  accessError: string | undefined;
  finished: boolean;
  output: ReviewOutput | undefined;
  decision: Extract<ReviewOutput, { approved: boolean }> | undefined;
};

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
