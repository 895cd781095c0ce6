import { cleanup, configure } from "@testing-library/react";
import { afterEach } from "vitest";
import { configureRealtimeClients, resetRealtimeClients } from "../src/index.js";

// Short delays so the tests run fast; the behaviour is the same as with the defaults.
configureRealtimeClients({
  reconnectInitialDelayMs: 20,
  reconnectMaxDelayMs: 100,
  socketLingerMs: 30,
  subscriptionLingerMs: 10,
  pingIntervalMs: 0,
});

// Waits end as soon as their condition holds; this is only the give-up time on a slow machine.
configure({ asyncUtilTimeout: 5000 });

afterEach(() => {
  cleanup();
  resetRealtimeClients();
});
