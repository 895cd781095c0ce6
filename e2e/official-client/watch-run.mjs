// Watch a run someone else triggered with the official useRealtimeRun hook (browser, a public
// access token) until onComplete fires: what a page does with the token a backend handed it.
//
//   BRIDGE_URL=http://127.0.0.1:8000/realtime node watch-run.mjs RUN_ID TOKEN
import { arg, armTimeout, config, createRunWatch, fail, loadBrowser, sleep, succeed } from "./lib/harness.mjs";

const runId = arg(0, "RUN_ID");
const token = arg(1, "TOKEN");
const watch = createRunWatch();
armTimeout(() => watch.report());

const { React, hooks, render, unmount } = await loadBrowser();

function Watch() {
  const { run, error } = hooks.useRealtimeRun(runId, {
    accessToken: token,
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
  fail(error, watch.report());
}
unmount();
succeed(watch.report());
