// Mint a token exactly as a user's backend does with the official SDK (it asks the bridge
// for base claims at POST /api/v1/auth/jwt/claims, then signs locally with the secret key).
//
//   BRIDGE_URL=... BRIDGE_SECRET_KEY=... node create-token.mjs public  '{"read":{"runs":["run_1"]}}' [EXPIRATION]
//   BRIDGE_URL=... BRIDGE_SECRET_KEY=... node create-token.mjs trigger TASK_ID [multiple] [EXPIRATION]
//
// "public" -> auth.createPublicToken({scopes, expirationTime}); "trigger" ->
// auth.createTriggerPublicToken(TASK_ID, {multipleUse, expirationTime}) (one-time by default).
import { arg, armTimeout, config, fail, jwtClaims, parseJsonArg, requireEnv, succeed } from "./lib/harness.mjs";

const kind = arg(0, "KIND");
const secretKey = requireEnv("BRIDGE_SECRET_KEY");
armTimeout();

const { auth } = await import("@trigger.dev/sdk");
auth.configure({ baseURL: config.baseURL, secretKey });

let token;
try {
  if (kind === "public") {
    const scopes = parseJsonArg(arg(1, "SCOPES_JSON"), "SCOPES_JSON");
    const expirationTime = arg(2, "EXPIRATION", "") || undefined;
    token = await auth.createPublicToken({ scopes, expirationTime });
  } else if (kind === "trigger") {
    const taskId = arg(1, "TASK_ID");
    const multipleUse = arg(2, "multiple", "") === "multiple";
    const expirationTime = arg(3, "EXPIRATION", "") || undefined;
    token = await auth.createTriggerPublicToken(taskId, { multipleUse, expirationTime });
  } else {
    fail(`unknown KIND ${kind} (public | trigger)`, {}, 3);
  }
} catch (error) {
  fail(error);
}
succeed({ token, claims: jwtClaims(token) });
