// Wait tokens with the official SDK (`wait.*`, secret key) and the official `useWaitToken` hook.
//
//   BRIDGE_URL=... node wait-token.mjs create [OPTIONS_JSON]          wait.createToken(OPTIONS)
//   BRIDGE_URL=... node wait-token.mjs complete TOKEN_ID DATA_JSON     wait.completeToken(TOKEN_ID, DATA)
//   BRIDGE_URL=... node wait-token.mjs hook TOKEN_ID DATA_JSON TOKEN   useWaitToken(TOKEN_ID, {accessToken: TOKEN}).complete(DATA)
//   BRIDGE_URL=... node wait-token.mjs retrieve TOKEN_ID               wait.retrieveToken(TOKEN_ID)
//
// Prints what the SDK returned (dates as ISO strings; a retrieved token's error as {name, message}).
import { arg, armTimeout, config, fail, loadBrowser, parseJsonArg, succeed } from "./lib/harness.mjs";

const mode = arg(0, "MODE");
armTimeout();
const { configure, wait } = await import("@trigger.dev/sdk");
configure({ baseURL: config.baseURL, accessToken: config.secretKey });
const noRetry = { retry: { maxAttempts: 1 } }; // a refusal must surface at once

try {
  if (mode === "create") {
    const options = parseJsonArg(arg(1, "OPTIONS_JSON", "{}"), "OPTIONS_JSON");
    const token = await wait.createToken(options, noRetry);
    succeed({ token: JSON.parse(JSON.stringify(token)) });
  } else if (mode === "complete") {
    const result = await wait.completeToken(arg(1, "TOKEN_ID"), parseJsonArg(arg(2, "DATA_JSON"), "DATA_JSON"), noRetry);
    succeed({ result });
  } else if (mode === "retrieve") {
    const token = await wait.retrieveToken(arg(1, "TOKEN_ID"), noRetry);
    const error = token.error ? { name: token.error.name, message: token.error.message } : undefined;
    succeed({ token: { ...JSON.parse(JSON.stringify(token)), error } });
  } else if (mode === "hook") {
    const tokenId = arg(1, "TOKEN_ID");
    const data = parseJsonArg(arg(2, "DATA_JSON"), "DATA_JSON");
    const accessToken = arg(3, "TOKEN");
    const { React, hooks, render, unmount } = await loadBrowser();
    const states = await new Promise((resolve, reject) => {
      const seen = [];
      function Complete() {
        const { complete, isCompleted, isLoading, isReady, error } = hooks.useWaitToken(tokenId, {
          accessToken,
          baseURL: config.baseURL,
        });
        const started = React.useRef(false);
        seen.push({ isCompleted, isLoading, isReady });
        React.useEffect(() => {
          if (!started.current && isReady) {
            started.current = true;
            complete(data);
          }
          if (error) reject(error);
          else if (isCompleted) resolve(seen);
        }, [isReady, isCompleted, error]);
        return null;
      }
      render(React.createElement(Complete));
    });
    unmount();
    succeed({ states });
  } else {
    fail(`unknown MODE ${mode}: create, complete, hook or retrieve`, {}, 3);
  }
} catch (error) {
  fail(error);
}
