import { useEffect, useRef, useState } from "react";
import {
  elapsedOf,
  formatDuration,
  formatTime,
  isFinal,
  progressOf,
  stepOf,
  type RunLike,
} from "../runs";
import { ProgressBar } from "./ProgressBar";
import { StatusBadge } from "./StatusBadge";
import { useNow } from "./useNow";

type LogEntry = { at: Date; status: string; progress: number; step?: string; attempt?: number };

/** "attempt 2" for a retried run; nothing for its first attempt. */
function attemptLabel(attempt: number | undefined): string | undefined {
  return attempt !== undefined && attempt > 1 ? `attempt ${attempt}` : undefined;
}

/** Every distinct (status, progress, step, attempt) the page received, newest last. */
function useUpdateLog(run: RunLike | undefined): LogEntry[] {
  const [log, setLog] = useState<LogEntry[]>([]);
  const last = useRef<string>("");
  const status = run?.status;
  const progress = progressOf(run);
  const step = stepOf(run);
  const attempt = run?.attemptNumber;
  useEffect(() => {
    if (!status) return;
    const key = `${status}|${progress}|${step ?? ""}|${attempt ?? ""}`;
    if (key === last.current) return;
    last.current = key;
    setLog((entries) => [...entries, { at: new Date(), status, progress, step, attempt }].slice(-12));
  }, [status, progress, step, attempt]);
  return log;
}

function Output({ run }: { run: RunLike }) {
  const output = run.output as Record<string, unknown> | undefined;
  if (output && typeof output.subject === "string" && typeof output.body === "string") {
    return (
      <div className="email" data-testid="run-output">
        <div className="email-head">
          <span className="email-label">To</span>
          <span>{String(output.to ?? "")}</span>
          <span className="email-label">Subject</span>
          <span className="email-subject">{output.subject}</span>
        </div>
        <p className="email-body">{output.body}</p>
      </div>
    );
  }
  return (
    <pre className="json" data-testid="run-output">
      {JSON.stringify(run.output ?? null, null, 2)}
    </pre>
  );
}

export function RunDetails({
  run,
  error,
  completions,
  onCancel,
}: {
  run: RunLike | undefined;
  error?: Error;
  completions: number;
  onCancel?: () => void;
}) {
  const log = useUpdateLog(run);
  const running = !!run && !isFinal(run.status);
  const now = useNow(running);
  if (!run) {
    return (
      <section className="card run-card" data-testid="run-card">
        {error ? (
          <div className="callout callout-error" data-testid="run-error">
            {error.message}
          </div>
        ) : (
          <div className="placeholder">
            <span className="spinner" aria-hidden="true" /> Subscribing…
          </div>
        )}
      </section>
    );
  }
  const elapsed = elapsedOf(run, now);
  const step = stepOf(run);
  const attempt = attemptLabel(run.attemptNumber);
  return (
    <section className="card run-card" data-testid="run-card" data-run-id={run.id}>
      <header className="run-head">
        <div>
          <div className="eyebrow">{run.taskIdentifier}</div>
          <div className="mono run-id" data-testid="run-id">
            {run.id}
          </div>
          {attempt && (
            <div className="muted" data-testid="run-attempt">
              {attempt}
            </div>
          )}
        </div>
        <StatusBadge status={run.status} />
      </header>

      <ProgressBar value={progressOf(run)} status={run.status} />

      <dl className="facts">
        <div>
          <dt>{running ? "Current step" : "Last step"}</dt>
          <dd data-testid="run-step">{step ?? "—"}</dd>
        </div>
        <div>
          <dt>{run.finishedAt ? "Took" : "Running for"}</dt>
          <dd>{elapsed === undefined ? "—" : formatDuration(elapsed)}</dd>
        </div>
        <div>
          <dt>onComplete calls</dt>
          <dd data-testid="oncomplete-count">{completions}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatTime(run.createdAt)}</dd>
        </div>
      </dl>

      {error && (
        <div className="callout callout-error" data-testid="run-error">
          {error.message}
        </div>
      )}
      {run.status === "COMPLETED" && <Output run={run} />}
      {run.error && (
        <div className="callout callout-error" data-testid="run-failure">
          <strong>{run.error.name ?? "Error"}:</strong> {run.error.message}
        </div>
      )}

      <div className="run-foot">
        <ol className="log" aria-label="Updates received" data-testid="run-log">
          {log.map((entry, index) => (
            <li key={index}>
              <span className="log-time">{formatTime(entry.at)}</span>
              <span className={`log-status text-${entry.status.toLowerCase()}`}>{entry.status}</span>
              <span className="log-detail">
                {[`${Math.round(entry.progress * 100)}%`, entry.step, attemptLabel(entry.attempt)]
                  .filter(Boolean)
                  .join(" · ")}
              </span>
            </li>
          ))}
        </ol>
        {running && onCancel && (
          <button type="button" className="button button-quiet" onClick={onCancel}>
            Cancel run
          </button>
        )}
      </div>
    </section>
  );
}
