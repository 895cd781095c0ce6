/** A progress bar for metadata.progress (0..1). */
export function ProgressBar({
  value,
  status,
  size = "normal",
  testId = "run-progress",
}: {
  value: number;
  status: string;
  size?: "normal" | "small";
  testId?: string;
}) {
  const percent = Math.round(value * 100);
  return (
    <div className={`progress progress-${size}`}>
      <div
        className={`progress-track progress-${status.toLowerCase()}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        data-testid={testId}
      >
        <div className="progress-fill" style={{ width: `${percent}%` }} />
      </div>
      <span className="progress-label" data-testid={`${testId}-label`}>
        {percent}%
      </span>
    </div>
  );
}
