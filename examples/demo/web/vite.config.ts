import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `npm run build` writes dist/, which `python -m examples.demo` serves at "/".
// `npm run dev` serves the page with hot reload and forwards the bridge's routes to a demo server
// on :8787 (start it with `bash scripts/run` or `.venv/bin/python -m examples.demo`).
const bridge = process.env.DEMO_SERVER ?? "http://127.0.0.1:8787";

export default defineConfig({
  plugins: [react()],
  resolve: {
    // @realtime-bridge/react-hooks is linked from js-hooks/ (a `file:` dependency), which has its
    // own React for its tests: the page must use one React, its own.
    dedupe: ["react", "react-dom"],
  },
  build: {
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      onwarn(warning, warn) {
        // Noise from the official hooks' dependencies (zod's comments, an optional Node-only
        // transport in @s2-dev/streamstore), not from the demo.
        const fromDependency = /[\\/]node_modules[\\/]/.test(warning.id ?? warning.message);
        if (fromDependency && (warning.code === "INVALID_ANNOTATION" || warning.plugin === "vite:resolve")) return;
        warn(warning);
      },
    },
  },
  server: {
    proxy: {
      "/demo/api": bridge,
      "/api": bridge,
      "/realtime": bridge,
      "/ws": { target: bridge.replace(/^http/, "ws"), ws: true },
    },
  },
});
