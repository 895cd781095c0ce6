/**
 * The same run view, built with the UNMODIFIED official @trigger.dev/react-hooks from npm, pointed
 * at the bridge with `baseURL`. It follows the run over the official HTTP protocol (Electric
 * long-polls), not the bridge's WebSocket. Loaded on demand: it is the page's largest dependency.
 */
import { useInputStreamSend, useRealtimeRun, useRealtimeStream, useWaitToken } from "@trigger.dev/react-hooks";
import { useState, type ComponentType, type FormEvent, type ReactNode } from "react";
import { baseURL, cancelRun, triggerRun, type ReviewAccess, type StartedRun } from "../api";
import { Code } from "../components/Code";
import { EmptyRunCard, ErrorCallout } from "../components/Placeholders";
import { ChatReply, type ChatOutput, type ChatPayload } from "../components/ChatReply";
import { RunDetails } from "../components/RunDetails";
import { DecisionButtons } from "../components/DecisionButtons";
import { ReviewerSlot } from "../components/ReviewerSlot";
import { RunCardHead } from "../components/RunCardHead";
import { useReviewRun, type ReviewDecision } from "../review";
import type { DraftEmailOutput, DraftEmailPayload } from "../runs";
import { useAction } from "../components/useAction";

function OfficialLiveRun({ started }: { started: StartedRun }) {
  const [completions, setCompletions] = useState(0);
  const { run, error } = useRealtimeRun(started.runId, {
    accessToken: started.publicAccessToken,
    baseURL,
    onComplete: () => setCompletions((count) => count + 1),
  });
  const typed = run as (typeof run & { payload: DraftEmailPayload; output?: DraftEmailOutput }) | undefined;
  return (
    <RunDetails
      run={typed}
      error={error}
      completions={completions}
      onCancel={() => void cancelRun(started.runId)}
    />
  );
}

/** The chat task's reply, read with the official useRealtimeStream (SSE from /realtime/v1/streams). */
function OfficialChatReply({ runId, token }: { runId: string; token: string }) {
  const { parts, error: streamError } = useRealtimeStream<string>(runId, "ai", { accessToken: token, baseURL });
  const { run, error: runError } = useRealtimeRun(runId, { accessToken: token, baseURL });
  const payload = run?.payload as ChatPayload | undefined;
  return (
    <ChatReply
      testId="official-chat"
      hook="useRealtimeStream (@trigger.dev/react-hooks)"
      prompt={payload?.prompt}
      parts={parts}
      status={run?.status}
      output={run?.output as ChatOutput | undefined}
      error={streamError ?? runError}
    />
  );
}

function OfficialChat({ runId, token }: { runId: string | null; token: string | null }) {
  const [prompt, setPrompt] = useState("Hello");
  const { busy, failure, run } = useAction();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      const started = await triggerRun("chat", { prompt });
      window.location.hash = `#/official?${new URLSearchParams({ run: started.runId, token: started.publicAccessToken })}`;
    });
  }

  return (
    <>
      <section className="intro">
        <h2>Streams: the official useRealtimeStream</h2>
        <p>
          The chat task's reply (its output stream <code>"ai"</code>), read by the official hook over the bridge's
          SSE route <code>/realtime/v1/streams/:runId/ai</code>.
        </p>
      </section>
      <div className="columns">
        <form className="card form" onSubmit={submit} aria-label="Ask the chat task">
          <label className="field">
            <span>Prompt</span>
            <textarea
              className="chat-prompt"
              value={prompt}
              onChange={(event) => setPrompt(event.target.value)}
              data-testid="official-chat-prompt"
              required
            />
          </label>
          <div className="actions">
            <button type="submit" className="button button-primary" disabled={busy} data-testid="official-chat-send">
              {busy ? "Sending…" : "Send"}
            </button>
          </div>
          <ErrorCallout message={failure} testId="official-chat-trigger-error" />
        </form>
        {runId && token ? (
          <OfficialChatReply key={`${runId}\n${token}`} runId={runId} token={token} />
        ) : (
          <EmptyRunCard testId="official-chat-empty" title="No reply yet.">
            Send a prompt to read its stream with the official hook.
          </EmptyRunCard>
        )}
      </div>
    </>
  );
}

/**
 * One section of the page: its title and `intro`, a button that starts a run with `start` (testids
 * `${testIdPrefix}-start`, `-trigger-error`, `-empty`), and the started run shown with `Run`.
 */
function StartRunSection({
  title,
  intro,
  testIdPrefix,
  startLabel,
  start,
  Run,
  emptyTitle,
  emptyText,
}: {
  title: string;
  intro: ReactNode;
  testIdPrefix: string;
  startLabel: string;
  start: () => Promise<StartedRun>;
  Run: ComponentType<{ started: StartedRun }>;
  emptyTitle: string;
  emptyText: string;
}) {
  const [started, setStarted] = useState<StartedRun>();
  const { busy, failure, run } = useAction();

  async function startRun() {
    await run(async () => {
      setStarted(await start());
    });
  }

  return (
    <>
      <section className="intro">
        <h2>{title}</h2>
        <p>{intro}</p>
      </section>
      <div className="columns">
        <div className="card form">
          <div className="actions">
            <button
              type="button"
              className="button button-primary"
              disabled={busy}
              onClick={() => void startRun()}
              data-testid={`${testIdPrefix}-start`}
            >
              {busy ? "Starting…" : startLabel}
            </button>
          </div>
          <ErrorCallout message={failure} testId={`${testIdPrefix}-trigger-error`} />
        </div>
        {started ? (
          <Run key={started.runId} started={started} />
        ) : (
          <EmptyRunCard testId={`${testIdPrefix}-empty`} title={emptyTitle}>
            {emptyText}
          </EmptyRunCard>
        )}
      </div>
    </>
  );
}

/** An approval run followed by the official useRealtimeRun, approved with the official useInputStreamSend. */
function OfficialApprovalRun({ started }: { started: StartedRun }) {
  const options = { accessToken: started.publicAccessToken, baseURL };
  const { run, error } = useRealtimeRun(started.runId, options);
  // POST /realtime/v1/streams/{runId}/input/approval, answered by the bridge.
  const { send, isLoading, isReady, error: sendError } = useInputStreamSend<{ approved: boolean }>(
    "approval",
    started.runId,
    options,
  );
  const [sent, setSent] = useState(false);
  const draft = (run?.metadata as { draft?: string } | undefined)?.draft;
  const output = run?.status === "COMPLETED" ? (run.output as { approved: boolean; text: string }) : undefined;
  return (
    <section className="card run-card" data-testid="official-approval-card">
      <RunCardHead
        eyebrow={`Run ${started.runId}, via useInputStreamSend (@trigger.dev/react-hooks)`}
        testIdPrefix="official-approval"
        status={run?.status}
        showStep={false}
      />
      <div className="chat-bubble chat-assistant approval-draft" data-testid="official-approval-draft">
        {draft ?? <span className="muted">Drafting…</span>}
      </div>
      <DecisionButtons
        canDecide={isReady && !!draft && !isLoading && !sent && !output}
        onDecide={() => {
          setSent(true);
          send({ approved: true });
        }}
        testIdPrefix="official-approval"
        reject={false}
      />
      {(sendError ?? error) && (
        <div className="callout callout-error" data-testid="official-approval-error">
          {(sendError ?? error)!.message}
        </div>
      )}
      {output && (
        <pre className="json" data-testid="official-approval-output" data-approved={String(output.approved)}>
          {JSON.stringify(output, null, 2)}
        </pre>
      )}
    </section>
  );
}

function OfficialApproval() {
  return (
    <StartRunSection
      title="Input streams: the official useInputStreamSend"
      intro={
        <>
          A <code>draft-approval</code> run waits on its input stream <code>"approval"</code>; the official hook sends
          the approval to the bridge's <code>POST /realtime/v1/streams/:runId/input/approval</code>.
        </>
      }
      testIdPrefix="official-approval"
      startLabel="Draft for approval"
      start={() => triggerRun("draft-approval", { topic: "the official hooks" })}
      Run={OfficialApprovalRun}
      emptyTitle="No approval run yet."
      emptyText="Start one, then approve it with the official hook."
    />
  );
}

/** Completes the review run's wait token with the official useWaitToken (POST /api/v1/waitpoints/tokens/:id/complete). */
function OfficialReviewer({ access, runFinished }: { access: ReviewAccess; runFinished: boolean }) {
  const { complete, isLoading, isCompleted, isReady, error } = useWaitToken<ReviewDecision>(access.tokenId, {
    accessToken: access.accessToken,
    baseURL,
  });
  const [sent, setSent] = useState(false);
  return (
    <>
      <DecisionButtons
        canDecide={isReady && !isLoading && !isCompleted && !sent && !runFinished}
        onDecide={() => {
          setSent(true);
          complete({ approved: true, comment: "Approved with the official hook.", via: "official-hook" });
        }}
        testIdPrefix="official-review"
        reject={false}
      />
      <dl
        className="facts"
        data-testid="official-review-hook-state"
        data-loading={String(isLoading)}
        data-completed={String(isCompleted)}
      >
        <div>
          <dt>isReady</dt>
          <dd>{isReady ? "yes" : "no"}</dd>
        </div>
        <div>
          <dt>isLoading</dt>
          <dd>{isLoading ? "yes" : "no"}</dd>
        </div>
        <div>
          <dt>isCompleted</dt>
          <dd data-testid="official-review-hook-completed">{isCompleted ? "yes" : "no"}</dd>
        </div>
        <div>
          <dt>Token</dt>
          <dd className="review-url">{access.tokenId}</dd>
        </div>
      </dl>
      {error && (
        <div className="callout callout-error" data-testid="official-review-hook-error">
          {error.message}
        </div>
      )}
    </>
  );
}

/** A review run followed by the official useRealtimeRun; its wait token completed by the official useWaitToken. */
function OfficialReviewRun({ started }: { started: StartedRun }) {
  const { run, error } = useRealtimeRun(started.runId, { accessToken: started.publicAccessToken, baseURL });
  const review = useReviewRun(started.runId, run);
  const { output, decision } = review;
  return (
    <section className="card run-card" data-testid="official-review-card">
      <RunCardHead
        eyebrow={`Run ${started.runId}, via useWaitToken (@trigger.dev/react-hooks)`}
        testIdPrefix="official-review"
        status={run?.status}
        step={(run?.metadata as { step?: string } | undefined)?.step}
      />
      <ReviewerSlot
        review={review}
        Reviewer={OfficialReviewer}
        pending="Waiting for the run's wait token…"
        testIdPrefix="official-review"
      />
      {error && (
        <div className="callout callout-error" data-testid="official-review-error">
          {error.message}
        </div>
      )}
      {output && (
        <pre
          className="json"
          data-testid="official-review-output"
          data-approved={decision ? String(decision.approved) : undefined}
          data-via={decision?.via ?? undefined}
        >
          {JSON.stringify(output, null, 2)}
        </pre>
      )}
    </section>
  );
}

function OfficialReview() {
  return (
    <StartRunSection
      title="Wait tokens: the official useWaitToken"
      intro={
        <>
          A <code>review</code> run waits on a wait token (<code>wait.for_token</code>); the demo's backend hands this
          page an access token for it, and the official hook completes it through the bridge's{" "}
          <code>POST /api/v1/waitpoints/tokens/:id/complete</code>.
        </>
      }
      testIdPrefix="official-review"
      startLabel="Start a review"
      start={() => triggerRun("review", { timeout: "10m" })}
      Run={OfficialReviewRun}
      emptyTitle="No review run yet."
      emptyText="Start one, then complete its wait token with the official hook."
    />
  );
}

export default function OfficialPage({ chatRunId = null, chatToken = null }: { chatRunId?: string | null; chatToken?: string | null }) {
  const [to, setTo] = useState("grace@example.com");
  const [started, setStarted] = useState<StartedRun>();
  const { busy, failure, run } = useAction();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      setStarted(await triggerRun("draft-email", { to }));
    });
  }

  return (
    <div className="page">
      <section className="intro">
        <h1>The official hooks, unchanged</h1>
        <p>
          This page uses <code>@trigger.dev/react-hooks</code> 4.8.3 straight from npm, with{" "}
          <code>baseURL: window.location.origin</code>. The bridge speaks the official realtime protocol, so it
          works as it does against Trigger.dev, over HTTP long-polls instead of the WebSocket.
        </p>
      </section>

      <div className="columns">
        <form className="card form" onSubmit={submit} aria-label="Trigger a run">
          <label className="field">
            <span>Recipient</span>
            <input
              type="email"
              value={to}
              onChange={(event) => setTo(event.target.value)}
              data-testid="recipient"
              required
            />
          </label>
          <div className="actions">
            <button type="submit" className="button button-primary" disabled={busy} data-testid="trigger">
              {busy ? "Starting…" : "Draft email"}
            </button>
          </div>
          <ErrorCallout message={failure} testId="trigger-error" />
        </form>

        {started ? (
          <OfficialLiveRun key={started.runId} started={started} />
        ) : (
          <EmptyRunCard testId="run-empty" title="No run yet.">
            Draft an email to follow it with the official hook.
          </EmptyRunCard>
        )}
      </div>

      <OfficialChat runId={chatRunId} token={chatToken} />

      <OfficialApproval />

      <OfficialReview />

      <Code title="What this page does">{`
import { useInputStreamSend, useRealtimeRun, useRealtimeStream, useWaitToken } from "@trigger.dev/react-hooks";   // the official package, unmodified

const { run, error } = useRealtimeRun(runId, {
  accessToken: publicAccessToken,
  baseURL: window.location.origin,   // the bridge
  onComplete: () => setCompletions((n) => n + 1),
});

const { parts } = useRealtimeStream<string>(chatRunId, "ai", { accessToken, baseURL: window.location.origin });
parts.join("");   // the chat task's reply so far

const { send } = useInputStreamSend<{ approved: boolean }>("approval", approvalRunId, { accessToken, baseURL: window.location.origin });
send({ approved: true });   // POST /realtime/v1/streams/{runId}/input/approval

const { complete, isCompleted } = useWaitToken(tokenId, { accessToken: reviewAccessToken, baseURL: window.location.origin });
complete({ approved: true, via: "official-hook" });   // POST /api/v1/waitpoints/tokens/{tokenId}/complete
`}</Code>
    </div>
  );
}
