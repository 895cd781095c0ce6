import { useEffect, useRef, useState, type ReactNode } from "react";
import { isFinal } from "../runs";
import { StatusBadge } from "./StatusBadge";

/** What the chat task (examples/demo/tasks.py, `chat`) takes and returns. */
export type ChatPayload = { prompt: string; tokenSeconds?: number; model?: "fake" };
/** `stopped`: the page's Stop button ended the reply early; `text` is what was generated until then. */
export type ChatOutput = { text: string; tokens: number; model: string; stopped?: boolean };
export type Chat = { taskIdentifier: "chat"; payload: ChatPayload; output: ChatOutput; metadata: { model?: string } };

/**
 * The number of parts at each render where it changed: shows (and lets the tests check) that the
 * reply arrived in pieces rather than all at once.
 */
function usePartsLog(count: number): number[] {
  const [log, setLog] = useState<number[]>([]);
  const last = useRef(-1);
  useEffect(() => {
    if (count === last.current) return;
    last.current = count;
    if (count > 0) setLog((entries) => [...entries, count]);
  }, [count]);
  return log;
}

type Props = {
  /** Prefix of the data-testid attributes: "chat" or "official-chat". */
  testId: string;
  prompt: string | undefined;
  parts: string[];
  status: string | undefined;
  output: ChatOutput | undefined;
  error: Error | undefined;
  hook: string;
  /** Controls shown under the reply (the Chat page's Stop button). */
  children?: ReactNode;
};

/** A prompt and its reply, rendered as the chunks of the run's "ai" stream arrive. */
export function ChatReply({ testId, prompt, parts, status, output, error, hook, children }: Props) {
  const text = parts.join("");
  const log = usePartsLog(parts.length);
  const streaming = !!status && !isFinal(status);
  return (
    <section className="card chat-card" data-testid={`${testId}-card`}>
      <header className="run-head">
        <div>
          <div className="eyebrow">Reply, via {hook}</div>
        </div>
        <div className="chat-badges">
          {output?.stopped && (
            <span className="badge badge-stopped" data-testid={`${testId}-stopped`}>
              stopped
            </span>
          )}
          {status && <StatusBadge status={status} testId={`${testId}-status`} />}
        </div>
      </header>
      {prompt !== undefined && (
        <div className="chat-bubble chat-user" data-testid={`${testId}-prompt-shown`}>
          {prompt}
        </div>
      )}
      <div
        className={`chat-bubble chat-assistant${streaming ? " streaming" : ""}`}
        data-testid={`${testId}-reply`}
        data-parts={parts.length}
        aria-live="polite"
      >
        {text}
        {streaming && <span className="chat-caret" aria-hidden="true" />}
        {!text && !streaming && !error && <span className="muted">Waiting for the first token…</span>}
      </div>
      {children}
      {error && (
        <div className="callout callout-error" data-testid={`${testId}-error`}>
          {error.message}
        </div>
      )}
      <dl className="facts chat-facts">
        <div>
          <dt>Chunks</dt>
          <dd data-testid={`${testId}-token-count`}>{parts.length}</dd>
        </div>
        <div>
          <dt>Renders with new text</dt>
          <dd data-testid={`${testId}-updates`} data-lengths={log.join(",")}>
            {log.length}
          </dd>
        </div>
        <div>
          <dt>Model</dt>
          <dd>{output?.model ?? "—"}</dd>
        </div>
      </dl>
      {output && (
        <details className="chat-output">
          <summary>The run's output</summary>
          <pre className="json" data-testid={`${testId}-output`}>
            {output.text}
          </pre>
        </details>
      )}
    </section>
  );
}
