/**
 * The socket manager on its own, with a scripted WebSocket and fake timers: backoff, lingers,
 * keepalive and the per-feed error handling, deterministic and without waiting for real time.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import {
  RealtimeClient,
  toWebSocketURL,
  type FeedState,
  type RealtimeClientOptions,
  type WebSocketLike,
} from "../src/index.js";
import { makeRun } from "./support/fakeBridge.js";

class ScriptedSocket implements WebSocketLike {
  static instances: ScriptedSocket[] = [];
  readyState = 0;
  sent: any[] = [];
  closedWith: number | undefined;
  onopen: ((event: any) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: ((event: any) => void) | null = null;

  constructor(readonly url: string) {
    ScriptedSocket.instances.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // the server's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({ type: "welcome", protocol: 1, limits: {} });
  }
  receive(frame: unknown) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
  subscribes() {
    return this.sent.filter((f) => f.type === "subscribe");
  }
}

const sockets = () => ScriptedSocket.instances;
const last = () => sockets()[sockets().length - 1]!;

function client(options: RealtimeClientOptions = {}) {
  return new RealtimeClient("ws://bridge.test/ws", {
    WebSocket: ScriptedSocket,
    random: () => 0.5,
    pingIntervalMs: 0,
    ...options,
  });
}

function collect() {
  const states: FeedState[] = [];
  return { states, listener: (state: FeedState) => states.push(state) };
}

beforeEach(() => {
  ScriptedSocket.instances = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("RealtimeClient", () => {
  test("reconnects with exponential backoff and full jitter, capped, reset by a stable connection", () => {
    const c = client({ reconnectInitialDelayMs: 250, reconnectMaxDelayMs: 10_000, stableConnectionMs: 5000 });
    c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {});
    expect(sockets()).toHaveLength(1);

    // random() = 0.5: delays are half of 250, 500, 1000, ... capped at 10 000.
    const expected = [125, 250, 500, 1000, 2000, 4000, 5000, 5000];
    for (const delay of expected) {
      const before = sockets().length;
      last().drop();
      vi.advanceTimersByTime(delay - 1);
      expect(sockets()).toHaveLength(before);
      vi.advanceTimersByTime(1);
      expect(sockets()).toHaveLength(before + 1);
    }

    // A connection that stayed up resets the backoff.
    last().open();
    vi.advanceTimersByTime(5000);
    last().drop();
    vi.advanceTimersByTime(125);
    expect(last().readyState).toBe(0);
    expect(sockets()).toHaveLength(expected.length + 2);
    c.close();
  });

  test("full jitter: the delay is random() times the cap", () => {
    const values = [0, 0.999];
    const c = client({ random: () => values.shift() ?? 0, reconnectInitialDelayMs: 1000 });
    c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {});
    last().drop();
    vi.advanceTimersByTime(0);
    expect(sockets()).toHaveLength(2); // 0 * 1000
    last().drop();
    vi.advanceTimersByTime(1997);
    expect(sockets()).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets()).toHaveLength(3); // floor(0.999 * 2000) = 1998
    c.close();
  });

  test("resubscribes every feed on a new connection with fresh ids and their own tokens", () => {
    const c = client();
    c.subscribe({ feed: "run", runId: "run_1" }, "token-1", () => {});
    c.subscribe({ feed: "tags", tags: ["b", "a", "a"], createdAt: "2h" }, "token-2", () => {});
    c.subscribe({ feed: "batch", batchId: "batch_1" }, "token-3", () => {});
    last().open();
    const first = last().subscribes();
    expect(first).toEqual([
      { type: "subscribe", id: "s1", feed: "run", runId: "run_1", token: "token-1" },
      { type: "subscribe", id: "s2", feed: "tags", tags: ["a", "b"], createdAt: "2h", token: "token-2" },
      { type: "subscribe", id: "s3", feed: "batch", batchId: "batch_1", token: "token-3" },
    ]);
    last().drop();
    vi.advanceTimersByTime(10_000);
    last().open();
    expect(last().subscribes().map((f) => [f.id, f.token])).toEqual([
      ["s4", "token-1"],
      ["s5", "token-2"],
      ["s6", "token-3"],
    ]);
    c.close();
  });

  test("the socket closes a linger after the last subscription goes; a new one in time keeps it", () => {
    const c = client({ subscriptionLingerMs: 100, socketLingerMs: 1000 });
    const a = c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {});
    last().open();
    a.unsubscribe();
    vi.advanceTimersByTime(100);
    expect(last().sent.filter((f) => f.type === "unsubscribe")).toEqual([{ type: "unsubscribe", id: "s1" }]);
    vi.advanceTimersByTime(900);
    // Within the socket's linger, a new subscription reuses the socket.
    const b = c.subscribe({ feed: "run", runId: "run_2" }, "t", () => {});
    vi.advanceTimersByTime(5000);
    expect(last().closedWith).toBeUndefined();
    expect(sockets()).toHaveLength(1);
    b.unsubscribe();
    vi.advanceTimersByTime(1099);
    expect(last().closedWith).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(last().closedWith).toBe(1000);
    expect(c.feedCount).toBe(0);
  });

  test("unsubscribe and resubscribe within the subscription linger sends nothing", () => {
    const c = client({ subscriptionLingerMs: 100 });
    const listener = () => {};
    const a = c.subscribe({ feed: "run", runId: "run_1" }, "t", listener);
    last().open();
    a.unsubscribe();
    a.unsubscribe(); // idempotent
    vi.advanceTimersByTime(50);
    c.subscribe({ feed: "run", runId: "run_1" }, "t", listener);
    vi.advanceTimersByTime(1000);
    expect(last().sent.map((f) => f.type)).toEqual(["subscribe"]);
    c.close();
  });

  test("feeds that never synced show connection_failed after 3 failed attempts, cleared by a snapshot", () => {
    const c = client({ reconnectInitialDelayMs: 10, reconnectMaxDelayMs: 10 });
    const { states, listener } = collect();
    c.subscribe({ feed: "run", runId: "run_1" }, "t", listener);
    last().drop();
    vi.advanceTimersByTime(10);
    last().drop();
    vi.advanceTimersByTime(10);
    expect(states).toHaveLength(0);
    last().drop();
    expect(states.at(-1)?.error).toMatchObject({ code: "connection_failed" });
    vi.advanceTimersByTime(10);
    last().open();
    const run = makeRun({ id: "run_1" });
    last().receive({ type: "snapshot", id: last().subscribes()[0]!.id, topic: "run:run_1", runs: [run] });
    expect(states.at(-1)).toMatchObject({ error: undefined, synced: true, runs: [run] });
    c.close();
  });

  test("the online event reconnects without waiting out the backoff", () => {
    const c = client({ reconnectInitialDelayMs: 60_000, reconnectMaxDelayMs: 60_000 });
    c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {});
    last().drop();
    expect(sockets()).toHaveLength(1);
    window.dispatchEvent(new Event("online"));
    expect(sockets()).toHaveLength(2);
    c.close();
  });

  test("keepalive: a ping left unanswered drops the connection and reconnects", () => {
    const c = client({ pingIntervalMs: 1000, pongTimeoutMs: 500, reconnectInitialDelayMs: 10 });
    c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {});
    const socket = last();
    socket.open();
    vi.advanceTimersByTime(1000);
    expect(socket.sent.filter((f) => f.type === "ping")).toHaveLength(1);
    socket.receive({ type: "pong", id: "p1" });
    vi.advanceTimersByTime(1000);
    expect(socket.sent.filter((f) => f.type === "ping")).toHaveLength(2);
    vi.advanceTimersByTime(500); // no pong
    expect(socket.closedWith).toBe(4000);
    vi.advanceTimersByTime(10);
    expect(sockets()).toHaveLength(2);
    c.close();
  });

  test("backend_unavailable retries the subscription; terminal errors don't", () => {
    const c = client({ reconnectInitialDelayMs: 100 });
    const retried = collect();
    const denied = collect();
    c.subscribe({ feed: "run", runId: "run_1" }, "t", retried.listener);
    c.subscribe({ feed: "run", runId: "run_2" }, "t", denied.listener);
    last().open();
    last().receive({ type: "error", id: "s1", code: "backend_unavailable", message: "retry" });
    last().receive({ type: "error", id: "s2", code: "not_found", message: "Run not found: run_2" });
    expect(retried.states.at(-1)?.error).toMatchObject({ code: "backend_unavailable" });
    expect(denied.states.at(-1)?.error).toMatchObject({ code: "not_found" });
    vi.advanceTimersByTime(100);
    expect(last().subscribes().map((f) => f.runId)).toEqual(["run_1", "run_2", "run_1"]);
    // A reconnect does not resubscribe the failed feed.
    last().drop();
    vi.advanceTimersByTime(1000);
    last().open();
    expect(last().subscribes().map((f) => f.runId)).toEqual(["run_1"]);
    c.close();
  });

  test("a request frame is serialised once, also when a send or a completion goes out again on a new socket", async () => {
    const c = client({ reconnectInitialDelayMs: 10 });
    let serialised = 0;
    const value = {
      toJSON: () => {
        serialised++;
        return { approved: true };
      },
    };
    const sent = c.sendInput("run_1", "approval", value, "t", { idempotencyKey: "mine" });
    const completed = c.completeToken("waitpoint_1", value, "t");
    last().open();
    const firstSend = last().sent.find((f) => f.type === "send");
    expect(firstSend).toMatchObject({ runId: "run_1", streamId: "approval", data: { approved: true }, idempotencyKey: "mine" });
    last().drop(); // neither answered: both go again, the same frames (the send's key makes it stored once)
    vi.advanceTimersByTime(10);
    last().open();
    const send = last().sent.find((f) => f.type === "send");
    expect(send).toEqual(firstSend);
    last().receive({ type: "ack", id: send.id, index: 0 });
    await expect(sent).resolves.toEqual({ index: 0 });
    const complete = last().sent.find((f) => f.type === "complete");
    expect(complete).toMatchObject({ tokenId: "waitpoint_1", data: { approved: true } });
    last().receive({ type: "ack", id: complete.id });
    await completed;
    expect(serialised).toBe(2); // one per frame, though each went out twice
    c.close();
  });

  test("a stream keeps what its listeners need: the last maxParts chunks, all while one sets no bound", () => {
    const c = client();
    const spec = { runId: "run_1", key: "ai" };
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
    const bounded = c.subscribeStream(spec, "t", () => {}, { maxParts: 10 });
    last().open();
    const sid = last().subscribes()[0]!.id;
    const chunk = (index: number) => last().receive({ type: "chunk", id: sid, index, data: index });
    for (let index = 0; index < 10_000; index++) chunk(index);
    const state = bounded.getState();
    expect(state).toMatchObject({ startIndex: 9990, count: 10, nextIndex: 10_000 });
    expect(state.chunks).toEqual(range(9990, 10_000));
    expect(state.receivedAt).toHaveLength(10);

    // A listener without a bound: nothing more goes while it listens.
    const unbounded = c.subscribeStream(spec, "t", () => {});
    for (let index = 10_000; index < 10_020; index++) chunk(index);
    expect(unbounded.getState()).toMatchObject({ startIndex: 9990, count: 30 });
    // A state handed out before keeps its chunks.
    expect(state.chunks.slice(0, state.count)).toEqual(range(9990, 10_000));
    unbounded.unsubscribe();
    chunk(10_020);
    expect(bounded.getState()).toMatchObject({ startIndex: 10_011, count: 10, nextIndex: 10_021 });
    c.close();
  });

  test("ignores garbage, unknown frames and frames for unknown subscriptions", () => {
    const c = client();
    const { states, listener } = collect();
    c.subscribe({ feed: "run", runId: "run_1" }, "t", listener);
    last().open();
    last().receive("not json");
    last().receive({ type: "surprise" });
    last().receive({ type: "snapshot", id: "s999", topic: "run:x", runs: [] });
    last().receive({ type: "error", id: null, code: "invalid_request", message: "bad frame" });
    last().receive({ type: "update", topic: "run:other", run: makeRun() });
    expect(states).toHaveLength(0);
    c.close();
  });

  test("a throwing listener does not stop the others", () => {
    const c = client();
    const good = collect();
    c.subscribe({ feed: "run", runId: "run_1" }, "t", () => {
      throw new Error("listener bug");
    });
    c.subscribe({ feed: "run", runId: "run_1" }, "t", good.listener);
    last().open();
    last().receive({ type: "snapshot", id: "s1", topic: "run:run_1", runs: [makeRun({ id: "run_1" })] });
    expect(good.states).toHaveLength(1);
    expect(() => vi.runOnlyPendingTimers()).toThrow("listener bug");
    c.close();
  });
});

describe("toWebSocketURL", () => {
  test("maps http(s) to ws(s) and appends /ws", () => {
    expect(toWebSocketURL("http://localhost:8787")).toBe("ws://localhost:8787/ws");
    expect(toWebSocketURL("https://bridge.example.com/")).toBe("wss://bridge.example.com/ws");
    expect(toWebSocketURL("https://example.com/bridge/")).toBe("wss://example.com/bridge/ws");
    expect(toWebSocketURL("/bridge")).toBe(`ws://${window.location.host}/bridge/ws`);
    expect(() => toWebSocketURL("ftp://x")).toThrow(/http/);
  });
});
