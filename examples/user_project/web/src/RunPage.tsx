import { useInputStreamSend, useRealtimeRun, useRealtimeStream, useWaitToken } from "@realtime-bridge/react-hooks";

type Props = { runId: string | undefined; accessToken: string | undefined; baseURL: string };

/** One run, live: its status, its streamed text with a Cancel button, and an Approve button when it waits on a token. */
export function RunPage({ runId, accessToken, baseURL }: Props) {
  const { run, error } = useRealtimeRun(runId, { accessToken, baseURL });
  const { parts } = useRealtimeStream<string>(runId, "text", { accessToken, baseURL });
  const cancel = useInputStreamSend<true>("cancel", runId, { accessToken, baseURL });
  // The task puts its wait token's id and an access token that completes it in the run's metadata.
  const tokenId = run?.metadata?.tokenId as string | undefined;
  const tokenAccess = run?.metadata?.tokenAccess as string | undefined;
  const approval = useWaitToken<{ approved: boolean }>(tokenId, {
    accessToken: tokenAccess,
    baseURL,
    enabled: tokenAccess !== undefined, // until the run has a token, there is nothing to approve
  });

  if (!runId || !accessToken) return <p>Open this page with ?run=…&amp;token=…</p>;
  return (
    <main>
      <p>
        Run {runId}: <span data-testid="status">{run?.status ?? "…"}</span>
      </p>
      {error && <p data-testid="error">{error.message}</p>}
      <p data-testid="text">{parts.join("").trim()}</p>
      <button data-testid="cancel" disabled={!cancel.isReady} onClick={() => cancel.send(true)}>
        Cancel
      </button>
      <button
        data-testid="approve"
        disabled={!approval.isReady || approval.isCompleted}
        onClick={() => approval.complete({ approved: true })}
      >
        Approve
      </button>
      {run?.output !== undefined && <pre data-testid="output">{JSON.stringify(run.output)}</pre>}
    </main>
  );
}
