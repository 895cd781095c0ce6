"use client";
import React from "react";

/** What `TriggerAuthContext` carries: the same keys as the official context's for these hooks. */
export type TriggerAuthContextValue = {
  /** The token the hooks send (a public access token, a trigger token or a secret key). */
  accessToken?: string;
  /** The bridge's URL, e.g. "https://bridge.example.com". There is no default. */
  baseURL?: string;
  /** Mints a fresh token when the bridge rejects an expired one (realtime hooks). */
  refreshAccessToken?: () => Promise<string>;
};

/**
 * Provides `accessToken` and `baseURL` to every hook below it, as the official
 * `TriggerAuthContext` does:
 *
 * ```tsx
 * <TriggerAuthContext.Provider value={{ accessToken, baseURL: "https://bridge.example.com" }}>
 * ```
 */
export const TriggerAuthContext = React.createContext<TriggerAuthContextValue | undefined>(
  undefined,
);
TriggerAuthContext.displayName = "TriggerAuthContext";

/** The context's value; throws outside a `TriggerAuthContext.Provider`. */
export function useTriggerAuthContext(): TriggerAuthContextValue {
  const value = React.useContext(TriggerAuthContext);
  if (!value) throw new Error("TriggerAuthContext not found");
  return value;
}

/** The context's value, or `{}` outside a provider. */
export function useTriggerAuthContextOptional(): TriggerAuthContextValue {
  return React.useContext(TriggerAuthContext) ?? {};
}
