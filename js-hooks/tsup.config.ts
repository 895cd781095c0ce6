import { defineConfig } from "tsup";

export default defineConfig({
  // "testing": the Node-only Playwright helper (`@realtime-bridge/react-hooks/testing`).
  entry: { index: "src/index.ts", testing: "src/testing/index.ts" },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "es2020",
  external: ["react"],
  // Next.js app router: these are client hooks.
  banner: { js: '"use client";' },
});
