const LABELS: Record<string, string> = {
  QUEUED: "Queued",
  EXECUTING: "Executing",
  WAITING: "Waiting",
  COMPLETED: "Completed",
  FAILED: "Failed",
  CANCELED: "Canceled",
  CRASHED: "Crashed",
};

/** The run's status, coloured. The text is the status itself (what the tests read). */
export function StatusBadge({ status, testId = "run-status" }: { status: string; testId?: string }) {
  return (
    <span
      className={`badge badge-${status.toLowerCase()}`}
      data-testid={testId}
      data-status={status}
      title={LABELS[status] ?? status}
    >
      <span className="badge-dot" aria-hidden="true" />
      {status}
    </span>
  );
}
