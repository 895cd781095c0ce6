import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const shared = {
  environment: "jsdom",
  include: ["test/**/*.test.{ts,tsx}"],
  setupFiles: ["test/setup.ts"],
  testTimeout: 15_000,
  hookTimeout: 15_000,
};

const react18 = fileURLToPath(new URL("./test/react18/node_modules/", import.meta.url));
const testingLibraryESM = fileURLToPath(
  new URL("./node_modules/@testing-library/react/dist/@testing-library/react.esm.js", import.meta.url),
);

// Every test runs twice: on React 19 (the package's dev React) and on React 18 (the workspace
// test/react18 holds it): the peer range is >=18.
export default defineConfig({
  test: {
    projects: [
      { test: { ...shared, name: "react-19" } },
      {
        resolve: {
          alias: [
            { find: /^react$/, replacement: `${react18}react/index.js` },
            { find: /^react\/(.*)$/, replacement: `${react18}react/$1.js` },
            { find: /^react-dom$/, replacement: `${react18}react-dom/index.js` },
            { find: /^react-dom\/(.*)$/, replacement: `${react18}react-dom/$1.js` },
            // Its ESM build, so that its imports of react and react-dom go through the aliases.
            { find: /^@testing-library\/react$/, replacement: testingLibraryESM },
          ],
        },
        test: {
          ...shared,
          name: "react-18",
          server: { deps: { inline: [/@testing-library\/react/] } },
        },
      },
    ],
  },
});
