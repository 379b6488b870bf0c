/** Node fires a timer longer than 2^31 - 1 ms at once (and an interval then every millisecond). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A delay Node's timers honour: `ms` capped at about 24.8 days. */
export function timerMs(ms: number): number {
  return Math.min(MAX_TIMER_MS, ms);
}
