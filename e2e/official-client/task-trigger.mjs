// Trigger from the browser with the official useRealtimeTaskTrigger hook and a (one-time)
// trigger token, then watch the run to completion with the token the trigger returned.
//
//   BRIDGE_URL=... node task-trigger.mjs TASK_ID TRIGGER_TOKEN [PAYLOAD_JSON] [TRIGGER_OPTIONS_JSON]
//
// PAYLOAD_JSON defaults to {}. TRIGGER_OPTIONS_JSON is the hook's submit() options
// (tags, idempotencyKey, ttl, ...).
import {
  arg,
  armTimeout,
  config,
  createRunWatch,
  fail,
  jwtClaims,
  loadBrowser,
  parseJsonArg,
  sleep,
  succeed,
} from "./lib/harness.mjs";

const taskId = arg(0, "TASK_ID");
const triggerToken = arg(1, "TRIGGER_TOKEN");
const payload = parseJsonArg(arg(2, "PAYLOAD_JSON", "{}"), "PAYLOAD_JSON");
const submitOptions = parseJsonArg(arg(3, "TRIGGER_OPTIONS_JSON", "{}"), "TRIGGER_OPTIONS_JSON");

const watch = createRunWatch();
let handle = null;
const handleReport = () =>
  handle && {
    id: handle.id,
    publicAccessToken: handle.publicAccessToken,
    publicAccessTokenClaims: jwtClaims(handle.publicAccessToken),
  };
armTimeout(() => ({ handle: handleReport(), ...watch.report() }));

const { React, hooks, render, unmount } = await loadBrowser();

function TriggerAndWatch() {
  const { submit, handle: h, run, error } = hooks.useRealtimeTaskTrigger(taskId, {
    accessToken: triggerToken,
    baseURL: config.baseURL,
    onComplete: watch.onComplete,
  });
  const submitted = React.useRef(false);
  React.useEffect(() => {
    if (submitted.current) return;
    submitted.current = true;
    submit(payload, submitOptions);
  }, [submit]);
  React.useEffect(() => {
    if (h) handle = h;
  }, [h]);
  React.useEffect(() => watch.observe(run), [run]);
  React.useEffect(() => watch.setError(error), [error]);
  return null;
}

render(React.createElement(TriggerAndWatch));
try {
  await watch.done;
  await sleep(config.graceMs);
} catch (error) {
  fail(error, { stage: handle ? "watch" : "trigger", handle: handleReport(), ...watch.report() });
}
unmount();
succeed({ handle: handleReport(), ...watch.report() });
