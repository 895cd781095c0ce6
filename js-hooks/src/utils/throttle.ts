/**
 * Calls `flush` at most once per `intervalMs`: at once when the last call is older than the
 * interval (the leading edge, like the official hooks' throttled queue), else at the end of it.
 * `intervalMs <= 0` flushes on every `schedule()`.
 */
export type Throttle = {
  schedule(): void;
  /** Flushes now if a flush is pending. */
  flushNow(): void;
  cancel(): void;
};

export function createThrottle(flush: () => void, intervalMs: () => number): Throttle {
  let last = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending = false;
  const run = () => {
    timer = undefined;
    pending = false;
    last = Date.now();
    flush();
  };
  return {
    schedule() {
      pending = true;
      if (timer !== undefined) return;
      const interval = intervalMs();
      const wait = interval > 0 ? last + interval - Date.now() : 0;
      if (wait <= 0) run();
      else timer = setTimeout(run, wait);
    },
    flushNow() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (pending) run();
    },
    cancel() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      pending = false;
    },
  };
}
