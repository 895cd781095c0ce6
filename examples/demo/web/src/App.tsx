import { lazy, Suspense, useEffect, useState } from "react";
import { ApprovalPage } from "./pages/ApprovalPage";
import { ChatPage } from "./pages/ChatPage";
import { DashboardPage } from "./pages/DashboardPage";
import { ReviewPage } from "./pages/ReviewPage";
import { RunPage } from "./pages/RunPage";
import { TenHooksPage } from "./pages/TenHooksPage";
import { useSocketStats, type ConnectionState } from "./socketMonitor";

// The official hooks (and @trigger.dev/core) only load when their page is opened.
const OfficialPage = lazy(() => import("./pages/OfficialPage"));

const PAGES = [
  { path: "run", label: "Run" },
  { path: "dashboard", label: "Dashboard" },
  { path: "ten", label: "Ten hooks" },
  { path: "chat", label: "Chat" },
  { path: "approval", label: "Approval" },
  { path: "review", label: "Review" },
  { path: "official", label: "Official hooks" },
] as const;

type Route = { path: string; params: URLSearchParams };

/** "#/dashboard?tag=demo" -> { path: "dashboard", params: tag=demo }. No router needed for a handful of pages. */
function readRoute(): Route {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?", 2);
  const known = PAGES.some((page) => page.path === path);
  return { path: known ? path : "run", params: new URLSearchParams(query) };
}

function useRoute(): Route {
  const [route, setRoute] = useState(readRoute);
  useEffect(() => {
    const onChange = () => setRoute(readRoute());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  idle: "Idle",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

function Connection() {
  const { state } = useSocketStats();
  return (
    <div
      className={`connection connection-${state}`}
      data-testid="connection"
      data-state={state}
      title="The bridge WebSocket that this page's hooks share"
    >
      <span className="connection-dot" aria-hidden="true" />
      {CONNECTION_LABELS[state]}
    </div>
  );
}

export function App() {
  const route = useRoute();
  useEffect(() => {
    const label = PAGES.find((page) => page.path === route.path)?.label;
    document.title = `${label} · realtime-bridge demo`;
  }, [route.path]);

  return (
    <>
      <header className="topbar">
        <div className="topbar-inner">
          <a className="brand" href="#/run">
            <span className="brand-mark" aria-hidden="true">
              <svg viewBox="0 0 32 32" width="22" height="22">
                <path
                  d="M6 17h6l2.5-7 4 14 2.5-7H26"
                  stroke="currentColor"
                  strokeWidth="2.6"
                  fill="none"
                  strokeLinecap="round"
                  strokeLinejoin="round"
                />
              </svg>
            </span>
            realtime-bridge <span className="brand-tag">demo</span>
          </a>
          <nav className="tabs" aria-label="Pages">
            {PAGES.map((page) => (
              <a
                key={page.path}
                href={`#/${page.path}`}
                className={route.path === page.path ? "tab active" : "tab"}
                aria-current={route.path === page.path ? "page" : undefined}
                data-testid={`nav-${page.path}`}
              >
                {page.label}
              </a>
            ))}
          </nav>
          <Connection />
        </div>
      </header>
      <main>
        {route.path === "run" && <RunPage />}
        {route.path === "dashboard" && <DashboardPage tag={route.params.get("tag") || "demo"} />}
        {route.path === "ten" && <TenHooksPage />}
        {route.path === "chat" && (
          <ChatPage
            runId={route.params.get("run")}
            token={route.params.get("token")}
            sentPrompt={route.params.get("prompt")}
            sentDelay={route.params.get("delay")}
          />
        )}
        {route.path === "approval" && (
          <ApprovalPage runId={route.params.get("run")} token={route.params.get("token")} />
        )}
        {route.path === "review" && (
          <ReviewPage runId={route.params.get("run")} token={route.params.get("token")} />
        )}
        {route.path === "official" && (
          <Suspense fallback={<div className="page placeholder">Loading the official hooks…</div>}>
            <OfficialPage chatRunId={route.params.get("run")} chatToken={route.params.get("token")} />
          </Suspense>
        )}
      </main>
      <footer className="footer">
        Python tasks in <code>examples/demo/tasks.py</code> · backend in <code>examples/demo/app.py</code> · this page
        in <code>examples/demo/web</code>
      </footer>
    </>
  );
}
