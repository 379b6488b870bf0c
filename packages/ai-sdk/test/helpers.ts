import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4FinishReason,
  LanguageModelV4GenerateResult,
  LanguageModelV4StreamPart,
  LanguageModelV4Usage,
} from '@ai-sdk/provider';
import { simulateReadableStream } from 'ai';
import { MockLanguageModelV4 } from 'ai/test';

// The SDK logs provider warnings to the console; the tests assert on them instead.
(globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;

export function usage(input: number, output: number): LanguageModelV4Usage {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: output, text: output, reasoning: 0 },
  };
}

export function finish(
  unified: LanguageModelV4FinishReason['unified'] = 'stop',
): LanguageModelV4FinishReason {
  return { unified, raw: unified };
}

export function generateResult(
  content: LanguageModelV4Content[],
  extra: Partial<LanguageModelV4GenerateResult> = {},
): LanguageModelV4GenerateResult {
  return {
    content,
    finishReason: finish('stop'),
    usage: usage(10, 20),
    warnings: [],
    response: { id: 'resp-1', modelId: 'mock-model-id', timestamp: new Date('2025-01-02T03:04:05.678Z') },
    ...extra,
  };
}

/** A model whose every generate call answers with `respond(call, callIndex)`. */
export function generateModel(
  respond: (
    call: LanguageModelV4CallOptions,
    index: number,
  ) => LanguageModelV4GenerateResult | Promise<LanguageModelV4GenerateResult>,
  ids: { provider?: string; modelId?: string } = {},
): MockLanguageModelV4 {
  const model: MockLanguageModelV4 = new MockLanguageModelV4({
    ...ids,
    doGenerate: async (call) => respond(call, model.doGenerateCalls.length - 1),
  });
  return model;
}

export function textResult(text: string, extra: Partial<LanguageModelV4GenerateResult> = {}) {
  return generateResult([{ type: 'text', text }], extra);
}

export function textParts(
  deltas: string[],
  options: { input?: number; output?: number; reason?: LanguageModelV4FinishReason['unified'] } = {},
): LanguageModelV4StreamPart[] {
  return [
    { type: 'stream-start', warnings: [] },
    {
      type: 'response-metadata',
      id: 'resp-s',
      modelId: 'mock-model-id',
      timestamp: new Date('2025-01-02T03:04:05.678Z'),
    },
    { type: 'text-start', id: 't1' },
    ...deltas.map((delta): LanguageModelV4StreamPart => ({ type: 'text-delta', id: 't1', delta })),
    { type: 'text-end', id: 't1' },
    {
      type: 'finish',
      finishReason: finish(options.reason ?? 'stop'),
      usage: usage(options.input ?? 7, options.output ?? 11),
    },
  ];
}

/** A model whose stream calls replay `parts(callIndex)` without delay. */
export function streamModel(
  parts: (call: LanguageModelV4CallOptions, index: number) => LanguageModelV4StreamPart[],
  ids: { provider?: string; modelId?: string } = {},
): MockLanguageModelV4 {
  const model: MockLanguageModelV4 = new MockLanguageModelV4({
    ...ids,
    doStream: async (call) => ({
      stream: simulateReadableStream({
        chunks: parts(call, model.doStreamCalls.length - 1),
        initialDelayInMs: null,
        chunkDelayInMs: null,
      }),
      response: { headers: { 'x-request-id': 'abc' } },
    }),
  });
  return model;
}

/** A stream the test feeds part by part, to observe what happens while it is still open. */
export class ManualStream {
  readonly stream: ReadableStream<LanguageModelV4StreamPart>;
  cancelled: unknown = undefined;
  wasCancelled = false;
  #controller!: ReadableStreamDefaultController<LanguageModelV4StreamPart>;

  constructor() {
    this.stream = new ReadableStream({
      start: (controller) => {
        this.#controller = controller;
      },
      cancel: (reason) => {
        this.wasCancelled = true;
        this.cancelled = reason;
      },
    });
  }

  push(...parts: LanguageModelV4StreamPart[]): void {
    for (const part of parts) this.#controller.enqueue(part);
  }

  close(): void {
    this.#controller.close();
  }

  error(error: unknown): void {
    this.#controller.error(error);
  }
}

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'ai-sdk-cache-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Resolves once `check()` holds, polling the event loop (never the wall clock). */
export async function until(check: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (check()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting for ${what}`);
}
