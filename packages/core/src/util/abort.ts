/**
 * `promise`, or a rejection with the signal's reason as soon as the signal aborts: a caller that
 * waits on work it shares with others (a coalesced fetch, a joined model call) can still give up
 * on its own, while the shared work goes on for the rest.
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * What the callers that joined a computation see when its first caller aborted it (with whatever
 * reason): the abort was that caller's, so they ask again with their own signal. The first caller
 * rethrows `reason`, the error its abort caused.
 */
export class LeaderAborted extends Error {
  readonly reason: unknown;
  constructor(reason: unknown) {
    super('the call this one joined was aborted by its own caller');
    this.name = 'LeaderAborted';
    this.reason = reason;
  }
}

/** Wraps an error of a shared computation that its first caller's own abort caused. */
export function leaderError(error: unknown, signal: AbortSignal | undefined): unknown {
  return signal?.aborted ? new LeaderAborted(error) : error;
}
