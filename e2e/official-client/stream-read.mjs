// Read one output stream of a run with the official core client (ApiClient.fetchStream: the
// SSE subscription useRealtimeStream uses) and print its chunks.
//
//   BRIDGE_URL=... node stream-read.mjs RUN_ID KEY [TOKEN] [START_INDEX] [TIMEOUT_SECONDS]
//
// TOKEN defaults to BRIDGE_SECRET_KEY. START_INDEX N is sent the way useRealtimeStream sends
// its `startIndex`: as Last-Event-ID N-1. The stream ends when the bridge ends the response
// (the run finished and every chunk was sent, or TIMEOUT_SECONDS without a chunk).
import { arg, armTimeout, config, fail, succeed } from "./lib/harness.mjs";
import { ApiClient } from "@trigger.dev/core/v3";

const runId = arg(0, "RUN_ID");
const key = arg(1, "KEY");
const token = arg(2, "TOKEN", process.env.BRIDGE_SECRET_KEY ?? "");
if (!token) fail("missing argument TOKEN (or BRIDGE_SECRET_KEY)", {}, 3);
const startIndex = Number(arg(3, "START_INDEX", "0"));
const timeoutInSeconds = Number(arg(4, "TIMEOUT_SECONDS", "60"));
if (!Number.isInteger(startIndex) || startIndex < 0) fail("START_INDEX must be a whole number >= 0", {}, 3);

const chunks = [];
const ids = [];
armTimeout(() => ({ chunks, ids }));

try {
  const client = new ApiClient(config.baseURL, token);
  const stream = await client.fetchStream(runId, key, {
    lastEventId: startIndex > 0 ? String(startIndex - 1) : undefined,
    timeoutInSeconds,
    onPart: (part) => ids.push(part.id),
  });
  for await (const chunk of stream) chunks.push(chunk);
} catch (error) {
  fail(error, { chunks, ids });
}
succeed({ chunks, ids });
