// Trigger with the official SDK's options and a payload of a given size, read the run back with
// `runs.retrieve`, watch it with `useRealtimeRun` and, once the hook shows it DELAYED, optionally
// `runs.reschedule` it; then `runs.retrieve` it again.
//
//   BRIDGE_URL=... BRIDGE_SECRET_KEY=... \
//     node trigger-options.mjs TASK_ID BLOB_BYTES [TRIGGER_OPTIONS_JSON] [RESCHEDULE_DELAY]
//
// The payload is {"blob": "x" * BLOB_BYTES} (the SDK uploads one of 128 KiB or more as a packet first).
// Payloads and outputs are reported by size (`blobs`), not printed.
import {
  arg,
  armTimeout,
  config,
  createRunWatch,
  fail,
  loadBrowser,
  parseJsonArg,
  requireEnv,
  sleep,
  succeed,
} from "./lib/harness.mjs";

const taskId = arg(0, "TASK_ID");
const blobBytes = Number(arg(1, "BLOB_BYTES"));
const triggerOptions = parseJsonArg(arg(2, "TRIGGER_OPTIONS_JSON", "{}"), "TRIGGER_OPTIONS_JSON");
const rescheduleDelay = arg(3, "RESCHEDULE_DELAY", "");
const secretKey = requireEnv("BRIDGE_SECRET_KEY");

// The length of the blob a payload ({blob}) or an echo output ({echo: {blob}}) carries, or null.
const blobLength = (value) => (value?.blob ?? value?.echo?.blob)?.length ?? null;
const retrieved = (run) => ({
  status: run.status,
  delayedUntil: run.delayedUntil?.toISOString() ?? null,
  ttl: run.ttl ?? null,
  payloadPresigned: Boolean(run.payloadPresignedUrl),
  outputPresigned: Boolean(run.outputPresignedUrl),
  payloadBlob: blobLength(run.payload),
  outputBlob: blobLength(run.output),
});

const watch = createRunWatch();
const result = { handle: null, before: null, rescheduled: null, after: null, hookBlobs: null };
const report = () => {
  const { run, ...rest } = watch.report();
  const hookRun = watch.run && {
    ...run,
    payload: undefined,
    output: undefined,
    delayedUntil: watch.run.delayedUntil?.toISOString() ?? null,
    ttl: watch.run.ttl ?? null,
  };
  return { ...result, ...rest, run: hookRun };
};
armTimeout(report);

const { configure, runs, tasks } = await import("@trigger.dev/sdk");
configure({ baseURL: config.baseURL, secretKey });
try {
  const handle = await tasks.trigger(taskId, { blob: "x".repeat(blobBytes) }, triggerOptions);
  result.handle = { id: handle.id, publicAccessToken: handle.publicAccessToken };
  result.before = retrieved(await runs.retrieve(handle.id));
} catch (error) {
  fail(error, { stage: "trigger", ...report() });
}

const { React, hooks, render, unmount } = await loadBrowser();
let showDelayed;
const delayedShown = new Promise((resolve) => (showDelayed = resolve));

function Watch() {
  const { run, error } = hooks.useRealtimeRun(result.handle.id, {
    accessToken: result.handle.publicAccessToken,
    baseURL: config.baseURL,
    onComplete: watch.onComplete,
  });
  React.useEffect(() => {
    watch.observe(run);
    if (run?.status === "DELAYED") showDelayed();
    if (run) result.hookBlobs = { payload: blobLength(run.payload), output: blobLength(run.output) };
  }, [run]);
  React.useEffect(() => watch.setError(error), [error]);
  return null;
}

render(React.createElement(Watch));
try {
  if (rescheduleDelay) {
    await delayedShown;
    result.rescheduled = retrieved(await runs.reschedule(result.handle.id, { delay: rescheduleDelay }));
  }
  await watch.done;
  await sleep(config.graceMs);
  result.after = retrieved(await runs.retrieve(result.handle.id));
} catch (error) {
  fail(error, { stage: "watch", ...report() });
}
unmount();
succeed(report());
