// Shared plumbing for the official-client scripts: config from env, a hard timeout,
// one JSON line on stdout, a log of every HTTP request the official packages make,
// and a jsdom "browser" to render the official React hooks in plain Node.
//
// Import this module FIRST in every script: it moves console.log to stderr so that
// stdout carries nothing but the single result line.

import { writeSync } from "node:fs";

for (const name of ["log", "info", "debug"]) {
  console[name] = (...args) => console.error(...args);
}

const startedAt = Date.now();
let finished = false;

/** Partial results that are printed even when the script fails or times out. */
export const state = { requests: [], uncaught: [] };

// The official packages sometimes throw from timers/microtasks (e.g. a failing subscriber);
// record those instead of crashing, so the result line still gets printed.
for (const event of ["uncaughtException", "unhandledRejection"]) {
  process.on(event, (error) => {
    state.uncaught.push({ event, ...describeError(error) });
  });
}

export function elapsedMs() {
  return Date.now() - startedAt;
}

// Writes the result line synchronously and exits: succeed() and fail() never return.
function emit(obj, code) {
  if (!finished) {
    finished = true;
    let line;
    try {
      line = JSON.stringify(obj);
    } catch (e) {
      line = JSON.stringify({ ok: false, error: { message: `unserialisable result: ${e.message}` } });
      code = code || 1;
    }
    writeSync(1, line + "\n");
  }
  process.exit(code);
}

/** Print `{ok: true, ...result}` and exit 0. */
export function succeed(result) {
  emit({ ok: true, ...result, uncaught: state.uncaught, requests: state.requests, elapsedMs: elapsedMs() }, 0);
}

/** Print `{ok: false, error, ...partial}` and exit with `code` (1 = failure, 2 = timeout, 3 = usage). */
export function fail(error, partial = {}, code = 1) {
  emit(
    {
      ok: false,
      error: describeError(error),
      ...partial,
      uncaught: state.uncaught,
      requests: state.requests,
      elapsedMs: elapsedMs(),
    },
    code
  );
}

export function describeError(error) {
  if (error === undefined || error === null) return null;
  if (typeof error === "string") return { message: error };
  const out = { name: error.name, message: error.message ?? String(error) };
  if (error.status !== undefined) out.status = error.status;
  if (error.code !== undefined) out.code = error.code;
  // ApiError (zodfetch) keeps the parsed response body in .body; electric's FetchError in .json.
  const body = error.body ?? error.json ?? error.error ?? error.text;
  if (body !== undefined) out.body = body;
  if (error.cause?.message) out.cause = error.cause.message;
  return out;
}

/** Required env var or usage error. */
export function requireEnv(name) {
  const value = process.env[name];
  if (!value) fail(`missing environment variable ${name}`, {}, 3);
  return value;
}

/** Positional argument `index` (0 = first after the script) or usage error. */
export function arg(index, name, fallback) {
  const value = process.argv[2 + index];
  if (value === undefined || value === "") {
    if (fallback !== undefined) return fallback;
    fail(`missing argument ${name}`, {}, 3);
  }
  return value;
}

export function parseJsonArg(text, name) {
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`argument ${name} is not valid JSON: ${e.message}`, {}, 3);
  }
}

export const config = {
  baseURL: (process.env.BRIDGE_URL ?? "").replace(/\/$/, ""),
  secretKey: process.env.BRIDGE_SECRET_KEY,
  timeoutMs: Number(process.env.HARNESS_TIMEOUT_MS ?? 30_000),
  // How long to keep watching after completion (catches a second onComplete or
  // a feed that keeps polling after the run finished).
  graceMs: Number(process.env.HARNESS_GRACE_MS ?? 1_500),
};

/** Arm the hard overall timeout; `partial()` supplies what to print with the timeout error. */
export function armTimeout(partial = () => ({})) {
  if (!config.baseURL) fail("missing environment variable BRIDGE_URL", {}, 3);
  // Not unref'd: it also keeps the process alive until a script calls succeed()/fail().
  setTimeout(() => {
    let extra = {};
    try {
      extra = partial();
    } catch {}
    fail(`timeout after ${config.timeoutMs} ms`, extra, 2);
  }, config.timeoutMs);
}

// Record every request the official packages send (they all call the global fetch at call time).
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(typeof input === "string" ? input : input.url ?? String(input));
  const entry = {
    t: elapsedMs(),
    method: (init?.method ?? input?.method ?? "GET").toUpperCase(),
    path: url.pathname + url.search,
  };
  state.requests.push(entry);
  try {
    const response = await realFetch(input, init);
    entry.status = response.status;
    entry.ms = elapsedMs() - entry.t;
    return response;
  } catch (error) {
    entry.error = error?.name === "AbortError" ? "aborted" : String(error?.message ?? error);
    throw error;
  }
};

/** Decode (without verifying) the claims of a JWT, for reporting. */
export function jwtClaims(token) {
  try {
    const part = token.split(".")[1];
    return JSON.parse(Buffer.from(part.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"));
  } catch {
    return null;
  }
}

/**
 * Turn this Node process into a minimal browser (jsdom window/document), then load React,
 * react-dom and the official hooks. Must run before anything imports react-dom or swr, which
 * detect the DOM when they are first imported.
 */
export async function loadBrowser() {
  const { JSDOM } = await import("jsdom");
  const dom = new JSDOM("<!doctype html><html><body><div id=root></div></body></html>", {
    url: "http://localhost/",
    pretendToBeVisual: true,
  });
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  if (typeof globalThis.navigator === "undefined") {
    Object.defineProperty(globalThis, "navigator", { value: dom.window.navigator, configurable: true });
  }
  const React = await import("react");
  const { createRoot } = await import("react-dom/client");
  const hooks = await import("@trigger.dev/react-hooks");
  const root = createRoot(document.getElementById("root"));
  return {
    React,
    hooks,
    render: (element) => root.render(element),
    unmount: () => root.unmount(),
  };
}

/** The fields of a hook run object that the tests look at (Dates become ISO strings). */
export function summarizeRun(run) {
  if (!run) return null;
  const iso = (d) => (d instanceof Date ? (isNaN(d) ? "Invalid Date" : d.toISOString()) : d ?? null);
  return {
    id: run.id,
    taskIdentifier: run.taskIdentifier,
    status: run.status,
    payload: run.payload ?? null,
    output: run.output ?? null,
    metadata: run.metadata ?? null,
    error: run.error ?? null,
    tags: run.tags ?? [],
    isQueued: run.isQueued,
    isExecuting: run.isExecuting,
    isWaiting: run.isWaiting,
    isCompleted: run.isCompleted,
    isSuccess: run.isSuccess,
    isFailed: run.isFailed,
    isCancelled: run.isCancelled,
    createdAt: iso(run.createdAt),
    updatedAt: iso(run.updatedAt),
    startedAt: iso(run.startedAt),
    finishedAt: iso(run.finishedAt),
    durationMs: run.durationMs,
    realtimeStreams: run.realtimeStreams,
  };
}

/**
 * Watch state for one run rendered by a realtime hook: distinct statuses in order,
 * the latest run object, onComplete calls, and feed requests made after completion.
 */
// The path BRIDGE_URL adds in front of every route: "" at a server's root, "/realtime" under a mount.
const basePath = config.baseURL ? new URL(config.baseURL).pathname.replace(/\/$/, "") : "";

export function createRunWatch() {
  let settle;
  const watch = {
    statuses: [],
    updates: 0,
    run: null,
    onCompleteCount: 0,
    onCompleteAtMs: null,
    hookError: null,
    /** Resolves on the first onComplete, rejects on the first error the hook reports. */
    done: new Promise((resolve, reject) => (settle = { resolve, reject })),
  };
  watch.setError = (error) => {
    if (!error) return;
    watch.hookError = describeError(error);
    settle.reject(error);
  };
  watch.observe = (run) => {
    if (!run) return;
    watch.updates += 1;
    watch.run = run;
    if (watch.statuses[watch.statuses.length - 1] !== run.status) watch.statuses.push(run.status);
  };
  watch.onComplete = (run, error) => {
    watch.onCompleteCount += 1;
    watch.run = run ?? watch.run;
    if (error) watch.hookError = describeError(error);
    if (watch.onCompleteAtMs === null) watch.onCompleteAtMs = elapsedMs();
    settle.resolve(run);
  };
  watch.report = () => ({
    statuses: watch.statuses,
    updates: watch.updates,
    onCompleteCount: watch.onCompleteCount,
    hookError: watch.hookError,
    run: summarizeRun(watch.run),
    onCompleteAtMs: watch.onCompleteAtMs,
    // Run-feed requests started after onComplete that the client did not abort: 0 when the
    // subscription stops on completion (a feed that keeps polling shows up here).
    feedRequestsAfterComplete:
      watch.onCompleteAtMs === null
        ? null
        : state.requests.filter(
            (r) =>
              r.path.startsWith(`${basePath}/realtime/v1/runs`) &&
              r.t >= watch.onCompleteAtMs &&
              r.error !== "aborted"
          ).length,
  });
  return watch;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
