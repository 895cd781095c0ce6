import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RunPage } from "./RunPage";

// The run to show comes from the page's URL: `?run=<id>&token=<public token>[&base=<bridge URL>]`
// (or the same after `#`). Without `base`, the bridge is the page's own origin.
const hash = window.location.hash.replace(/^#\/?\??/, "");
const params = new URLSearchParams(window.location.search || hash);

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <RunPage
      runId={params.get("run") ?? undefined}
      accessToken={params.get("token") ?? undefined}
      baseURL={params.get("base") ?? window.location.origin}
    />
  </StrictMode>,
);
