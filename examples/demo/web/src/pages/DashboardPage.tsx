import { useRealtimeRunsWithTag } from "@realtime-bridge/react-hooks";
import { useEffect, useMemo, useState } from "react";
import { tagsToken, triggerBatch, triggerRun } from "../api";
import { Code } from "../components/Code";
import { ErrorCallout } from "../components/Placeholders";
import { ProgressBar } from "../components/ProgressBar";
import { StatusBadge } from "../components/StatusBadge";
import { useNow } from "../components/useNow";
import { useAction } from "../components/useAction";
import {
  demoPayloads,
  elapsedOf,
  formatDuration,
  formatTime,
  isFinal,
  progressOf,
  shortId,
  stepOf,
  type DraftEmail,
  type RunLike,
} from "../runs";

const SUMMARY = ["QUEUED", "EXECUTING", "COMPLETED", "FAILED"] as const;

function RunsTable({ tag, token }: { tag: string; token: string }) {
  const { runs, error } = useRealtimeRunsWithTag<DraftEmail>(tag, { accessToken: token, createdAt: "1d" });
  const newestFirst = useMemo(() => [...runs].reverse(), [runs]);
  const now = useNow(runs.some((run) => !isFinal(run.status)), 500);
  const counts = useMemo(() => {
    const byStatus: Record<string, number> = {};
    for (const run of runs) byStatus[run.status] = (byStatus[run.status] ?? 0) + 1;
    return byStatus;
  }, [runs]);

  return (
    <>
      <div className="stats" data-testid="dashboard-stats">
        <div className="stat">
          <span className="stat-value" data-testid="run-count">
            {runs.length}
          </span>
          <span className="stat-label">runs</span>
        </div>
        {SUMMARY.map((status) => (
          <div className={`stat stat-${status.toLowerCase()}`} key={status}>
            <span className="stat-value" data-testid={`count-${status.toLowerCase()}`}>
              {counts[status] ?? 0}
            </span>
            <span className="stat-label">{status.toLowerCase()}</span>
          </div>
        ))}
      </div>

      {error && (
        <div className="callout callout-error" data-testid="dashboard-error">
          {error.message}
        </div>
      )}

      <section className="card table-card">
        <table className="runs">
          <thead>
            <tr>
              <th>Run</th>
              <th>Task</th>
              <th>Status</th>
              <th className="col-progress">Progress</th>
              <th>Step</th>
              <th>Created</th>
              <th className="num">Duration</th>
            </tr>
          </thead>
          <tbody>
            {newestFirst.map((run) => (
              <Row key={run.id} run={run} now={now} />
            ))}
          </tbody>
        </table>
        {runs.length === 0 && (
          <div className="placeholder table-empty" data-testid="dashboard-empty">
            <strong>No runs with tag “{tag}” yet.</strong>
            <span>Trigger some: they appear here as they are created, from this page or any other.</span>
          </div>
        )}
      </section>
    </>
  );
}

function Row({ run, now }: { run: RunLike; now: number }) {
  const elapsed = elapsedOf(run, now);
  return (
    <tr data-testid="dashboard-row" data-run-id={run.id} data-status={run.status}>
      <td className="mono" title={run.id}>
        {shortId(run.id)}
      </td>
      <td>{run.taskIdentifier}</td>
      <td>
        <StatusBadge status={run.status} testId="row-status" />
      </td>
      <td className="col-progress">
        <ProgressBar value={progressOf(run)} status={run.status} size="small" testId="row-progress" />
      </td>
      <td className="muted step" title={run.error?.message}>
        {run.error ? run.error.message : (stepOf(run) ?? "—")}
      </td>
      <td className="muted">{formatTime(run.createdAt)}</td>
      <td className="num muted">{elapsed === undefined ? "—" : formatDuration(elapsed)}</td>
    </tr>
  );
}

export function DashboardPage({ tag }: { tag: string }) {
  const [token, setToken] = useState<string>();
  const { busy, failure, setFailure, run } = useAction();
  // Runs triggered here carry the dashboard's tag (and "demo", which every demo run has).
  const tags = tag === "demo" ? ["demo"] : ["demo", tag];

  useEffect(() => {
    let current = true;
    setToken(undefined);
    tagsToken(tag).then(
      (value) => current && setToken(value),
      (error: Error) => current && setFailure(error.message),
    );
    return () => {
      current = false;
    };
  }, [tag]);

  return (
    <div className="page">
      <section className="intro intro-row">
        <div>
          <h1>
            Runs tagged <span className="tag">{tag}</span>
          </h1>
          <p>
            Every run with this tag from the last day, live, with <code>useRealtimeRunsWithTag</code>. Open the
            page twice: runs triggered in one window show up in the other.
          </p>
        </div>
        <div className="actions">
          <button
            type="button"
            className="button button-primary"
            disabled={busy}
            onClick={() => void run(() => triggerBatch("draft-email", demoPayloads(5), tags))}
            data-testid="trigger-five"
          >
            Trigger 5 runs
          </button>
          <button
            type="button"
            className="button"
            disabled={busy}
            onClick={() => void run(() => triggerRun("always-fails", {}, tags))}
            data-testid="trigger-failing"
          >
            Trigger a failing run
          </button>
        </div>
      </section>

      <ErrorCallout message={failure} testId="trigger-error" />
      {token ? (
        <RunsTable tag={tag} token={token} />
      ) : (
        <section className="card">
          <div className="placeholder">
            <span className="spinner" aria-hidden="true" /> Getting a token…
          </div>
        </section>
      )}

      <Code title="What this page does">{`
import { useRealtimeRunsWithTag } from "@realtime-bridge/react-hooks";

// token: GET /demo/api/tokens/tags?tag=${tag}  →  auth.create_public_token(scopes={"read": {"tags": ["${tag}"]}})
const { runs, error } = useRealtimeRunsWithTag<DraftEmail>("${tag}", { accessToken: token, createdAt: "1d" });
`}</Code>
    </div>
  );
}
