const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
const DURATION = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/;

/** The tag feed's default window, as the server's. */
export const DEFAULT_TAG_WINDOW = "1d";

/**
 * Seconds in a duration written like the server reads it: "30s", "15m", "2h", "3d", "4w",
 * or a number of seconds. Returns undefined for anything else (the server will answer
 * `invalid_request`).
 */
export function parseDurationSeconds(value: string | number): number | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) && value >= 0 ? value : undefined;
  }
  const match = DURATION.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * UNITS[match[2]!]!;
}
