import { StatusBadge } from "./StatusBadge";

/**
 * The head of a run card: `eyebrow`, the run's metadata.step under it ("…" until there is one;
 * `showStep={false}` leaves it out) and its status badge once there is a run. Test ids:
 * `${testIdPrefix}-step`, `${testIdPrefix}-status`.
 */
export function RunCardHead({
  eyebrow,
  testIdPrefix,
  status,
  step,
  showStep = true,
}: {
  eyebrow: string;
  testIdPrefix: string;
  status: string | undefined;
  step?: string;
  showStep?: boolean;
}) {
  return (
    <header className="run-head">
      <div>
        <div className="eyebrow">{eyebrow}</div>
        {showStep && (
          <div className="muted" data-testid={`${testIdPrefix}-step`}>
            {step ?? "…"}
          </div>
        )}
      </div>
      {status !== undefined && <StatusBadge status={status} testId={`${testIdPrefix}-status`} />}
    </header>
  );
}
