import { useLayoutEffect, useRef, type MutableRefObject } from "react";

/** A ref that always holds the latest value: inline callbacks are read through it, so passing a new
 * function on every render does not resubscribe. */
export function useLatest<T>(value: T): MutableRefObject<T> {
  const ref = useRef(value);
  // Layout effect: updated before any effect of this render runs (and not during render, which
  // concurrent React may discard).
  const isBrowser = typeof window !== "undefined";
  (isBrowser ? useLayoutEffect : noEffect)(() => {
    ref.current = value;
  });
  return ref;
}

function noEffect(): void {}
