import type { ReactNode } from "react";

/**
 * Approve and Reject (`${testIdPrefix}-approve`, `${testIdPrefix}-reject`), enabled while `canDecide`;
 * `onDecide(approved)` gets the choice. `reject={false}` shows Approve alone. `children` (another
 * button, a "Sending…" note) follow them in the same row.
 */
export function DecisionButtons({
  canDecide,
  onDecide,
  testIdPrefix,
  reject = true,
  children,
}: {
  canDecide: boolean;
  onDecide: (approved: boolean) => void;
  testIdPrefix: string;
  reject?: boolean;
  children?: ReactNode;
}) {
  return (
    <div className="actions">
      <button
        type="button"
        className="button button-primary"
        disabled={!canDecide}
        onClick={() => onDecide(true)}
        data-testid={`${testIdPrefix}-approve`}
      >
        Approve
      </button>
      {reject && (
        <button
          type="button"
          className="button"
          disabled={!canDecide}
          onClick={() => onDecide(false)}
          data-testid={`${testIdPrefix}-reject`}
        >
          Reject
        </button>
      )}
      {children}
    </div>
  );
}
