// Trigger a run with the official SDK (backend, secret key), then watch it with the official
// useRealtimeRun hook (browser, the run's public access token) until onComplete fires.
//
//   BRIDGE_URL=http://127.0.0.1:8000 BRIDGE_SECRET_KEY=tr_dev_... \
//     node trigger-and-watch.mjs TASK_ID PAYLOAD_JSON [TRIGGER_OPTIONS_JSON]
//
// TRIGGER_OPTIONS_JSON is passed to tasks.trigger as its options, e.g. '{"tags":["t1"]}'.
import {
  arg,
  armTimeout,
  config,
  createRunWatch,
  fail,
  jwtClaims,
  loadBrowser,
  parseJsonArg,
  requireEnv,
  sleep,
  succeed,
} from "./lib/harness.mjs";

const taskId = arg(0, "TASK_ID");
const payload = parseJsonArg(arg(1, "PAYLOAD_JSON"), "PAYLOAD_JSON");
const triggerOptions = parseJsonArg(arg(2, "TRIGGER_OPTIONS_JSON", "{}"), "TRIGGER_OPTIONS_JSON");
const secretKey = requireEnv("BRIDGE_SECRET_KEY");

const watch = createRunWatch();
let handle = null;
const handleReport = () =>
  handle && {
    id: handle.id,
    publicAccessToken: handle.publicAccessToken,
    publicAccessTokenClaims: jwtClaims(handle.publicAccessToken),
  };
armTimeout(() => ({ handle: handleReport(), ...watch.report() }));

// 1. Backend: the SDK configured like a user's server. Runs before jsdom exists, so the
//    request carries no browser headers.
const { configure, tasks } = await import("@trigger.dev/sdk");
configure({ baseURL: config.baseURL, secretKey });
try {
  handle = await tasks.trigger(taskId, payload, triggerOptions);
} catch (error) {
  fail(error, { stage: "trigger" });
}

// 2. Browser: the official hook, authenticated with the token the trigger returned.
const { React, hooks, render, unmount } = await loadBrowser();

function Watch() {
  const { run, error } = hooks.useRealtimeRun(handle.id, {
    accessToken: handle.publicAccessToken,
    baseURL: config.baseURL,
    onComplete: watch.onComplete,
  });
  React.useEffect(() => watch.observe(run), [run]);
  React.useEffect(() => watch.setError(error), [error]);
  return null;
}

render(React.createElement(Watch));
try {
  await watch.done;
  await sleep(config.graceMs);
} catch (error) {
  fail(error, { stage: "watch", handle: handleReport(), ...watch.report() });
}
unmount();
succeed({ handle: handleReport(), ...watch.report() });
