// Subscribe with the official useRealtimeRunsWithTag hook and collect runs until at least
// N of them are finished (finishedAt set), then print them.
//
//   BRIDGE_URL=... node tag-feed.mjs TAG TOKEN N [CREATED_AT]
//
// TAG may be "a,b" for several tags (runs must carry all). CREATED_AT is the hook's
// createdAt option, e.g. "1h". The feed never closes by itself; this script unmounts.
import {
  arg,
  armTimeout,
  config,
  describeError,
  fail,
  loadBrowser,
  succeed,
  summarizeRun,
} from "./lib/harness.mjs";

const tagArg = arg(0, "TAG");
const tags = tagArg.includes(",") ? tagArg.split(",") : tagArg;
const token = arg(1, "TOKEN");
const wanted = Number(arg(2, "N"));
const createdAt = arg(3, "CREATED_AT", "") || undefined;

let latest = [];
let snapshots = 0;
const report = () => ({
  snapshots,
  runs: latest.map(summarizeRun),
  finished: latest.filter((r) => r.finishedAt).length,
});
armTimeout(report);

const { React, hooks, render, unmount } = await loadBrowser();

await new Promise((resolve, reject) => {
  function Feed() {
    const { runs, error } = hooks.useRealtimeRunsWithTag(tags, {
      accessToken: token,
      baseURL: config.baseURL,
      createdAt,
    });
    React.useEffect(() => {
      if (error) return reject(error);
      latest = runs;
      snapshots += 1;
      if (runs.filter((r) => r.finishedAt).length >= wanted) resolve();
    }, [runs, error]);
    return null;
  }
  render(React.createElement(Feed));
}).catch((error) => fail(error, { hookError: describeError(error), ...report() }));

unmount();
succeed(report());
