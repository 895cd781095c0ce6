import type { ComponentType, ReactNode } from "react";
import type { ReviewAccess } from "../api";
import type { ReviewRunState } from "../review";
import { ErrorCallout } from "./Placeholders";

/**
 * Where a review run's card shows its reviewer: `Reviewer` once the demo's backend granted review
 * access; before that, while the run goes on, a spinner and `pending`. Then the access error, if any.
 * Test ids: `${testIdPrefix}-access-pending`, `${testIdPrefix}-access-error`.
 */
export function ReviewerSlot({
  review: { access, accessError, finished },
  Reviewer,
  pending,
  testIdPrefix,
}: {
  review: ReviewRunState;
  Reviewer: ComponentType<{ access: ReviewAccess; runFinished: boolean }>;
  pending: ReactNode;
  testIdPrefix: string;
}) {
  return (
    <>
      {access ? (
        <Reviewer key={access.tokenId} access={access} runFinished={finished} />
      ) : (
        !finished && (
          <div className="placeholder" data-testid={`${testIdPrefix}-access-pending`}>
            <span className="spinner" aria-hidden="true" />
            {pending}
          </div>
        )
      )}
      <ErrorCallout message={accessError} testId={`${testIdPrefix}-access-error`} />
    </>
  );
}
