"use client";
import { useEffect, useLayoutEffect, useRef, type MutableRefObject } from "react";

const useIsomorphicLayoutEffect = typeof window !== "undefined" ? useLayoutEffect : useEffect;

/** A ref that always holds the latest committed value (for callbacks read from effects). */
export function useLatest<T>(value: T): MutableRefObject<T> {
  const ref = useRef(value);
  useIsomorphicLayoutEffect(() => {
    ref.current = value;
  });
  return ref;
}
