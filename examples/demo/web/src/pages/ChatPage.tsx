import { useInputStreamSend, useRealtimeRun, useRealtimeStream } from "@realtime-bridge/react-hooks";
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { baseURL, triggerRun } from "../api";
import { isFinal } from "../runs";
import { ChatReply, type Chat, type ChatOutput } from "../components/ChatReply";
import { Code } from "../components/Code";
import { EmptyRunCard, ErrorCallout } from "../components/Placeholders";
import { useAction } from "../components/useAction";

const SUGGESTIONS = ["Hello", "What is realtime-bridge?", "Tell me about streams"];

const DEFAULT_PROMPT = "Hello";
const DEFAULT_DELAY_MS = 45;
const MAX_DELAY_MS = 2000;

/** What a prompt was sent with: kept in the URL beside its run, so the form always matches the reply shown. */
export type Sent = { prompt: string; delayMs: number };

/**
 * The run the page shows lives in the URL hash (#/chat?run=…&token=…&prompt=…&delay=…): a reload
 * re-attaches to it, and the form shows the prompt and delay that reply was sent with.
 */
export function chatHash(page: "chat" | "official", runId: string, token: string, sent?: Sent): string {
  const params = new URLSearchParams({ run: runId, token });
  if (sent) {
    params.set("prompt", sent.prompt);
    params.set("delay", String(sent.delayMs));
  }
  return `#/${page}?${params.toString()}`;
}

function delayOf(value: string | null): number {
  const delay = Number(value ?? DEFAULT_DELAY_MS);
  return Number.isFinite(delay) ? Math.min(Math.max(delay, 0), MAX_DELAY_MS) : DEFAULT_DELAY_MS;
}

/**
 * What the Stop button measured, on the page's clock (performance.now()): when it was clicked,
 * when the bridge acknowledged the cancel value, and when each chunk of the reply arrived.
 * The end-to-end test reads it from the data attributes of `chat-stop-timing`.
 */
type StopTiming = { clickedAt: number; ackAt?: number; ackIndex?: number; chunksAtAck?: number; error?: string };

/** The reply of one run, read with the bridge's hooks over the WebSocket, and its Stop button. */
function LiveReply({ runId, token }: { runId: string; token: string }) {
  // Every chunk as it arrives (not throttled): its index and when it came.
  const chunkTimes = useRef<number[]>([]);
  const onData = useCallback(() => {
    chunkTimes.current.push(performance.now());
  }, []);
  // Every token of the "ai" stream, once and in order, from index 0 (also after a reload).
  const { parts, error: streamError } = useRealtimeStream<string>(runId, "ai", { accessToken: token, onData });
  const { run, error: runError } = useRealtimeRun<Chat>(runId, { accessToken: token });
  // The Stop button: a value on the run's input stream "cancel", over the same WebSocket.
  const cancel = useInputStreamSend<{ reason: string }>("cancel", runId, { accessToken: token, baseURL });
  const [stop, setStop] = useState<StopTiming>();

  function onStop() {
    const clickedAt = performance.now();
    setStop({ clickedAt });
    cancel.sendAsync({ reason: "the user pressed Stop" }).then(
      ({ index }) => {
        // Runs right after the ack frame is handled, before any frame that came after it.
        const ackAt = performance.now();
        setStop({ clickedAt, ackAt, ackIndex: index, chunksAtAck: chunkTimes.current.length });
      },
      (error: unknown) => setStop({ clickedAt, error: error instanceof Error ? error.message : String(error) }),
    );
  }

  const streaming = !!run && !isFinal(run.status);
  return (
    <ChatReply
      testId="chat"
      hook="useRealtimeStream (@realtime-bridge/react-hooks)"
      prompt={run?.payload?.prompt}
      parts={parts}
      status={run?.status}
      output={run?.output as ChatOutput | undefined}
      error={streamError ?? runError}
    >
      {(streaming || stop) && (
        <div className="stop-row">
          {streaming && (
            <button
              type="button"
              className="button"
              onClick={onStop}
              disabled={!cancel.isReady || cancel.isLoading || stop?.ackAt !== undefined}
              data-testid="chat-stop"
            >
              {cancel.isLoading ? "Stopping…" : "Stop"}
            </button>
          )}
          {stop && (
            <span
              className="muted"
              data-testid="chat-stop-timing"
              data-clicked-at={stop.clickedAt}
              data-ack-at={stop.ackAt ?? ""}
              data-ack-index={stop.ackIndex ?? ""}
              data-chunks-at-ack={stop.chunksAtAck ?? ""}
              data-chunk-times={JSON.stringify(chunkTimes.current)}
            >
              {stop.error
                ? `Stop failed: ${stop.error}`
                : stop.ackAt === undefined
                  ? "Sending stop…"
                  : `Stop acknowledged in ${Math.round(stop.ackAt - stop.clickedAt)} ms, after ${stop.chunksAtAck} chunks`}
            </span>
          )}
        </div>
      )}
    </ChatReply>
  );
}

export function ChatPage({
  runId,
  token,
  sentPrompt,
  sentDelay,
}: {
  runId: string | null;
  token: string | null;
  sentPrompt: string | null;
  sentDelay: string | null;
}) {
  const [prompt, setPrompt] = useState(sentPrompt ?? DEFAULT_PROMPT);
  const [delayMs, setDelayMs] = useState(() => delayOf(sentDelay));
  const { busy, failure, run } = useAction();
  // Another run in the URL (back, forward, a pasted link): the form follows the reply it shows.
  useEffect(() => {
    if (sentPrompt !== null) setPrompt(sentPrompt);
    if (sentDelay !== null) setDelayMs(delayOf(sentDelay));
  }, [runId, sentPrompt, sentDelay]);

  async function send(event?: FormEvent, text = prompt) {
    event?.preventDefault();
    await run(async () => {
      const started = await triggerRun("chat", { prompt: text, tokenSeconds: delayMs / 1000 });
      window.location.hash = chatHash("chat", started.runId, started.publicAccessToken, { prompt: text, delayMs });
    });
  }

  return (
    <div className="page">
      <section className="intro">
        <h1>Chat</h1>
        <p>
          A Python task answers with a pretend model that writes one word every few dozen milliseconds
          (an OpenAI-compatible model when <code>OPENAI_BASE_URL</code> and <code>OPENAI_API_KEY</code> are set),
          appending each token to the run's output stream <code>"ai"</code>. This page renders the reply as it
          arrives with <code>useRealtimeStream</code>. Reload mid-reply: the run is in the URL, so the page reads
          the stream again from its first chunk, and shows each word once.
        </p>
      </section>

      <div className="columns">
        <form className="card form" onSubmit={(event) => void send(event)} aria-label="Ask the chat task">
          <label className="field">
            <span>Prompt</span>
            <textarea
              className="chat-prompt"
              value={prompt}
              onChange={(event) => setPrompt(event.target.value)}
              data-testid="chat-prompt"
              required
            />
          </label>
          <div className="chat-suggestions">
            {SUGGESTIONS.map((text) => (
              <button
                key={text}
                type="button"
                className="button button-quiet"
                disabled={busy}
                onClick={() => {
                  setPrompt(text);
                  void send(undefined, text);
                }}
              >
                {text}
              </button>
            ))}
          </div>
          <label className="field">
            <span>Delay per token (ms)</span>
            <input
              type="number"
              min={0}
              max={MAX_DELAY_MS}
              step={5}
              value={delayMs}
              onChange={(event) => setDelayMs(Number(event.target.value) || 0)}
              data-testid="chat-delay"
            />
          </label>
          <div className="actions">
            <button type="submit" className="button button-primary" disabled={busy} data-testid="chat-send">
              {busy ? "Sending…" : "Send"}
            </button>
          </div>
          <ErrorCallout message={failure} testId="chat-trigger-error" />
          {runId && token && (
            <p className="chat-links">
              Same run in the{" "}
              <a href={chatHash("official", runId, token)} data-testid="chat-open-official">
                official useRealtimeStream
              </a>
              .
            </p>
          )}
        </form>

        {runId && token ? (
          <LiveReply key={`${runId}\n${token}`} runId={runId} token={token} />
        ) : (
          <EmptyRunCard testId="chat-empty" title="No conversation yet.">
            Send a prompt to watch the reply stream in, token by token.
          </EmptyRunCard>
        )}
      </div>

      <Code title="What this page does">{`
# examples/demo/tasks.py
ai = streams.define("ai")

@task(id="chat")
async def chat(payload):
    piped = ai.pipe(model(payload["prompt"]))   # each token becomes one chunk of the stream
    async for token in piped: ...
    await piped.wait_until_complete()

// ChatPage.tsx
import { useRealtimeStream } from "@realtime-bridge/react-hooks";

const { parts, error } = useRealtimeStream<string>(runId, "ai", { accessToken: publicAccessToken });
parts.join("");   // the reply so far; re-rendered at most every 16 ms (throttleInMs)
`}</Code>
    </div>
  );
}
