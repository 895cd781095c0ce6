// Send one value into a run's input stream with the official SDK:
// streams.input({id: STREAM_ID}).send(RUN_ID, DATA) (POST /realtime/v1/streams/{runId}/input/{streamId}).
//
//   BRIDGE_URL=... node input-send.mjs RUN_ID STREAM_ID DATA_JSON [TOKEN]
//
// TOKEN (e.g. a public token with write:inputStreams:<runId>) defaults to BRIDGE_SECRET_KEY.
// INPUT_SEND_MAX_ATTEMPTS (default 1) lets the SDK retry a 5xx, quickly: each attempt carries the
// same x-trigger-request-idempotency-key, so the bridge stores the value once.
import { arg, armTimeout, config, fail, parseJsonArg, succeed } from "./lib/harness.mjs";

const runId = arg(0, "RUN_ID");
const streamId = arg(1, "STREAM_ID");
const data = parseJsonArg(arg(2, "DATA_JSON"), "DATA_JSON");
const token = arg(3, "TOKEN", config.secretKey ?? "");
if (!token) fail("missing argument TOKEN (or BRIDGE_SECRET_KEY)", {}, 3);
const maxAttempts = Number(process.env.INPUT_SEND_MAX_ATTEMPTS ?? "1");
armTimeout();

const { configure, streams } = await import("@trigger.dev/sdk");
configure({ baseURL: config.baseURL, accessToken: token });
try {
  // No retries by default: a refused send must surface at once (the SDK retries 5xx by default).
  const retry = { maxAttempts, minTimeoutInMs: 50, maxTimeoutInMs: 200 };
  await streams.input({ id: streamId }).send(runId, data, { requestOptions: { retry } });
} catch (error) {
  fail(error);
}
succeed({ runId, streamId });
