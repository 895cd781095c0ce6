import {
  configureRealtimeClients,
  TriggerAuthContext,
  type WebSocketConstructor,
} from "@realtime-bridge/react-hooks";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { baseURL } from "./api";
import { App } from "./App";
import { MonitoredWebSocket } from "./socketMonitor";
import "./styles.css";

// The hooks' sockets, observed for the header and the "Ten hooks" page (see socketMonitor.ts).
configureRealtimeClients({ WebSocket: MonitoredWebSocket as unknown as WebSocketConstructor });

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    {/* Every hook below finds the bridge here; each passes its own accessToken. */}
    <TriggerAuthContext.Provider value={{ baseURL }}>
      <App />
    </TriggerAuthContext.Provider>
  </StrictMode>,
);
