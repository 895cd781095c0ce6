import { afterEach, beforeEach } from "vitest";
import { FakeBridge } from "./fakeBridge.js";

/**
 * Gives every test of the calling file a fresh FakeBridge: started before each test (and handed to
 * `use`, which keeps it in the file's `bridge`), closed after it.
 *
 *   let bridge: FakeBridge;
 *   useFakeBridge((started) => (bridge = started));
 */
export function useFakeBridge(use: (bridge: FakeBridge) => void): void {
  let bridge: FakeBridge;
  beforeEach(async () => {
    bridge = await FakeBridge.start();
    use(bridge);
  });
  afterEach(async () => {
    await bridge.close();
  });
}
