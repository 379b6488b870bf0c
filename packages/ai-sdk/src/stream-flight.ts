import type { LanguageModelV4StreamPart, LanguageModelV4StreamResult } from '@ai-sdk/provider';

/** What a stored stream holds: every part in order, when it arrived, and the call's transport metadata. */
export interface StreamRecording {
  parts: LanguageModelV4StreamPart[];
  /** Milliseconds from the start of the upstream call to each part, for `pacing: 'recorded'`. */
  times: number[];
  request?: { url?: string };
  response?: { headers?: Record<string, string> };
}

export type StreamMeta = Pick<LanguageModelV4StreamResult, 'request' | 'response'>;

/** How a flight ended. Only `complete` recordings are candidates for storage. */
export type FlightOutcome =
  | { kind: 'complete'; recording: StreamRecording }
  | { kind: 'incomplete'; reason: 'error-part' | 'no-finish' | 'stream-error' | 'call-error' | 'abandoned' };

/** Receives the flight's parts; the recorded prefix first, then live ones. */
export interface FlightSink {
  push(part: LanguageModelV4StreamPart): void;
  close(): void;
  fail(error: unknown): void;
}

const noop = (): void => {};

/**
 * One upstream `doStream` call shared by every caller of the same key. The upstream is read by
 * the flight itself, as fast as it produces, and fanned out to each subscriber's own queue: no
 * caller's reading pace (or a caller that stopped reading without cancelling, which `streamText`'s
 * internal buffering makes common) can hold the others back. The upstream call is cancelled only
 * when every subscriber has left, so one caller's abort never cuts another caller's stream.
 */
export class StreamFlight {
  readonly parts: LanguageModelV4StreamPart[] = [];
  readonly times: number[] = [];
  state: 'starting' | 'streaming' | 'done' | 'errored' | 'abandoned' = 'starting';
  error: unknown;
  meta: StreamMeta | undefined;
  /** Settles when the upstream call answered (or failed, or every caller left first). */
  readonly started: Promise<StreamMeta>;
  /** Settles once, with how the flight ended; never rejects. */
  readonly finished: Promise<FlightOutcome>;
  readonly #sinks = new Set<FlightSink>();
  readonly #controller = new AbortController();
  readonly #startedAt: number;
  #reader: ReadableStreamDefaultReader<LanguageModelV4StreamPart> | undefined;
  #sawErrorPart = false;
  #resolveStarted!: (meta: StreamMeta) => void;
  #rejectStarted!: (error: unknown) => void;
  #resolveFinished!: (outcome: FlightOutcome) => void;

  constructor(call: (signal: AbortSignal) => PromiseLike<LanguageModelV4StreamResult>) {
    this.#startedAt = performance.now();
    this.started = new Promise<StreamMeta>((resolve, reject) => {
      this.#resolveStarted = resolve;
      this.#rejectStarted = reject;
    });
    // Callers await `started` when they need it; an unobserved rejection is not an error here.
    this.started.catch(noop);
    this.finished = new Promise<FlightOutcome>((resolve) => {
      this.#resolveFinished = resolve;
    });
    void this.#pump(call);
  }

  /**
   * Whether an identical call may still join: not once every caller left, and not once the
   * upstream failed or sent an error part (a retry must reach the model, not replay the error).
   */
  get joinable(): boolean {
    return (
      (this.state === 'starting' || this.state === 'streaming' || this.state === 'done') &&
      !this.#sawErrorPart
    );
  }

  get subscribers(): number {
    return this.#sinks.size;
  }

  /** Adds a subscriber and hands it everything recorded so far. False when the flight was abandoned. */
  subscribe(sink: FlightSink): boolean {
    if (this.state === 'abandoned') return false;
    for (const part of this.parts) sink.push(part);
    if (this.state === 'done') sink.close();
    else if (this.state === 'errored') sink.fail(this.error);
    else this.#sinks.add(sink);
    return true;
  }

  /** Removes a subscriber; the last one to leave an unfinished flight cancels the upstream call. */
  detach(sink: FlightSink, reason: unknown): void {
    if (!this.#sinks.delete(sink)) return;
    if (this.#sinks.size === 0 && (this.state === 'starting' || this.state === 'streaming')) {
      this.#abandon(reason);
    }
  }

  #abandon(reason: unknown): void {
    this.state = 'abandoned';
    this.#controller.abort(reason);
    this.#reader?.cancel(reason).catch(noop);
    this.#rejectStarted(reason);
    this.#resolveFinished({ kind: 'incomplete', reason: 'abandoned' });
  }

  async #pump(call: (signal: AbortSignal) => PromiseLike<LanguageModelV4StreamResult>): Promise<void> {
    let result: LanguageModelV4StreamResult;
    try {
      result = await call(this.#controller.signal);
    } catch (error) {
      if (this.state === 'abandoned') return;
      this.#fail(error, 'call-error');
      this.#rejectStarted(error);
      return;
    }
    if (this.state === 'abandoned') {
      result.stream.cancel(this.#controller.signal.reason).catch(noop);
      return;
    }
    this.meta = { request: result.request, response: result.response };
    this.state = 'streaming';
    this.#resolveStarted(this.meta);
    const reader = result.stream.getReader();
    this.#reader = reader;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.#abandoned()) return;
        if (done) break;
        this.parts.push(value);
        this.times.push(Math.round(performance.now() - this.#startedAt));
        if (value.type === 'error') this.#sawErrorPart = true;
        for (const sink of [...this.#sinks]) guarded(() => sink.push(value));
      }
    } catch (error) {
      if (this.#abandoned()) return;
      this.#fail(error, 'stream-error');
      return;
    }
    this.state = 'done';
    const sinks = [...this.#sinks];
    this.#sinks.clear();
    for (const sink of sinks) guarded(() => sink.close());
    this.#resolveFinished(this.#outcome(result));
  }

  /** A method, so that TypeScript does not narrow `state` across the awaits that may change it. */
  #abandoned(): boolean {
    return this.state === 'abandoned';
  }

  #fail(error: unknown, reason: 'call-error' | 'stream-error'): void {
    this.state = 'errored';
    this.error = error;
    const sinks = [...this.#sinks];
    this.#sinks.clear();
    for (const sink of sinks) guarded(() => sink.fail(error));
    this.#resolveFinished({ kind: 'incomplete', reason });
  }

  #outcome(result: LanguageModelV4StreamResult): FlightOutcome {
    if (this.#sawErrorPart) return { kind: 'incomplete', reason: 'error-part' };
    if (!this.parts.some((part) => part.type === 'finish'))
      return { kind: 'incomplete', reason: 'no-finish' };
    const recording: StreamRecording = { parts: this.parts, times: this.times };
    // Raw bodies are left out: they repeat the prompt and the output and can be large.
    if (result.request?.url !== undefined) recording.request = { url: result.request.url };
    if (result.response?.headers !== undefined) recording.response = { headers: result.response.headers };
    return { kind: 'complete', recording };
  }
}

function guarded(run: () => void): void {
  try {
    run();
  } catch {
    // A subscriber whose stream is already closed or errored just misses the part.
  }
}
