import { version } from "react";
import { version as domVersion } from "react-dom";
import { expect, test } from "vitest";

test("runs on the React this project selects", () => {
  const project = (globalThis as { __vitest_worker__?: { ctx?: { projectName?: string } } }).__vitest_worker__?.ctx?.projectName;
  const major = project === "react-18" ? "18." : "19.";
  expect(version.startsWith(major)).toBe(true);
  expect(domVersion.startsWith(major)).toBe(true);
});
