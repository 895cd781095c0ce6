import { defineInputStream, useInputStreamSend, useRealtimeRun, type RunTypes } from "@realtime-bridge/react-hooks";
import { useState, type FormEvent } from "react";
import { triggerRun } from "../api";
import { Code } from "../components/Code";
import { EmptyRunCard, ErrorCallout } from "../components/Placeholders";
import { DecisionButtons } from "../components/DecisionButtons";
import { RunCardHead } from "../components/RunCardHead";
import { isFinal } from "../runs";
import { useAction } from "../components/useAction";

/** What the draft-approval task (examples/demo/tasks.py) takes, sets and returns. */
export type ApprovalPayload = { topic?: string; draftSeconds?: number; timeout?: string };
export type ApprovalOutput = { approved: boolean; text: string };
export type ApprovalMetadata = { draft?: string; step?: string };
export type DraftApproval = RunTypes<"draft-approval", ApprovalPayload, ApprovalOutput, ApprovalMetadata>;

/** Python: `approval = streams.input("approval")`; the task waits for one value. */
export const approvalStream = defineInputStream<{ approved: boolean }>("approval");

export function approvalHash(runId: string, token: string): string {
  return `#/approval?${new URLSearchParams({ run: runId, token }).toString()}`;
}

function Decision({ runId, token }: { runId: string; token: string }) {
  const { run, error } = useRealtimeRun<DraftApproval>(runId, { accessToken: token });
  // The run's public access token carries write:inputStreams:<runId>: it may send to its inputs.
  const { send, isLoading, isReady, error: sendError } = useInputStreamSend(approvalStream, runId, {
    accessToken: token,
  });
  const [sent, setSent] = useState<boolean>();
  const draft = run?.metadata?.draft;
  const output = run?.status === "COMPLETED" ? (run.output as ApprovalOutput | undefined) : undefined;
  const canDecide = isReady && !!draft && !!run && !isFinal(run.status) && !isLoading && sent === undefined;

  function decide(approved: boolean) {
    setSent(approved);
    send({ approved });
  }

  return (
    <section className="card run-card" data-testid="approval-card">
      <RunCardHead
        eyebrow={`Run ${runId}, via useRealtimeRun + useInputStreamSend`}
        testIdPrefix="approval"
        status={run?.status}
        step={run?.metadata?.step}
      />
      <div className="chat-bubble chat-assistant approval-draft" data-testid="approval-draft">
        {draft ?? <span className="muted">Drafting…</span>}
      </div>
      <DecisionButtons canDecide={canDecide} onDecide={decide} testIdPrefix="approval">
        {isLoading && <span className="muted">Sending…</span>}
      </DecisionButtons>
      {(sendError ?? error) && (
        <div className="callout callout-error" data-testid="approval-error">
          {(sendError ?? error)!.message}
        </div>
      )}
      {output && (
        <pre className="json" data-testid="approval-output" data-approved={String(output.approved)}>
          {JSON.stringify(output, null, 2)}
        </pre>
      )}
    </section>
  );
}

export function ApprovalPage({ runId, token }: { runId: string | null; token: string | null }) {
  const [topic, setTopic] = useState("the launch");
  const { busy, failure, run } = useAction();

  async function submit(event: FormEvent) {
    event.preventDefault();
    await run(async () => {
      const started = await triggerRun("draft-approval", { topic });
      window.location.hash = approvalHash(started.runId, started.publicAccessToken);
    });
  }

  return (
    <div className="page">
      <section className="intro">
        <h1>Approval</h1>
        <p>
          A Python task drafts a short text, then waits for a person: <code>await approval.wait(timeout="5m")</code>{" "}
          on the input stream <code>"approval"</code>. While it waits the run shows <code>WAITING</code> and gives
          its worker slot to other runs. Approve or Reject sends <code>{"{approved: true | false}"}</code> with{" "}
          <code>useInputStreamSend</code> over the page's WebSocket, and the task completes with the decision.
        </p>
      </section>
      <div className="columns">
        <form className="card form" onSubmit={submit} aria-label="Start a draft">
          <label className="field">
            <span>Topic</span>
            <input value={topic} onChange={(event) => setTopic(event.target.value)} data-testid="approval-topic" required />
          </label>
          <div className="actions">
            <button type="submit" className="button button-primary" disabled={busy} data-testid="approval-start">
              {busy ? "Starting…" : "Draft"}
            </button>
          </div>
          <ErrorCallout message={failure} testId="approval-trigger-error" />
        </form>
        {runId && token ? (
          <Decision key={`${runId}\n${token}`} runId={runId} token={token} />
        ) : (
          <EmptyRunCard testId="approval-empty" title="No draft yet.">
            Start one: the task drafts, then waits for your decision.
          </EmptyRunCard>
        )}
      </div>
      <Code title="What this page does">{`
# examples/demo/tasks.py
approval = streams.input("approval")

@task(id="draft-approval")
async def draft_approval(payload):
    await metadata.set("draft", draft)
    decision = await approval.wait(timeout="5m")   # WAITING; the worker slot is free meanwhile
    return {"approved": decision.get("approved") is True, "text": draft}

// ApprovalPage.tsx
import { defineInputStream, useInputStreamSend } from "@realtime-bridge/react-hooks";

const approval = defineInputStream<{ approved: boolean }>("approval");
const { send, isLoading, isReady, error } = useInputStreamSend(approval, runId, { accessToken: publicAccessToken });
send({ approved: true });
`}</Code>
    </div>
  );
}
