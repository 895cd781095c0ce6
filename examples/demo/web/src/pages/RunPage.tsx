import { useRealtimeRun, useTaskTrigger } from "@realtime-bridge/react-hooks";
import { useEffect, useState, type FormEvent } from "react";
import { cancelRun, triggerRun, triggerToken, type StartedRun } from "../api";
import { Code } from "../components/Code";
import { EmptyRunCard, ErrorCallout } from "../components/Placeholders";
import { RunDetails } from "../components/RunDetails";
import type { DraftEmail, DraftEmailPayload } from "../runs";
import { useAction } from "../components/useAction";

type Mode = "backend" | "browser";

/** Watches one run with the bridge's `useRealtimeRun`; remounted (by key) for every new run. */
function LiveRun({ started }: { started: StartedRun }) {
  const [completions, setCompletions] = useState(0);
  const { run, error } = useRealtimeRun<DraftEmail>(started.runId, {
    accessToken: started.publicAccessToken,
    onComplete: () => setCompletions((count) => count + 1),
  });
  return (
    <RunDetails
      run={run}
      error={error}
      completions={completions}
      onCancel={() => void cancelRun(started.runId)}
    />
  );
}

export function RunPage() {
  const [to, setTo] = useState("ada@example.com");
  const [mode, setMode] = useState<Mode>("backend");
  const [started, setStarted] = useState<StartedRun>();
  const { busy, failure, setFailure, run } = useAction();

  // The browser path: on click, the backend mints a one-time trigger token; useTaskTrigger then
  // sends the trigger from the page with it. A one-time token is good for one trigger only.
  const [pending, setPending] = useState<DraftEmailPayload>();
  const [token, setToken] = useState<string>();
  const browserTrigger = useTaskTrigger<DraftEmail>("draft-email", { accessToken: token, enabled: !!token });
  const submitFromPage = browserTrigger.submit;
  useEffect(() => {
    if (!token || !pending) return;
    submitFromPage(pending, { tags: ["demo"] });
    setPending(undefined);
    setToken(undefined); // used up
  }, [token, pending, submitFromPage]);
  const handle = browserTrigger.handle;
  useEffect(() => {
    if (handle) setStarted({ runId: handle.id, publicAccessToken: handle.publicAccessToken });
  }, [handle]);

  async function start(task: string, payload: unknown) {
    await run(async () => {
      setStarted(await triggerRun(task, payload));
    });
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    setFailure(undefined);
    if (mode === "backend") return void start("draft-email", { to });
    setPending({ to });
    triggerToken("draft-email").then(setToken, (error: Error) => {
      setPending(undefined);
      setFailure(error.message);
    });
  }

  const waiting = busy || !!pending || browserTrigger.isLoading;
  const error = failure ?? (mode === "browser" ? browserTrigger.error?.message : undefined);

  return (
    <div className="page">
      <section className="intro">
        <h1>Draft an email</h1>
        <p>
          A Python task drafts an email in four steps, writing its progress to the run's metadata. This page
          follows the run over the bridge's WebSocket with <code>useRealtimeRun</code>.
        </p>
      </section>

      <div className="columns">
        <form className="card form" onSubmit={submit} aria-label="Trigger a run">
          <label className="field">
            <span>Recipient</span>
            <input
              type="email"
              value={to}
              onChange={(event) => setTo(event.target.value)}
              data-testid="recipient"
              required
            />
          </label>

          <fieldset className="field">
            <legend>Trigger from</legend>
            <div className="segmented" role="radiogroup">
              <label className={mode === "backend" ? "selected" : ""}>
                <input
                  type="radio"
                  name="mode"
                  value="backend"
                  checked={mode === "backend"}
                  onChange={() => setMode("backend")}
                />
                Your backend
              </label>
              <label className={mode === "browser" ? "selected" : ""}>
                <input
                  type="radio"
                  name="mode"
                  value="browser"
                  checked={mode === "browser"}
                  onChange={() => setMode("browser")}
                  data-testid="mode-browser"
                />
                This page
              </label>
            </div>
            <p className="hint">
              {mode === "backend"
                ? "POST /demo/api/runs: the backend calls tasks.trigger() and returns the run's token."
                : "GET /demo/api/tokens/trigger mints a one-time trigger token; useTaskTrigger sends the trigger."}
            </p>
          </fieldset>

          <div className="actions">
            <button type="submit" className="button button-primary" disabled={waiting} data-testid="trigger">
              {waiting ? "Starting…" : "Draft email"}
            </button>
            <button
              type="button"
              className="button"
              disabled={busy}
              onClick={() => void start("always-fails", {})}
              data-testid="trigger-failing"
            >
              Trigger a failing run
            </button>
          </div>
          <ErrorCallout message={error} testId="trigger-error" />
        </form>

        {started ? (
          <LiveRun key={started.runId} started={started} />
        ) : (
          <EmptyRunCard testId="run-empty" title="No run yet.">
            Draft an email to watch its run here, live.
          </EmptyRunCard>
        )}
      </div>

      <Code title="What this page does">{`
import { useRealtimeRun } from "@realtime-bridge/react-hooks";

const { runId, publicAccessToken } = await fetch("/demo/api/runs", { method: "POST", body }).then((r) => r.json());

const { run, error } = useRealtimeRun<DraftEmail>(runId, {
  accessToken: publicAccessToken,      // baseURL comes from <TriggerAuthContext.Provider>
  onComplete: () => setCompletions((n) => n + 1),
});
run?.status;             // "QUEUED" → "EXECUTING" → "COMPLETED"
run?.metadata?.progress; // 0.25, 0.5, … set by metadata.set("progress", …) in Python
`}</Code>
    </div>
  );
}
