import type { RunTypes } from "@realtime-bridge/react-hooks";

/** What the demo shows of a run; both the bridge's hooks and the official hooks return this shape. */
export type RunLike = {
  id: string;
  taskIdentifier: string;
  status: string;
  metadata?: unknown;
  output?: unknown;
  error?: { message: string; name?: string };
  createdAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
  tags: string[];
  /** The retry policy's current attempt (the bridge's WebSocket feed sends it; the official feed does not). */
  attemptNumber?: number;
};

/** The demo tasks (examples/demo/tasks.py), typed for the hooks. */
export type DraftEmailPayload = { to?: string; stepSeconds?: number };
export type DraftEmailOutput = { to: string; subject: string; body: string };
export type DraftEmailMetadata = { progress?: number; step?: string };
export type DraftEmail = RunTypes<"draft-email", DraftEmailPayload, DraftEmailOutput, DraftEmailMetadata>;

export const FINAL_STATUSES = new Set(["COMPLETED", "FAILED", "CANCELED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"]);

export function isFinal(status: string | undefined): boolean {
  return status !== undefined && FINAL_STATUSES.has(status);
}

function meta(run: RunLike | undefined): Record<string, unknown> {
  const value = run?.metadata;
  return value && typeof value === "object" ? (value as Record<string, unknown>) : {};
}

/** metadata.progress (0..1), clamped; 1 once the run completed. */
export function progressOf(run: RunLike | undefined): number {
  if (run?.status === "COMPLETED") return 1;
  const value = meta(run).progress;
  return typeof value === "number" && Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0;
}

export function stepOf(run: RunLike | undefined): string | undefined {
  const value = meta(run).step;
  return typeof value === "string" ? value : undefined;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** How long the run took (or has been going), from its start. */
export function elapsedOf(run: RunLike, now: number): number | undefined {
  if (!run.startedAt) return undefined;
  const end = run.finishedAt ? run.finishedAt.getTime() : now;
  return end - run.startedAt.getTime();
}

export function formatTime(date: Date | undefined): string {
  return date ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

export function shortId(id: string): string {
  return id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}

/** A handful of recipients, so a batch of runs does not look like one run ten times. */
const PEOPLE = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "linus", "radia"];

export function demoPayloads(count: number): DraftEmailPayload[] {
  return Array.from({ length: count }, (_, i) => ({
    to: `${PEOPLE[i % PEOPLE.length]}@example.com`,
    stepSeconds: 0.25 + ((i * 7) % 5) * 0.1,
  }));
}
