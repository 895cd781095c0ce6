// Trigger a batch with the official SDK (backend, secret key: the two-phase v3 batch API),
// then follow it with the official runs.subscribeToBatch, authenticated with the batch's
// public access token, until every run of the batch has finishedAt.
//
//   BRIDGE_URL=... BRIDGE_SECRET_KEY=... node batch-trigger.mjs TASK_ID ITEMS_JSON
//
// ITEMS_JSON is tasks.batchTrigger's item list, e.g. '[{"payload":{"n":1}},{"payload":{"n":2},"options":{"tags":["t"]}}]'.
// The batch feed never closes by itself; this script stops iterating once all runs finished.
import {
  arg,
  armTimeout,
  config,
  fail,
  jwtClaims,
  parseJsonArg,
  requireEnv,
  succeed,
  summarizeRun,
} from "./lib/harness.mjs";

const taskId = arg(0, "TASK_ID");
const items = parseJsonArg(arg(1, "ITEMS_JSON"), "ITEMS_JSON");
const secretKey = requireEnv("BRIDGE_SECRET_KEY");

let handle = null;
let updates = 0;
const latest = new Map(); // run id -> latest run object the subscription gave
const finishedCount = () => [...latest.values()].filter((r) => r.finishedAt).length;
const report = () => ({
  handle: handle && {
    batchId: handle.batchId,
    runCount: handle.runCount,
    publicAccessToken: handle.publicAccessToken,
    publicAccessTokenClaims: jwtClaims(handle.publicAccessToken),
  },
  updates,
  runs: [...latest.values()].map(summarizeRun),
  finished: finishedCount(),
});
armTimeout(report);

const { auth, configure, runs, tasks } = await import("@trigger.dev/sdk");
configure({ baseURL: config.baseURL, secretKey });
try {
  handle = await tasks.batchTrigger(taskId, items);
} catch (error) {
  fail(error, { stage: "trigger" });
}

try {
  await auth.withAuth({ baseURL: config.baseURL, accessToken: handle.publicAccessToken }, async () => {
    for await (const run of runs.subscribeToBatch(handle.batchId)) {
      updates += 1;
      latest.set(run.id, run);
      if (finishedCount() >= handle.runCount) break;
    }
  });
} catch (error) {
  fail(error, { stage: "watch", ...report() });
}
succeed(report());
