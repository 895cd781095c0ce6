import { useRealtimeRun, useWaitToken } from "@realtime-bridge/react-hooks";
import { useState, type FormEvent } from "react";
import { baseURL, triggerRun, type ReviewAccess } from "../api";
import { Code } from "../components/Code";
import { EmptyRunCard, ErrorCallout } from "../components/Placeholders";
import { DecisionButtons } from "../components/DecisionButtons";
import { ReviewerSlot } from "../components/ReviewerSlot";
import { RunCardHead } from "../components/RunCardHead";
import { useAction } from "../components/useAction";
import { postToCallback, useReviewRun, type Review, type ReviewDecision } from "../review";

export function reviewHash(runId: string, token: string): string {
  return `#/review?${new URLSearchParams({ run: runId, token }).toString()}`;
}

const yesNo = (value: boolean) => (value ? "yes" : "no");

/** Approve / Reject with our useWaitToken (a `complete` frame on the page's WebSocket), or a webhook. */
function Reviewer({ access, runFinished }: { access: ReviewAccess; runFinished: boolean }) {
  const [comment, setComment] = useState("Looks good to me.");
  // The access token carries write:waitpoints:<tokenId>: it completes this one token.
  const { complete, isLoading, isCompleted, isReady, error } = useWaitToken<ReviewDecision>(access.tokenId, {
    accessToken: access.accessToken,
    baseURL,
  });
  const webhook = useAction();
  const [webhookAnswer, setWebhookAnswer] = useState<unknown>();
  const [decided, setDecided] = useState(false);
  const canDecide =
    isReady && !runFinished && !decided && !isLoading && !isCompleted && access.tokenStatus === "WAITING";

  function decide(approved: boolean) {
    setDecided(true);
    complete({ approved, comment, via: "hook" });
  }

  async function simulateWebhook() {
    setDecided(true);
    await webhook.run(async () => {
      setWebhookAnswer(await postToCallback(access.callbackUrl, { approved: true, via: "webhook" }));
    });
  }

  return (
    <div className="review-controls" data-testid="review-controls">
      <label className="field">
        <span>Comment</span>
        <input
          type="text"
          value={comment}
          onChange={(event) => setComment(event.target.value)}
          data-testid="review-comment"
        />
      </label>
      <DecisionButtons canDecide={canDecide} onDecide={decide} testIdPrefix="review">
        <button
          type="button"
          className="button button-quiet"
          disabled={!canDecide || webhook.busy}
          onClick={() => void simulateWebhook()}
          data-testid="review-webhook"
          title="POST {approved: true} to the token's callback URL, as another service would"
        >
          Simulate webhook
        </button>
      </DecisionButtons>
      <dl
        className="facts"
        data-testid="review-hook-state"
        data-ready={String(isReady)}
        data-loading={String(isLoading)}
        data-completed={String(isCompleted)}
      >
        <div>
          <dt>isReady</dt>
          <dd>{yesNo(isReady)}</dd>
        </div>
        <div>
          <dt>isLoading</dt>
          <dd data-testid="review-hook-loading">{yesNo(isLoading)}</dd>
        </div>
        <div>
          <dt>isCompleted</dt>
          <dd data-testid="review-hook-completed">{yesNo(isCompleted)}</dd>
        </div>
        <div>
          <dt>Webhook</dt>
          <dd data-testid="review-webhook-state">
            {webhook.busy ? "sending…" : webhookAnswer !== undefined ? "sent" : "—"}
          </dd>
        </div>
      </dl>
      {error && (
        <div className="callout callout-error" data-testid="review-hook-error">
          {error.message}
        </div>
      )}
      <ErrorCallout message={webhook.failure} testId="review-webhook-error" />
      <div className="hint">
        Token <code data-testid="review-token-id">{access.tokenId}</code>; callback URL{" "}
        <code className="review-url" data-testid="review-callback-url">
          {access.callbackUrl}
        </code>
      </div>
    </div>
  );
}

function ReviewRun({ runId, token }: { runId: string; token: string }) {
  const { run, error } = useRealtimeRun<Review>(runId, { accessToken: token });
  const review = useReviewRun(runId, run);
  const { output, decision } = review;

  return (
    <section className="card run-card" data-testid="review-card">
      <RunCardHead
        eyebrow={`Run ${runId}, via useRealtimeRun + useWaitToken`}
        testIdPrefix="review"
        status={run?.status}
        step={run?.metadata?.step}
      />
      <ReviewerSlot
        review={review}
        Reviewer={Reviewer}
        pending={review.tokenId ? "Asking your backend for review access…" : "Waiting for the run to create its wait token…"}
        testIdPrefix="review"
      />
      {error && (
        <div className="callout callout-error" data-testid="review-error">
          {error.message}
        </div>
      )}
      {run?.status === "FAILED" && run.error && (
        <div className="callout callout-error" data-testid="review-run-error">
          {run.error.message}
        </div>
      )}
      {output && (
        <pre
          className="json"
          data-testid="review-output"
          data-approved={decision ? String(decision.approved) : undefined}
          data-via={decision?.via ?? undefined}
          data-timed-out={"timedOut" in output ? "true" : undefined}
        >
          {JSON.stringify(output, null, 2)}
        </pre>
      )}
    </section>
  );
}

export function ReviewPage({ runId, token }: { runId: string | null; token: string | null }) {
  const [timeout, setTimeoutText] = useState("10m");
  const { busy, failure, run } = useAction();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      const started = await triggerRun("review", { timeout: timeout.trim() || undefined });
      window.location.hash = reviewHash(started.runId, started.publicAccessToken);
    });
  }

  return (
    <div className="page">
      <section className="intro">
        <h1>Review</h1>
        <p>
          A Python task creates a wait token with <code>wait.create_token(timeout="10m")</code>, puts its id in
          metadata, and waits: <code>await wait.for_token(token)</code>. The run shows <code>WAITING</code> and gives
          its worker slot to other runs. Your backend hands the reviewer an access token for that one token; Approve
          or Reject completes it with <code>useWaitToken</code> over the page's WebSocket. <em>Simulate webhook</em>{" "}
          POSTs to the token's callback URL instead, as another service would.
        </p>
      </section>
      <div className="columns">
        <form className="card form" onSubmit={submit} aria-label="Start a review">
          <label className="field">
            <span>Timeout</span>
            <input
              type="text"
              value={timeout}
              onChange={(event) => setTimeoutText(event.target.value)}
              data-testid="review-timeout"
              placeholder="10m"
            />
          </label>
          <div className="hint">No decision by then: the run completes with {"{timedOut: true}"}.</div>
          <div className="actions">
            <button type="submit" className="button button-primary" disabled={busy} data-testid="review-start">
              {busy ? "Starting…" : "Start review"}
            </button>
          </div>
          <ErrorCallout message={failure} testId="review-trigger-error" />
        </form>
        {runId && token ? (
          <ReviewRun key={`${runId}\n${token}`} runId={runId} token={token} />
        ) : (
          <EmptyRunCard testId="review-empty" title="No review yet.">
            Start one: the task creates a wait token, then waits for your decision.
          </EmptyRunCard>
        )}
      </div>
      <Code title="What this page does">{`
# examples/demo/tasks.py
@task(id="review")
async def review(payload):
    token = await wait.create_token(timeout=payload.get("timeout") or "10m", tags=["review"])
    await metadata.set("tokenId", token.id)
    result = await wait.for_token(token)          # WAITING; the worker slot is free meanwhile
    if not result.ok:
        return {"timedOut": True}
    return {"approved": result.output.get("approved") is True, ...}

# examples/demo/app.py: POST /demo/api/runs/{run_id}/review-access (your backend decides who may review)
token_id = (await runs.retrieve(run_id)).metadata["tokenId"]
access = auth.create_public_token(scopes={"write": {"waitpoints": [token_id]}}, expiration_time="1h")
callback_url = (await wait.retrieve_token(token_id)).url

// ReviewPage.tsx
import { useWaitToken } from "@realtime-bridge/react-hooks";

const { complete, isLoading, isCompleted, isReady, error } = useWaitToken(tokenId, { accessToken, baseURL });
complete({ approved: true, comment, via: "hook" });

// a webhook: no token, the URL carries its own signature
await fetch(callbackUrl, { method: "POST", body: JSON.stringify({ approved: true, via: "webhook" }), headers: { "content-type": "application/json" } });
`}</Code>
    </div>
  );
}
