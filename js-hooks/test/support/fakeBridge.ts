/**
 * A bridge peer for the tests: a real HTTP + WebSocket server (the `ws` package) on 127.0.0.1
 * that speaks the protocol's frames (docs/protocol.md) and lets each test script the server's
 * side: which runs exist, errors, dropped connections, frames out of order.
 */
import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import type { WireRun } from "../../src/client/protocol.js";

export type ClientFrame = Record<string, any> & { type: string };

export type Subscription = {
  id: string;
  topic: string;
  token: string;
  frame: ClientFrame;
  /** Stream subscriptions: the next chunk index this subscription will be sent. */
  next?: number;
  /** Stream subscriptions: the epoch of what the subscriber holds (what it sent, then what it was sent). */
  epoch?: string;
};

export type Connection = {
  index: number;
  ws: WebSocket;
  open: boolean;
  subscriptions: Map<string, Subscription>;
  frames: ClientFrame[];
};

export type HttpHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  body: string,
) => void | Promise<void>;

/** What the server answers to a subscribe: a snapshot (default), an error, or nothing yet. */
export type SubscribeReply =
  | { kind: "snapshot" }
  | { kind: "error"; code: string; message?: string }
  | { kind: "hold" };

/** What the server answers to a `send` or `complete`: store and `ack` (default), an error, or nothing yet. */
export type SendReply =
  | { kind: "ack" }
  | { kind: "error"; code: string; message?: string }
  | { kind: "hold" };

let counter = 0;

/** A run with every field the protocol defines; override what the test needs. */
export function makeRun(overrides: Partial<WireRun> & { id?: string } = {}): WireRun {
  counter += 1;
  const created = overrides.createdAt ?? new Date(Date.now() - 1000).toISOString();
  return {
    id: `run_${String(counter).padStart(24, "0")}`,
    taskIdentifier: "resize-image",
    status: "QUEUED",
    payload: { url: "https://example.com/a.png" },
    output: null,
    error: null,
    metadata: {},
    tags: [],
    createdAt: created,
    updatedAt: created,
    startedAt: null,
    finishedAt: null,
    idempotencyKey: null,
    batchId: null,
    durationMs: 0,
    costInCents: 0,
    number: counter,
    attemptNumber: 0,
    isTest: false,
    realtimeStreams: [],
    version: 1,
    ...overrides,
  };
}

export class FakeBridge {
  readonly events = new EventEmitter();
  readonly connections: Connection[] = [];
  readonly runs = new Map<string, WireRun>();
  /** Output streams: `${runId}\n${key}` -> chunks (index = position). */
  readonly streams = new Map<string, unknown[]>();
  /** Streams that are over (their run finished): subscribers get `end` after the last chunk. */
  readonly endedStreams = new Set<string>();
  readonly failedStreams = new Map<string, { code: string; message: string }>();
  /** Each stream's epoch: new with its first chunk, and again when `resetStream` loses its chunks. */
  readonly epochs = new Map<string, string>();
  private epochCount = 0;
  /** Decides the reply to each subscribe frame. */
  onSubscribe: (frame: ClientFrame, connection: Connection) => SubscribeReply = () => ({
    kind: "snapshot",
  });
  /** Input streams: `${runId}\n${streamId}` -> the values stored (index = position). */
  readonly inputs = new Map<string, unknown[]>();
  /** Decides the reply to each `send` frame. */
  onSend: (frame: ClientFrame, connection: Connection) => SendReply = () => ({ kind: "ack" });
  /** Wait tokens completed so far: token id -> the first output (later completions keep it). */
  readonly completions = new Map<string, unknown>();
  /** Decides the reply to each `complete` frame. */
  onComplete: (frame: ClientFrame, connection: Connection) => SendReply = () => ({ kind: "ack" });
  /** Handles HTTP requests (other than the WebSocket upgrade). */
  onHttp: HttpHandler = (_req, res) => {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "Not found" }));
  };

  private constructor(
    private readonly http: Server,
    private readonly wss: WebSocketServer,
    readonly port: number,
  ) {}

  static async start(): Promise<FakeBridge> {
    const http = createServer();
    const wss = new WebSocketServer({ noServer: true });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    const port = (http.address() as AddressInfo).port;
    const bridge = new FakeBridge(http, wss, port);
    http.on("upgrade", (req, socket, head) => {
      if (req.url !== "/ws") {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => bridge.accept(ws));
    });
    http.on("request", (req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (chunk: string) => (body += chunk));
      req.on("end", () => {
        Promise.resolve(bridge.onHttp(req, res, body)).catch((error: unknown) => {
          res.writeHead(500);
          res.end(String(error));
        });
      });
    });
    return bridge;
  }

  get baseURL(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get openConnections(): Connection[] {
    return this.connections.filter((connection) => connection.open);
  }

  /** Every frame clients sent, in order, with the connection it came on. */
  get frames(): Array<{ connection: Connection; frame: ClientFrame }> {
    const all: Array<{ connection: Connection; frame: ClientFrame; at: number }> = [];
    for (const connection of this.connections) {
      connection.frames.forEach((frame) => all.push({ connection, frame, at: frame.__at }));
    }
    return all.sort((a, b) => a.at - b.at);
  }

  framesOfType(type: string): ClientFrame[] {
    return this.frames.filter(({ frame }) => frame.type === type).map(({ frame }) => frame);
  }

  /** Live subscriptions over every open connection. */
  get liveSubscriptions(): Subscription[] {
    return this.openConnections.flatMap((connection) => [...connection.subscriptions.values()]);
  }

  /** Resolves once `check` holds, re-checking on every server event; rejects after `timeoutMs`. */
  until(check: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onEvent = () => {
        if (check()) {
          cleanup();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.events.off("event", onEvent);
      };
      this.events.on("event", onEvent);
    });
  }

  // ---- the server's side of the protocol ---------------------------------------------------

  private accept(ws: WebSocket): void {
    const connection: Connection = {
      index: this.connections.length,
      ws,
      open: true,
      subscriptions: new Map(),
      frames: [],
    };
    this.connections.push(connection);
    this.send(connection, {
      type: "welcome",
      protocol: 1,
      limits: { maxSubscriptions: 100, maxFrameBytes: 65536 },
    });
    ws.on("message", (data) => this.receive(connection, data.toString()));
    ws.on("close", () => {
      connection.open = false;
      connection.subscriptions.clear();
      this.emit();
    });
    this.emit();
  }

  private emit(): void {
    this.events.emit("event");
  }

  private receive(connection: Connection, text: string): void {
    const frame = JSON.parse(text) as ClientFrame;
    Object.defineProperty(frame, "__at", { value: performance.now(), enumerable: false });
    connection.frames.push(frame);
    if (frame.type === "subscribe") this.subscribe(connection, frame);
    else if (frame.type === "unsubscribe") {
      if (connection.subscriptions.delete(frame.id)) {
        this.send(connection, { type: "unsubscribed", id: frame.id });
      } else {
        this.send(connection, {
          type: "error",
          id: frame.id,
          code: "not_found",
          message: "no such subscription",
        });
      }
    } else if (frame.type === "send") {
      const reply = this.onSend(frame, connection);
      if (reply.kind === "ack") this.ackSend(connection, frame);
      else if (reply.kind === "error") {
        this.send(connection, { type: "error", id: frame.id, code: reply.code, message: reply.message ?? reply.code });
      }
    } else if (frame.type === "complete") {
      const reply = this.onComplete(frame, connection);
      if (reply.kind === "ack") this.ackComplete(connection, frame);
      else if (reply.kind === "error") {
        this.send(connection, { type: "error", id: frame.id, code: reply.code, message: reply.message ?? reply.code });
      }
    } else if (frame.type === "ping") {
      this.send(connection, { type: "pong", id: frame.id ?? null });
    }
    this.emit();
  }

  private subscribe(connection: Connection, frame: ClientFrame): void {
    const reply = this.onSubscribe(frame, connection);
    if (reply.kind === "error") {
      this.send(connection, {
        type: "error",
        id: frame.id,
        code: reply.code,
        message: reply.message ?? reply.code,
      });
      return;
    }
    const subscription: Subscription = {
      id: frame.id,
      topic: topicOf(frame),
      token: frame.token,
      frame,
    };
    connection.subscriptions.set(frame.id, subscription);
    if (frame.feed === "stream") {
      subscription.next = typeof frame.startIndex === "number" ? frame.startIndex : 0;
      if (typeof frame.epoch === "string") subscription.epoch = frame.epoch;
      // "hold": subscribed, nothing sent yet (a test sends chunks itself, or calls catchUp).
      if (reply.kind === "snapshot") this.catchUp(connection, subscription);
      return;
    }
    if (reply.kind === "snapshot") this.sendSnapshot(connection, frame.id);
  }

  // ---- input streams -----------------------------------------------------------------------

  /** The values stored on an input stream so far. */
  inputValues(runId: string, streamId: string): unknown[] {
    return this.inputs.get(`${runId}\n${streamId}`) ?? [];
  }

  /** Input idempotency keys: `${runId}\n${streamId}\n${key}` -> the index the key stored. */
  readonly inputKeys = new Map<string, number>();

  /**
   * Stores the value of a `send` frame and answers `ack` with its index (for held sends too). As
   * the bridge: a frame repeating an `idempotencyKey` stores nothing and gets the first index.
   */
  ackSend(connection: Connection, frame: ClientFrame): number {
    const key = `${frame.runId}\n${frame.streamId}`;
    let list = this.inputs.get(key);
    if (!list) {
      list = [];
      this.inputs.set(key, list);
    }
    const idempotency = typeof frame.idempotencyKey === "string" ? `${key}\n${frame.idempotencyKey}` : undefined;
    let index = idempotency === undefined ? undefined : this.inputKeys.get(idempotency);
    if (index === undefined) {
      list.push(frame.data);
      index = list.length - 1;
      if (idempotency !== undefined) this.inputKeys.set(idempotency, index);
    }
    this.send(connection, { type: "ack", id: frame.id, index });
    this.emit();
    return index;
  }

  // ---- wait tokens -------------------------------------------------------------------------

  /** Completes the token of a `complete` frame (the first output stays, as on the bridge) and answers `ack`, without index. */
  ackComplete(connection: Connection, frame: ClientFrame): void {
    if (!this.completions.has(frame.tokenId)) this.completions.set(frame.tokenId, frame.data);
    this.send(connection, { type: "ack", id: frame.id });
    this.emit();
  }

  // ---- output streams ----------------------------------------------------------------------

  /** The chunks of a stream so far. */
  chunks(runId: string, key: string): unknown[] {
    return this.streams.get(`${runId}\n${key}`) ?? [];
  }

  /** Stream subscriptions over every open connection. */
  streamSubscriptions(runId?: string, key?: string): Array<Subscription & { connection: Connection }> {
    return this.openConnections.flatMap((connection) =>
      [...connection.subscriptions.values()]
        .filter(
          (s) =>
            s.frame.feed === "stream" &&
            (runId === undefined || s.frame.runId === runId) &&
            (key === undefined || s.frame.key === key),
        )
        .map((s) => ({ ...s, connection })),
    );
  }

  /**
   * Stores a chunk and sends it to every subscription that is caught up; the run (if stored)
   * lists the key in `realtimeStreams` from its first chunk. Returns the chunk's index.
   */
  append(runId: string, key: string, data: unknown): number {
    const id = `${runId}\n${key}`;
    let list = this.streams.get(id);
    if (!list) {
      list = [];
      this.streams.set(id, list);
      this.epochs.set(id, `e${++this.epochCount}`);
      const run = this.runs.get(runId);
      if (run && !(run.realtimeStreams ?? []).includes(key)) {
        this.change(runId, { realtimeStreams: [...(run.realtimeStreams ?? []), key] });
      }
    }
    list.push(data);
    this.catchUpAll(runId, key);
    return list.length - 1;
  }

  /** Ends a stream: every subscriber gets `end` (reason finished) once it has every chunk. */
  endStream(runId: string, key: string, failure?: { code: string; message: string }): void {
    this.endedStreams.add(`${runId}\n${key}`);
    if (failure) this.failedStreams.set(`${runId}\n${key}`, failure);
    this.catchUpAll(runId, key);
  }

  /**
   * The stream's storage is lost (as a flushed Redis): its chunks go, it gets a new epoch, and every
   * subscription holding chunks of the old one ends with `stream_reset`.
   */
  resetStream(runId: string, key: string): void {
    const id = `${runId}\n${key}`;
    this.streams.set(id, []);
    this.epochs.set(id, `e${++this.epochCount}`);
    this.catchUpAll(runId, key);
  }

  private catchUpAll(runId: string, key: string): void {
    for (const connection of this.openConnections) {
      for (const subscription of [...connection.subscriptions.values()]) {
        if (subscription.frame.feed === "stream" && subscription.frame.runId === runId && subscription.frame.key === key) {
          this.catchUp(connection, subscription);
        }
      }
    }
    this.emit();
  }

  /**
   * Sends a subscription every chunk it has not had yet (the first one naming the stream's epoch),
   * then `end` if the stream is over; `end` with `stream_reset` when the subscriber holds chunks of
   * another epoch, or more chunks than the stream has.
   */
  catchUp(connection: Connection, subscription: Subscription): void {
    const { runId, key } = subscription.frame;
    const list = this.chunks(runId, key);
    const epoch = this.epochs.get(`${runId}\n${key}`);
    let next = subscription.next ?? 0;
    if ((subscription.epoch !== undefined && subscription.epoch !== epoch) || next > list.length) {
      connection.subscriptions.delete(subscription.id);
      const message = `stream '${key}' of run ${runId} was reset`;
      this.send(connection, { type: "end", id: subscription.id, nextIndex: next, reason: "error", code: "stream_reset", message });
      return;
    }
    while (next < list.length) {
      const named = subscription.epoch === undefined ? { epoch } : {};
      subscription.epoch = epoch;
      this.send(connection, { type: "chunk", id: subscription.id, index: next, data: list[next], ...named });
      next += 1;
    }
    subscription.next = next;
    if (this.endedStreams.has(`${runId}\n${key}`)) {
      connection.subscriptions.delete(subscription.id);
      const failure = this.failedStreams.get(`${runId}\n${key}`);
      const reason = failure ? { reason: "error", ...failure } : { reason: "finished" };
      this.send(connection, { type: "end", id: subscription.id, nextIndex: next, ...reason });
    }
  }

  /** Sends the current snapshot of a subscription (also a later, "resync" one). */
  sendSnapshot(connection: Connection, subscriptionId: string, runs?: WireRun[]): void {
    const subscription = connection.subscriptions.get(subscriptionId);
    if (!subscription) throw new Error(`no subscription ${subscriptionId}`);
    this.send(connection, {
      type: "snapshot",
      id: subscriptionId,
      topic: subscription.topic,
      runs: runs ?? this.feedRuns(subscription.frame),
    });
  }

  /** The runs a feed holds now. */
  feedRuns(frame: ClientFrame): WireRun[] {
    const all = [...this.runs.values()];
    if (frame.feed === "run") return all.filter((run) => run.id === frame.runId);
    if (frame.feed === "batch") return all.filter((run) => run.batchId === frame.batchId);
    const tags: string[] = frame.tags;
    return all
      .filter((run) => tags.every((tag) => (run.tags ?? []).includes(tag)))
      .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
  }

  /** Stores a run and sends an `update` on each topic it belongs to, to every connection following it. */
  setRun(run: WireRun): WireRun {
    this.runs.set(run.id, run);
    for (const topic of this.topicsOf(run)) this.publish(topic, run);
    return run;
  }

  /** Applies a change as a new version of a stored run, then publishes it. */
  change(runId: string, change: Partial<WireRun>): WireRun {
    const current = this.runs.get(runId);
    if (!current) throw new Error(`no run ${runId}`);
    return this.setRun({
      ...current,
      ...change,
      version: current.version + 1,
      updatedAt: new Date().toISOString(),
    });
  }

  /** Sends an update frame to every open connection following `topic`, once per connection. */
  publish(topic: string, run: WireRun): void {
    const text = JSON.stringify({ type: "update", topic, run });
    for (const connection of this.openConnections) {
      const follows = [...connection.subscriptions.values()].some((s) => s.topic === topic);
      if (follows) connection.ws.send(text);
    }
  }

  private topicsOf(run: WireRun): string[] {
    const topics = new Set<string>([`run:${run.id}`]);
    if (run.batchId) topics.add(`batch:${run.batchId}`);
    for (const connection of this.connections) {
      for (const subscription of connection.subscriptions.values()) {
        const frame = subscription.frame;
        if (
          frame.feed === "tags" &&
          (frame.tags as string[]).every((tag) => (run.tags ?? []).includes(tag))
        ) {
          topics.add(subscription.topic);
        }
      }
    }
    return [...topics];
  }

  send(connection: Connection, frame: Record<string, unknown>): void {
    if (connection.ws.readyState === WebSocket.OPEN) connection.ws.send(JSON.stringify(frame));
  }

  /** Ends a subscription with an error frame (e.g. token_expired). */
  failSubscription(connection: Connection, subscriptionId: string, code: string): void {
    connection.subscriptions.delete(subscriptionId);
    this.send(connection, { type: "error", id: subscriptionId, code, message: `${code}!` });
  }

  /** Drops every open connection without a close handshake (a crash, a network cut). */
  dropAll(): void {
    for (const connection of this.openConnections) connection.ws.terminate();
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.ws.terminate();
    this.wss.close();
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
  }
}

function topicOf(frame: ClientFrame): string {
  if (frame.feed === "run") return `run:${frame.runId}`;
  if (frame.feed === "stream") return `stream:${frame.runId}:${frame.key}`;
  if (frame.feed === "batch") return `batch:${frame.batchId}`;
  return `tags:${JSON.stringify([...new Set(frame.tags as string[])].sort())}`;
}
