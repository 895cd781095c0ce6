// Fetch one run with the official useRun hook (GET /api/v3/runs/{id}, validated by the
// official zod schema) and print it.
//
//   BRIDGE_URL=... node use-run.mjs RUN_ID [TOKEN]
//
// TOKEN defaults to BRIDGE_SECRET_KEY. Exits 1 if the hook reports an error (e.g. 401,
// 404, or a response that fails the schema: error.name "ApiSchemaValidationError").
import { arg, armTimeout, config, fail, loadBrowser, succeed } from "./lib/harness.mjs";

const runId = arg(0, "RUN_ID");
const token = arg(1, "TOKEN", process.env.BRIDGE_SECRET_KEY ?? "");
if (!token) fail("missing argument TOKEN (or BRIDGE_SECRET_KEY)", {}, 3);
armTimeout();

const { React, hooks, render, unmount } = await loadBrowser();

const result = await new Promise((resolve, reject) => {
  function Fetch() {
    const { run, error } = hooks.useRun(runId, { accessToken: token, baseURL: config.baseURL });
    React.useEffect(() => {
      if (error) reject(error);
      else if (run) resolve(run);
    }, [run, error]);
    return null;
  }
  render(React.createElement(Fetch));
}).catch((error) => fail(error));

unmount();
// Dates become ISO strings; every other field is printed as the zod schema returned it.
succeed({ run: JSON.parse(JSON.stringify(result)) });
