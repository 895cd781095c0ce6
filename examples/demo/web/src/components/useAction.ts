import { useState } from "react";

/**
 * `busy` while an action runs, and the message of its last failure. `run(action)` clears the
 * failure, runs the action and records its error (if any).
 */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<string>();

  async function run(action: () => Promise<unknown>) {
    setBusy(true);
    setFailure(undefined);
    try {
      await action();
    } catch (error) {
      setFailure(error instanceof Error ? error.message : String(error));
    } finally {
      setBusy(false);
    }
  }

  return { busy, failure, setFailure, run };
}
