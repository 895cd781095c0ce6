import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  // @realtime-bridge/react-hooks is linked from js-hooks/ (a `file:` dependency), which has its own
  // React for its tests: the page must use one React, its own.
  resolve: { dedupe: ["react", "react-dom"] },
});
