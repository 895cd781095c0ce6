import { useRealtimeRun } from "@realtime-bridge/react-hooks";
import { useState } from "react";
import { triggerBatch, type StartedRun } from "../api";
import { Code } from "../components/Code";
import { ErrorCallout } from "../components/Placeholders";
import { ProgressBar } from "../components/ProgressBar";
import { StatusBadge } from "../components/StatusBadge";
import { demoPayloads, progressOf, stepOf, type DraftEmail } from "../runs";
import { useSocketStats } from "../socketMonitor";
import { useAction } from "../components/useAction";

/** One component, one hook, one token: nothing is shared between the cards but the socket. */
function HookCard({ index, started }: { index: number; started: StartedRun }) {
  const { run, error } = useRealtimeRun<DraftEmail>(started.runId, { accessToken: started.publicAccessToken });
  return (
    <article className="card hook-card" data-testid="hook-card" data-run-id={started.runId} title={started.runId}>
      <header>
        <span className="hook-index">#{index + 1}</span>
        {run ? <StatusBadge status={run.status} /> : <span className="muted small">subscribing…</span>}
      </header>
      <div className="hook-to">{run?.payload?.to ?? " "}</div>
      <ProgressBar value={progressOf(run)} status={run?.status ?? "QUEUED"} size="small" />
      <div className="small muted hook-step">
        {error ? error.message : run?.status === "COMPLETED" ? "drafted" : (stepOf(run) ?? "waiting for a worker")}
      </div>
    </article>
  );
}

export function TenHooksPage() {
  const [runs, setRuns] = useState<StartedRun[]>([]);
  const { busy, failure, run } = useAction();
  const sockets = useSocketStats();

  async function start() {
    await run(async () => {
      setRuns((await triggerBatch("draft-email", demoPayloads(10))).runs);
    });
  }

  return (
    <div className="page">
      <section className="intro intro-row">
        <div>
          <h1>Ten hooks, one WebSocket</h1>
          <p>
            Ten components, each with its own <code>useRealtimeRun</code> and its own token. The official hooks open
            one HTTP connection per hook, and a browser allows about six per origin; these share one WebSocket.
          </p>
        </div>
        <div className="actions">
          <button
            type="button"
            className="button button-primary"
            onClick={() => void start()}
            disabled={busy}
            data-testid="start-ten"
          >
            {runs.length ? "Start ten more" : "Start ten runs"}
          </button>
        </div>
      </section>

      <div className="stats">
        <div className="stat">
          <span className="stat-value">{runs.length}</span>
          <span className="stat-label">hooks</span>
        </div>
        <div className="stat stat-executing">
          <span className="stat-value" data-testid="sockets-open">
            {sockets.open}
          </span>
          <span className="stat-label">WebSockets open</span>
        </div>
        <div className="stat">
          <span className="stat-value" data-testid="sockets-opened">
            {sockets.opened}
          </span>
          <span className="stat-label">opened since the tab loaded</span>
        </div>
      </div>

      <ErrorCallout message={failure} testId="trigger-error" />

      {runs.length ? (
        <div className="hook-grid">
          {runs.map((started, index) => (
            <HookCard key={started.runId} index={index} started={started} />
          ))}
        </div>
      ) : (
        <section className="card">
          <div className="placeholder">
            <strong>No runs yet.</strong>
            <span>Start ten runs: each card subscribes on its own.</span>
          </div>
        </section>
      )}

      <Code title="What this page does">{`
{runs.map(({ runId, publicAccessToken }) => <HookCard runId={runId} token={publicAccessToken} />)}

function HookCard({ runId, token }) {
  const { run } = useRealtimeRun(runId, { accessToken: token }); // ten hooks, one socket
}
`}</Code>
    </div>
  );
}
