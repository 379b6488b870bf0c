import type { LanguageModelV4StreamPart } from '@ai-sdk/provider';
import { CacheError } from '@x/cache-core';
import { invalidOption } from './options.ts';
import type { FlightSink, StreamFlight, StreamRecording } from './stream-flight.ts';

type Part = LanguageModelV4StreamPart;

/**
 * The longest delay Node's timers honour (about 24.8 days): a longer one fires after 1 ms, which
 * would cut a joiner off at once or replay a paced stream unpaced. Every timer here is armed
 * with `timerMs(ms)`, so a longer `joinTimeout` or `delayMs` means "practically never".
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** A delay a timer can be armed with: `ms` capped at {@link MAX_TIMER_MS}. */
export function timerMs(ms: number): number {
  return Math.min(MAX_TIMER_MS, ms);
}

/**
 * How a cached stream is replayed: `'instant'` (every part as fast as the consumer reads),
 * `'recorded'` (the gaps the original stream had), or a fixed `{ delayMs }` between parts.
 */
export type ReplayPacing = 'instant' | 'recorded' | { delayMs: number };

export function validatePacing(pacing: ReplayPacing): ReplayPacing {
  if (pacing === 'instant' || pacing === 'recorded') return pacing;
  if (
    typeof pacing === 'object' &&
    pacing !== null &&
    typeof pacing.delayMs === 'number' &&
    Number.isFinite(pacing.delayMs) &&
    pacing.delayMs >= 0
  ) {
    // A delay past MAX_TIMER_MS is clamped to it where the timer is armed.
    return pacing;
  }
  throw invalidOption(
    `pacing must be 'instant', 'recorded' or { delayMs: <non-negative number> }, got ${JSON.stringify(pacing)}`,
  );
}

/** Replays a recording part by part with its original chunk boundaries. */
export function replayStream(
  recording: StreamRecording,
  pacing: ReplayPacing,
  transform: (part: Part) => Part,
  signal: AbortSignal | undefined,
): ReadableStream<Part> {
  const { parts, times } = recording;
  let index = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let wake: (() => void) | undefined;
  const gap = (at: number): number => {
    if (pacing === 'instant') return 0;
    // The recorded pace includes the wait for the first part (the model's time to first token).
    if (pacing === 'recorded') return Math.max(0, (times[at] ?? 0) - (at === 0 ? 0 : (times[at - 1] ?? 0)));
    return at === 0 ? 0 : pacing.delayMs;
  };
  let onAbort: (() => void) | undefined;
  const stop = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    wake?.();
    // A long-lived signal (a server's shutdown signal) must not collect one listener per hit.
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    onAbort = undefined;
  };
  return new ReadableStream<Part>(
    {
      start(controller) {
        if (!signal) return;
        if (signal.aborted) {
          controller.error(signal.reason);
          return;
        }
        onAbort = () => {
          stop();
          try {
            controller.error(signal.reason);
          } catch {
            // already closed
          }
        };
        signal.addEventListener('abort', onAbort, { once: true });
      },
      async pull(controller) {
        const wait = gap(index);
        if (wait > 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
            timer = setTimeout(resolve, timerMs(wait));
          });
          wake = undefined;
          if (signal?.aborted) return;
        }
        const part = parts[index++];
        if (part !== undefined) controller.enqueue(transform(part));
        if (index >= parts.length) {
          stop();
          controller.close();
        }
      },
      cancel() {
        stop();
      },
    },
    // Pull one part at a time so that a paced replay waits for the consumer instead of racing ahead.
    { highWaterMark: 0 },
  );
}

export interface SubscriberOptions {
  signal: AbortSignal | undefined;
  transform: (part: Part) => Part;
  /** Joiners only: how long the shared stream may go without a part before this caller leaves it. */
  idleTimeoutMs?: number | undefined;
  /** Joiners only: the caller's own upstream stream, used when the shared one stalls before any part. */
  fallback?: (() => ReadableStream<Part>) | undefined;
}

/**
 * A caller's view of a flight: everything recorded so far at once, then the live parts. Parts are
 * queued without back-pressure, because the flight must never wait for one slow caller.
 */
export function subscriberStream(flight: StreamFlight, options: SubscriberOptions): ReadableStream<Part> {
  const { signal, transform, idleTimeoutMs, fallback } = options;
  let controller!: ReadableStreamDefaultController<Part>;
  let forwarded = 0;
  let ended = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let fallbackReader: ReadableStreamDefaultReader<Part> | undefined;

  const safely = (run: () => void): void => {
    try {
      run();
    } catch {
      // the consumer already closed or errored this stream
    }
  };
  const arm = (): void => {
    if (idleTimeoutMs === undefined || ended) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(onStall, timerMs(idleTimeoutMs));
  };
  const end = (): void => {
    ended = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    signal?.removeEventListener('abort', onAbort);
  };
  const sink: FlightSink = {
    push(part) {
      if (ended) return;
      forwarded++;
      arm();
      controller.enqueue(transform(part));
    },
    close() {
      if (ended) return;
      end();
      safely(() => controller.close());
    },
    fail(error) {
      if (ended) return;
      end();
      safely(() => controller.error(error));
    },
  };
  function onAbort(): void {
    if (ended) return;
    end();
    flight.detach(sink, signal?.reason);
    safely(() => controller.error(signal?.reason));
  }
  function onStall(): void {
    if (ended) return;
    const stalled = new CacheError(
      'E_TIMEOUT',
      `[@x/ai-sdk-cache] the shared stream this call joined sent nothing for ${idleTimeoutMs} ms — ` +
        'raise joinTimeout, or pass providerOptions.xCache.noCache to call the model directly',
    );
    end();
    flight.detach(sink, stalled);
    if (forwarded === 0 && fallback) {
      void pipeFallback(fallback());
      return;
    }
    safely(() => controller.enqueue({ type: 'error', error: stalled }));
    safely(() => controller.close());
  }
  async function pipeFallback(stream: ReadableStream<Part>): Promise<void> {
    const reader = stream.getReader();
    fallbackReader = reader;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        controller.enqueue(value);
      }
      safely(() => controller.close());
    } catch (error) {
      safely(() => controller.error(error));
    }
  }

  return new ReadableStream<Part>({
    start(c) {
      controller = c;
      if (signal?.aborted) {
        ended = true;
        c.error(signal.reason);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      arm();
      if (!flight.subscribe(sink)) {
        end();
        c.error(new Error('[@x/ai-sdk-cache] internal: subscribed to an abandoned stream'));
      }
    },
    cancel(reason) {
      if (fallbackReader) return fallbackReader.cancel(reason);
      if (ended) return;
      end();
      flight.detach(sink, reason);
    },
  });
}
