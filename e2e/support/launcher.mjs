#!/usr/bin/env node
/**
 * Starts the demo server (`python -m examples.demo`) for the Playwright suite, and on the Redis
 * backend its own `redis-server` on a free port first. Playwright runs one launcher per server
 * (playwright.config.ts, `webServer`) and stops it with SIGTERM; the launcher then stops what it
 * started.
 *
 *   node e2e/support/launcher.mjs --backend memory|redis --port 18790 --control-port 18791 [--separate-worker]
 *
 * With --separate-worker (Redis only) the demo server runs no task (`--no-worker`): a worker process
 * of its own (`python -m bridge.cli worker --tasks examples/demo/tasks.py`, the `realtime-bridge
 * worker` command) does, parking waiting runs after 0.2 s (BRIDGE_WAIT_HOLD) so that they outlive it.
 *
 * The control port lets a test stop and start the demo server, to show that pages recover:
 *   POST /stop          kills the demo server (SIGKILL: a crash, no goodbye to the clients)
 *   POST /start         starts it again on the same port (and the same Redis), answers once it is ready
 *   GET  /status        {"running": true|false, "pid": ..., "worker": {"running", "pid"} with --separate-worker}
 * and the separate worker:
 *   POST /worker/stop   SIGTERM, as a deploy stops it; answers once it exited: {"exit": {"code", "signal"}}
 *   POST /worker/start  starts a new worker process, answers once it runs the tasks
 *
 * The servers' output goes to a log file whose path is printed at start; Redis keeps nothing on disk.
 */
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { createServer, createConnection } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const PYTHON = process.env.E2E_PYTHON ?? join(ROOT, ".venv/bin/python");
const REDIS_SERVER = process.env.E2E_REDIS_SERVER ?? "redis-server";
// Fixed, so that tokens minted before a restart are still valid after it.
const SECRET_KEY = "tr_dev_e2e_secret_key_for_the_playwright_suite_only";

const { values: args } = parseArgs({
  options: {
    backend: { type: "string", default: "memory" },
    port: { type: "string" },
    "control-port": { type: "string" },
    "separate-worker": { type: "boolean", default: false },
  },
});
const badWorker = args["separate-worker"] && args.backend !== "redis";
if (!["memory", "redis"].includes(args.backend) || !args.port || !args["control-port"] || badWorker) {
  console.error("usage: launcher.mjs --backend memory|redis --port PORT --control-port PORT [--separate-worker (redis)]");
  process.exit(2);
}
const port = Number(args.port);
const name = `${args.backend}:${port}`;
// One log per server, replaced by the next run: .../realtime-bridge-e2e/memory-18790.log
const logDir = join(tmpdir(), "realtime-bridge-e2e");
mkdirSync(logDir, { recursive: true });
const logPath = join(logDir, `${args.backend}-${port}.log`);
const log = createWriteStream(logPath);
const say = (message) => console.error(`[launcher ${name}] ${message}`);

/** A port nobody listens on right now. */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port: free } = server.address();
      server.close(() => resolvePort(free));
    });
  });
}

const delay = (ms) => new Promise((done) => setTimeout(done, ms));

async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs} ms (log: ${logPath})`);
    await delay(100);
  }
}

function redisAnswersPing(redisPort) {
  return new Promise((answer) => {
    const socket = createConnection({ host: "127.0.0.1", port: redisPort });
    let data = "";
    socket.setTimeout(1000, () => socket.destroy());
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      data += chunk;
      if (data.includes("\r\n")) {
        socket.end();
        answer(data.startsWith("+PONG"));
      }
    });
    socket.on("error", () => answer(false));
    socket.on("close", () => answer(false));
  });
}

/** Starts a child whose output goes to the log; `onExit` hears about an exit nobody asked for. */
function startChild(label, command, argv, env) {
  const child = spawn(command, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const prefix = (chunk) => log.write(chunk.toString().replace(/^(?=.)/gm, `[${label}] `));
  child.stdout.on("data", prefix);
  child.stderr.on("data", prefix);
  child.exited = new Promise((done) => child.once("exit", (code, signal) => done({ code, signal })));
  return child;
}

async function stopChild(child, signal = "SIGTERM", graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await child.exited;
  clearTimeout(timer);
}

let redis;
let redisUrl;
let demo;
let worker;
let stopping = false;

async function startRedis() {
  const redisPort = await freePort();
  redis = startChild("redis", REDIS_SERVER, [
    "--port", String(redisPort),
    "--bind", "127.0.0.1",
    "--save", "",
    "--appendonly", "no",
    "--dir", logDir,
  ]);
  redis.exited.then(({ code, signal }) => {
    if (!stopping) fail(`redis-server exited (code ${code}, signal ${signal})`);
  });
  await waitFor("redis-server", () => redisAnswersPing(redisPort), 10_000);
  redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  say(`redis-server on port ${redisPort}`);
}

const bridgeEnv = () => ({ BRIDGE_SECRET_KEY: SECRET_KEY, BRIDGE_REDIS_URL: redisUrl ?? "" });

async function startDemo() {
  const env = { HOST: "127.0.0.1", PORT: String(port), ...bridgeEnv() };
  const argv = ["-m", "examples.demo", ...(args["separate-worker"] ? ["--no-worker"] : [])];
  const child = startChild("demo", PYTHON, argv, env);
  demo = child;
  child.exited.then(({ code, signal }) => {
    if (demo === child && !stopping) fail(`the demo server exited on its own (code ${code}, signal ${signal})`);
  });
  await waitFor("the demo server", async () => {
    if (child.exitCode !== null) throw new Error("exited");
    const response = await fetch(`http://127.0.0.1:${port}/readyz`);
    return response.ok;
  });
  say(`demo server ready (pid ${child.pid})`);
}

async function stopDemo() {
  const child = demo;
  demo = undefined;
  await stopChild(child, "SIGKILL");
  say("demo server stopped");
}

async function startWorker() {
  // `python -m bridge.cli` is the `realtime-bridge` command, from this checkout whatever the venv installed.
  const env = { ...bridgeEnv(), BRIDGE_WAIT_HOLD: "0.2s", BRIDGE_SHUTDOWN_GRACE: "5s" };
  const child = startChild("worker", PYTHON, ["-m", "bridge.cli", "worker", "--tasks", "examples/demo/tasks.py"], env);
  worker = child;
  child.exited.then(({ code, signal }) => {
    if (worker === child && !stopping) fail(`the worker exited on its own (code ${code}, signal ${signal})`);
  });
  // It logs "worker <id> running <tasks>" once it takes runs.
  let output = "";
  const collect = (chunk) => (output += chunk);
  child.stderr.on("data", collect);
  await waitFor("the worker", async () => {
    if (child.exitCode !== null) throw new Error("exited");
    return /worker \S+ running /.test(output);
  });
  child.stderr.off("data", collect);
  say(`worker ready (pid ${child.pid})`);
}

async function stopWorker() {
  const child = worker;
  worker = undefined;
  if (!child) return null;
  await stopChild(child, "SIGTERM", 15_000); // BRIDGE_SHUTDOWN_GRACE is 5 s
  say("worker stopped");
  return child.exited;
}

async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  control.close();
  await stopChild(worker);
  await stopChild(demo);
  await stopChild(redis);
  log.end();
  process.exit(code);
}

function fail(message) {
  say(`${message}; see ${logPath}`);
  void shutdown(1);
}

// One control request at a time: a stop and a start never overlap.
let queue = Promise.resolve();
const control = createHttpServer((request, response) => {
  const reply = (status, body) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  };
  const route = `${request.method} ${new URL(request.url, "http://x").pathname}`;
  const actions = {
    "POST /stop": stopDemo,
    "POST /start": async () => {
      if (!demo) await startDemo();
    },
    "GET /status": async () => {},
  };
  if (args["separate-worker"]) {
    actions["POST /worker/stop"] = async () => ({ exit: await stopWorker() });
    actions["POST /worker/start"] = async () => {
      if (!worker) await startWorker();
    };
  }
  const action = actions[route];
  if (!action) return reply(404, { error: `no route ${route}` });
  queue = queue.then(async () => {
    try {
      const extra = await action();
      const workerStatus = args["separate-worker"] ? { worker: { running: !!worker, pid: worker?.pid ?? null } } : {};
      reply(200, { running: !!demo, pid: demo?.pid ?? null, ...workerStatus, ...extra });
    } catch (error) {
      reply(500, { error: String(error) });
    }
  });
});

process.on("SIGTERM", () => void shutdown(0));
process.on("SIGINT", () => void shutdown(0));

try {
  say(`logs: ${logPath}`);
  await new Promise((listening, reject) => {
    control.once("error", reject);
    control.listen(Number(args["control-port"]), "127.0.0.1", listening);
  });
  if (args.backend === "redis") await startRedis();
  await startDemo();
  if (args["separate-worker"]) await startWorker();
} catch (error) {
  fail(String(error));
}
