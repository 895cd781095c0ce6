import type { ReactNode } from "react";

/** An error callout, shown only when there is a message. */
export function ErrorCallout({ message, testId }: { message: string | undefined; testId: string }) {
  if (!message) return null;
  return (
    <div className="callout callout-error" data-testid={testId}>
      {message}
    </div>
  );
}

/** The card shown in place of a run before there is one. */
export function EmptyRunCard({ testId, title, children }: { testId: string; title: string; children: ReactNode }) {
  return (
    <section className="card run-card empty" data-testid={testId}>
      <div className="placeholder">
        <strong>{title}</strong>
        <span>{children}</span>
      </div>
    </section>
  );
}
