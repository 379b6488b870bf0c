import { join } from 'node:path';
import type {
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4GenerateResult,
} from '@ai-sdk/provider';
import type { Cache, ToolLedger, ToolPolicy } from '@x/cache-core';
import { CacheError, createCache, createToolLedger, toolCallContext } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import type { ToolSet } from 'ai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import type { MockLanguageModelV4 } from 'ai/test';
import { afterEach, describe, expect, expectTypeOf, it, vi } from 'vitest';
import { z } from 'zod';
import { main as toolsExample } from '../examples/tools.ts';
import { cachedTools } from '../src/index.ts';
import {
  finish,
  generateModel,
  generateResult,
  streamModel,
  tempDir,
  textParts,
  textResult,
  usage,
} from './helpers.ts';

const POLICIES: Record<string, ToolPolicy> = {
  send_email: { kind: 'write' },
  git_commit: { kind: 'write', invalidates: ['git_status'] },
  git_status: { kind: 'read', ttl: '30s' },
};

type Step = Array<{ tool: string; input: Record<string, unknown> }> | string | Error;

/**
 * A provider stand-in that plays a script: step n of a run (n = assistant turns so far) calls the
 * listed tools, answers with text, or fails. Tool call ids are new on every model call, as a
 * provider's are, so a retried run never sees the ids of the first one.
 */
function scriptedModel(script: (step: number, run: number) => Step): MockLanguageModelV4 {
  let runs = 0;
  return generateModel((call: LanguageModelV4CallOptions, index: number): LanguageModelV4GenerateResult => {
    const step = call.prompt.filter((message) => message.role === 'assistant').length;
    if (step === 0) runs++;
    const next = script(step, runs);
    if (next instanceof Error) throw next;
    if (typeof next === 'string') return textResult(next);
    const content: LanguageModelV4Content[] = next.map((each, i) => ({
      type: 'tool-call',
      toolCallId: `call-${index}-${i}`,
      toolName: each.tool,
      input: JSON.stringify(each.input),
    }));
    return generateResult(content, { finishReason: finish('tool-calls') });
  });
}

/** The application's tools, counting how often each one really runs. */
function agentTools() {
  const runs = { email: 0, status: 0, commit: 0, time: 0 };
  let commits = 0;
  const tools = {
    send_email: tool({
      description: 'Send an email',
      inputSchema: z.object({ to: z.string(), subject: z.string() }),
      execute: async ({ to }) => ({ messageId: `msg-${++runs.email}`, to }),
    }),
    git_status: tool({
      description: 'Show the working tree status',
      inputSchema: z.object({}),
      execute: async () => ({ commits, read: ++runs.status }),
    }),
    git_commit: tool({
      description: 'Commit the staged changes',
      inputSchema: z.object({ message: z.string() }),
      execute: async ({ message }) => {
        runs.commit++;
        return { sha: `sha-${++commits}`, message };
      },
    }),
    current_time: tool({
      description: 'The time now',
      inputSchema: z.object({}),
      execute: async () => ({ at: ++runs.time }),
    }),
  };
  return { tools, runs };
}

function manualClock(start = Date.UTC(2025, 0, 1)) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function memoryLedger(
  clock = manualClock(),
  tools: Record<string, ToolPolicy> = POLICIES,
): { cache: Cache; ledger: ToolLedger } {
  const cache = createCache({ clock });
  cleanups.push(() => cache.close());
  return { cache, ledger: createToolLedger({ cache, tools }) };
}

function run(model: MockLanguageModelV4, tools: ToolSet, steps = 6) {
  return generateText({ model, tools, stopWhen: stepCountIs(steps), maxRetries: 0, prompt: 'Do the task.' });
}

/** The outputs the model was sent back, in the order of the tool calls of the run. */
function toolOutputs(result: Awaited<ReturnType<typeof run>>): unknown[] {
  return result.steps.flatMap((step) => step.toolResults.map((each) => each.output));
}

/**
 * The tool results (preliminary ones too) and tool errors of a streamText run whose model calls
 * `build` with { target: 'web' } once, then answers.
 */
async function streamedToolResults(tools: ToolSet) {
  const model = streamModel((call) =>
    call.prompt.some((message) => message.role === 'tool')
      ? textParts(['Built.'])
      : [
          { type: 'stream-start', warnings: [] },
          { type: 'tool-call', toolCallId: 'c1', toolName: 'build', input: '{"target":"web"}' },
          { type: 'finish', finishReason: finish('tool-calls'), usage: usage(1, 1) },
        ],
  );
  const seen: Array<{ type: string; preliminary: boolean; output: unknown }> = [];
  const stream = streamText({ model, tools, stopWhen: stepCountIs(3), prompt: 'go', onError: () => {} });
  for await (const part of stream.fullStream) {
    if (part.type === 'tool-result')
      seen.push({ type: part.type, preliminary: part.preliminary === true, output: part.output });
    if (part.type === 'tool-error')
      seen.push({ type: part.type, preliminary: false, output: (part.error as Error).message });
  }
  return seen;
}

describe('cachedTools in a generateText tool loop', () => {
  it('runs a write tool once across a retried run of the same task, and again in another task', async () => {
    const { ledger } = memoryLedger();
    const { tools, runs } = agentTools();
    // The first run fails after the email went out, as a crash or a provider error would.
    const model = scriptedModel((step, attempt) => {
      if (step === 0) return [{ tool: 'send_email', input: { to: 'ada@example.com', subject: 'Report' } }];
      return attempt === 1 ? new Error('provider went away') : 'Sent.';
    });
    const forTask = (taskId: string) => cachedTools(tools, { ledger, scope: { taskId } });

    await expect(run(model, forTask('task-1'))).rejects.toThrow('provider went away');
    expect(runs.email).toBe(1);

    const retried = await run(model, forTask('task-1'));
    expect(retried.text).toBe('Sent.');
    expect(runs.email).toBe(1);
    // The model is given the recorded result, under the new call id of the retried generation.
    expect(toolOutputs(retried)).toEqual([{ messageId: 'msg-1', to: 'ada@example.com' }]);
    expect(retried.steps[0]!.toolCalls[0]!.toolCallId).not.toBe('call-0-0');
    expect((await ledger.stats()).tools.send_email).toMatchObject({ executions: 1, replayed: 1 });

    const other = await run(model, forTask('task-2'));
    expect(toolOutputs(other)).toEqual([{ messageId: 'msg-2', to: 'ada@example.com' }]);
    expect(runs.email).toBe(2);
  });

  it('serves a read tool from the cache while fresh, and runs it again after a write invalidates it', async () => {
    const clock = manualClock();
    const { ledger } = memoryLedger(clock);
    const { tools, runs } = agentTools();
    const model = scriptedModel((step) => {
      const script: Step[] = [
        [{ tool: 'git_status', input: {} }],
        [{ tool: 'git_status', input: {} }],
        [{ tool: 'git_commit', input: { message: 'fix' } }],
        [{ tool: 'git_status', input: {} }],
        'Committed.',
      ];
      return script[step] ?? 'Done.';
    });

    const result = await run(model, cachedTools(tools, { ledger, scope: { taskId: 'task-1' } }));
    expect(result.text).toBe('Committed.');
    expect(toolOutputs(result)).toEqual([
      { commits: 0, read: 1 },
      { commits: 0, read: 1 },
      { sha: 'sha-1', message: 'fix' },
      { commits: 1, read: 2 },
    ]);
    expect(runs).toMatchObject({ status: 2, commit: 1 });
    // The model saw the cached answer as the result of its second call.
    const secondPrompt = JSON.stringify(model.doGenerateCalls[2]!.prompt);
    expect(secondPrompt).toContain('"read":1');
    expect(secondPrompt).not.toContain('"read":2');

    // Cached for every task until the TTL runs out.
    const statusOnly = scriptedModel((step) => (step === 0 ? [{ tool: 'git_status', input: {} }] : 'Clean.'));
    const later = cachedTools(tools, { ledger, scope: { taskId: 'task-2' } });
    clock.advance(29_999);
    expect(toolOutputs(await run(statusOnly, later))).toEqual([{ commits: 1, read: 2 }]);
    clock.advance(1);
    expect(toolOutputs(await run(statusOnly, later))).toEqual([{ commits: 1, read: 3 }]);
    expect(runs.status).toBe(3);
  });

  it('runs tools the ledger does not list on every call', async () => {
    const { ledger } = memoryLedger();
    const { tools, runs } = agentTools();
    const model = scriptedModel((step) =>
      step < 2 ? [{ tool: 'current_time', input: {} }] : step === 2 ? 'It is late.' : 'Done.',
    );
    const wrapped = cachedTools(tools, { ledger, scope: { taskId: 'task-1' } });
    expect(toolOutputs(await run(model, wrapped))).toEqual([{ at: 1 }, { at: 2 }]);
    expect(toolOutputs(await run(model, wrapped))).toEqual([{ at: 3 }, { at: 4 }]);
    expect(runs.time).toBe(4);
    const history = await ledger.history({ taskId: 'task-1' });
    expect(history.map((entry) => [entry.tool, entry.kind, entry.source])).toEqual(
      Array.from({ length: 4 }, () => ['current_time', 'none', 'executed']),
    );
  });

  it('replays a recorded failure instead of running the write again', async () => {
    const { ledger } = memoryLedger(manualClock(), { deploy: { kind: 'write' } });
    let attempts = 0;
    const tools = {
      deploy: tool({
        inputSchema: z.object({ env: z.string() }),
        execute: async ({ env }): Promise<{ url: string }> => {
          attempts++;
          throw new Error(`deploy to ${env} rejected`);
        },
      }),
    };
    const model = scriptedModel((step) =>
      step === 0 ? [{ tool: 'deploy', input: { env: 'prod' } }] : 'Failed.',
    );
    const wrapped = cachedTools(tools, { ledger, scope: { taskId: 'task-1' } });
    const first = await run(model, wrapped);
    const second = await run(model, wrapped);
    expect(attempts).toBe(1);
    const errors = (result: typeof first) =>
      result.steps[0]!.content.filter((part) => part.type === 'tool-error').map((part) => String(part.error));
    expect(errors(first)).toEqual(['Error: deploy to prod rejected']);
    expect(errors(second)).toEqual(['Error: deploy to prod rejected']);
    expect((await ledger.stats()).tools.deploy).toMatchObject({ executions: 1, failures: 1, replayed: 1 });
  });

  it('keys writes by tool, input and scope, never by the SDK’s toolCallId', async () => {
    const { ledger } = memoryLedger();
    const keys: string[] = [];
    const seen: Array<{ toolName: string; toolCallId: string }> = [];
    let sent = 0;
    const tools = {
      send_email: tool({
        inputSchema: z.object({ to: z.string(), subject: z.string() }),
        execute: async () => {
          // The key to pass on to the mail API (an Idempotency-Key header), without changing the signature.
          keys.push(toolCallContext()!.idempotencyKey);
          return { messageId: `msg-${++sent}` };
        },
      }),
    };
    const model = scriptedModel((step) =>
      step === 0 ? [{ tool: 'send_email', input: { to: 'ada@example.com', subject: 'Hi' } }] : 'Sent.',
    );
    const wrapped = cachedTools(tools, {
      ledger,
      scope: (input: { to: string }, call) => {
        seen.push({ toolName: call.toolName, toolCallId: call.toolCallId });
        return { taskId: 'task-1', workItemId: `notify:${input.to}` };
      },
    });
    await run(model, wrapped);
    await run(model, wrapped);
    expect(sent).toBe(1);
    expect(seen).toEqual([
      { toolName: 'send_email', toolCallId: 'call-0-0' },
      { toolName: 'send_email', toolCallId: 'call-2-0' },
    ]);
    expect(keys).toHaveLength(1);
    const history = await ledger.history({ taskId: 'task-1', workItemId: 'notify:ada@example.com' });
    expect(history.map((entry) => entry.source)).toEqual(['executed', 'replayed']);
    expect(new Set(history.map((entry) => entry.key))).toEqual(new Set(keys));

    // An explicit key: one email per address and subject, whichever task sends it.
    const byAddress = cachedTools(tools, {
      ledger,
      scope: { taskId: 'task-9' },
      idempotencyKey: (input: { to: string; subject: string }) => `email:${input.to}:${input.subject}`,
    });
    await run(model, byAddress);
    await run(
      model,
      cachedTools(tools, {
        ledger,
        scope: { taskId: 'task-10' },
        idempotencyKey: () => 'email:ada@example.com:Hi',
      }),
    );
    expect(sent).toBe(2);
    expect(keys.at(-1)).toBe('email:ada@example.com:Hi');
  });

  it('asks idempotencyKey only for write tools: read tools stay cached, unlisted ones run every time', async () => {
    const { ledger } = memoryLedger();
    const { tools, runs } = agentTools();
    const asked: string[] = [];
    const model = scriptedModel((step) =>
      step === 0
        ? [
            { tool: 'send_email', input: { to: 'ada@example.com', subject: 'Hi' } },
            { tool: 'git_status', input: {} },
            { tool: 'current_time', input: {} },
          ]
        : 'Done.',
    );
    // One generic key function for the whole tool set.
    const wrapped = cachedTools(tools, {
      ledger,
      idempotencyKey: (input, call) => {
        asked.push(call.toolName);
        return `${call.toolName}:${JSON.stringify(input)}`;
      },
    });
    const first = await run(model, wrapped);
    const second = await run(model, wrapped);
    for (const result of [first, second])
      expect(result.steps[0]!.content.filter((part) => part.type === 'tool-error')).toEqual([]);
    expect(toolOutputs(first)).toEqual([
      { messageId: 'msg-1', to: 'ada@example.com' },
      { commits: 0, read: 1 },
      { at: 1 },
    ]);
    expect(toolOutputs(second)).toEqual([
      { messageId: 'msg-1', to: 'ada@example.com' },
      { commits: 0, read: 1 },
      { at: 2 },
    ]);
    expect(runs).toMatchObject({ email: 1, status: 1, time: 2 });
    expect(asked).toEqual(['send_email', 'send_email']);
    const history = await ledger.history();
    expect(history.find((entry) => entry.tool === 'send_email')?.key).toBe(
      'send_email:{"to":"ada@example.com","subject":"Hi"}',
    );
  });

  it('keeps everything else of each tool, and the tool set’s type', async () => {
    const { ledger } = memoryLedger();
    const { tools } = agentTools();
    const clientSide = tool({ description: 'Ask the user', inputSchema: z.object({ question: z.string() }) });
    const all = { ...tools, ask_user: clientSide };
    const wrapped = cachedTools(all, { ledger });
    expectTypeOf(wrapped).toEqualTypeOf<typeof all>();
    expect(wrapped.ask_user).toBe(clientSide);
    expect(wrapped.send_email.inputSchema).toBe(tools.send_email.inputSchema);
    expect(wrapped.send_email.description).toBe('Send an email');
    expect(wrapped.send_email.execute).not.toBe(tools.send_email.execute);

    const model = scriptedModel((step) =>
      step === 0 ? [{ tool: 'send_email', input: { to: 'ada@example.com', subject: 'Hi' } }] : 'Sent.',
    );
    const result = await generateText({
      model,
      tools: wrapped,
      stopWhen: stepCountIs(3),
      prompt: 'Mail Ada',
    });
    const output = result.steps[0]!.toolResults[0]!;
    if (!output.dynamic && output.toolName === 'send_email') {
      expectTypeOf(output.output).toEqualTypeOf<{ messageId: string; to: string }>();
      expectTypeOf(output.input).toEqualTypeOf<{ to: string; subject: string }>();
    }
    const sentTools = model.doGenerateCalls[0]!.tools!;
    expect(sentTools.map((each) => each.name).sort()).toEqual(
      ['ask_user', 'current_time', 'git_commit', 'git_status', 'send_email'].sort(),
    );
    expect(sentTools.find((each) => each.name === 'send_email')).toMatchObject({
      type: 'function',
      description: 'Send an email',
      inputSchema: { type: 'object', required: ['to', 'subject'] },
    });
  });

  it('records a streaming tool by its final output', async () => {
    const { ledger } = memoryLedger(manualClock(), { build: { kind: 'write' } });
    let runs = 0;
    const tools = {
      build: tool({
        inputSchema: z.object({ target: z.string() }),
        async *execute({ target }) {
          runs++;
          yield { status: 'building' as const, target };
          yield { status: 'built' as const, target };
        },
      }),
    };
    const model = scriptedModel((step) =>
      step === 0 ? [{ tool: 'build', input: { target: 'web' } }] : 'Built.',
    );
    const wrapped = cachedTools(tools, { ledger, scope: { taskId: 'task-1' } });
    const outputs = [toolOutputs(await run(model, wrapped)), toolOutputs(await run(model, wrapped))];
    expect(outputs).toEqual([[{ status: 'built', target: 'web' }], [{ status: 'built', target: 'web' }]]);
    expect(runs).toBe(1);
  });

  it('leaves the preliminary results of a streaming tool it neither records nor caches', async () => {
    const { ledger } = memoryLedger(manualClock(), { other: { kind: 'read' } });
    const tools = {
      build: tool({
        inputSchema: z.object({ target: z.string() }),
        async *execute({ target }) {
          yield { status: 'building' as const, target };
          yield { status: 'built' as const, target };
        },
      }),
    };
    const model = () =>
      streamModel((call) =>
        call.prompt.some((message) => message.role === 'tool')
          ? textParts(['Built.'])
          : [
              { type: 'stream-start', warnings: [] },
              { type: 'tool-call', toolCallId: 'c1', toolName: 'build', input: '{"target":"web"}' },
              { type: 'finish', finishReason: finish('tool-calls'), usage: usage(1, 1) },
            ],
      );
    const results = async (set: ToolSet) => {
      const seen: Array<{ preliminary: boolean; output: unknown }> = [];
      const stream = streamText({ model: model(), tools: set, stopWhen: stepCountIs(3), prompt: 'go' });
      for await (const part of stream.fullStream) {
        if (part.type === 'tool-result')
          seen.push({ preliminary: part.preliminary === true, output: part.output });
      }
      return seen;
    };
    const plain = await results(tools);
    expect(plain.filter((each) => each.preliminary)).toHaveLength(2);
    expect(await results(cachedTools(tools, { ledger, scope: { taskId: 'task-1' } }))).toEqual(plain);
    // The history still has the call, with its final outcome.
    const history = await ledger.history({ taskId: 'task-1' });
    expect(history.map((entry) => [entry.tool, entry.kind, entry.status])).toEqual([
      ['build', 'none', 'succeeded'],
    ]);
  });

  it('streams the preliminary results of a plain execute that returns an async iterable', async () => {
    const { ledger } = memoryLedger(manualClock(), { other: { kind: 'read' } });
    const seenContext: Array<string | undefined> = [];
    async function* progress(target: string) {
      yield { status: 'queued' as const, target };
      yield { status: 'building' as const, target };
      yield { status: 'built' as const, target };
    }
    const tools = {
      // Not an async generator function: streaming shows only in what it returns, as the SDK checks.
      build: tool({
        inputSchema: z.object({ target: z.string() }),
        execute: ({ target }) => {
          seenContext.push(toolCallContext()?.tool);
          return progress(target);
        },
      }),
    };
    const plain = await streamedToolResults(tools);
    expect(plain.filter((each) => each.preliminary).map((each) => each.output)).toEqual([
      { status: 'queued', target: 'web' },
      { status: 'building', target: 'web' },
      { status: 'built', target: 'web' },
    ]);
    expect(await streamedToolResults(cachedTools(tools, { ledger, scope: { taskId: 'task-1' } }))).toEqual(
      plain,
    );
    // It ran inside the ledger's call, and the history has its final outcome.
    expect(seenContext).toEqual([undefined, 'build']);
    const history = await ledger.history({ taskId: 'task-1' });
    expect(history.map((entry) => [entry.tool, entry.kind, entry.status])).toEqual([
      ['build', 'none', 'succeeded'],
    ]);
  });

  it('passes on the outputs and the error of such a tool that fails midway, and records the failure', async () => {
    const { ledger } = memoryLedger(manualClock(), { other: { kind: 'read' } });
    async function* failing(target: string) {
      yield { status: 'started' as const, target };
      throw new Error('disk full');
    }
    const tools = {
      build: tool({
        inputSchema: z.object({ target: z.string() }),
        execute: ({ target }) => failing(target),
      }),
    };
    const plain = await streamedToolResults(tools);
    expect(plain).toEqual([
      { type: 'tool-result', preliminary: true, output: { status: 'started', target: 'web' } },
      { type: 'tool-error', preliminary: false, output: 'disk full' },
    ]);
    expect(await streamedToolResults(cachedTools(tools, { ledger, scope: { taskId: 'task-1' } }))).toEqual(
      plain,
    );
    const history = await ledger.history({ taskId: 'task-1' });
    expect(history.map((entry) => [entry.tool, entry.kind, entry.status])).toEqual([
      ['build', 'none', 'failed'],
    ]);
  });

  it('does not replay a write that stopped because its call was aborted', async () => {
    const { ledger } = memoryLedger(manualClock(), { charge: { kind: 'write' } });
    let runs = 0;
    const tools = {
      charge: tool({
        inputSchema: z.object({ amount: z.number() }),
        execute: async ({ amount }, { abortSignal }) => {
          runs++;
          abortSignal?.throwIfAborted();
          return { charged: amount };
        },
      }),
    };
    const wrapped = cachedTools(tools, { ledger, scope: { taskId: 'task-1' } });
    const controller = new AbortController();
    controller.abort();
    const options = (abortSignal?: AbortSignal) => ({ toolCallId: 'c', messages: [], abortSignal }) as never;
    await expect(wrapped.charge.execute!({ amount: 5 }, options(controller.signal))).rejects.toThrow();
    expect(await wrapped.charge.execute!({ amount: 5 }, options())).toEqual({ charged: 5 });
    expect(runs).toBe(2);
  });

  it('builds its own ledger from a cache and policies', async () => {
    const cache = createCache();
    cleanups.push(() => cache.close());
    const { tools, runs } = agentTools();
    const model = scriptedModel((step) =>
      step === 0
        ? [{ tool: 'git_status', input: {} }]
        : step === 1
          ? [{ tool: 'git_status', input: {} }]
          : 'Ok.',
    );
    await run(model, cachedTools(tools, { cache, policies: { git_status: { kind: 'read', ttl: '1m' } } }));
    expect(runs.status).toBe(1);
    expect(await cache.tier('tools').stats()).toMatchObject({ hits: 1, sets: 1 });
  });

  it('rejects options it cannot honour, naming the fix', () => {
    const { cache, ledger } = memoryLedger();
    const { tools } = agentTools();
    const attempt = (options: unknown) => {
      try {
        cachedTools(tools, options as never);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    for (const options of [
      { ledger, cache },
      { ledger, policies: {} },
      { ledger: {} },
      { ledgr: ledger },
      { ledger, idempotencyKey: 'key' },
      { cache },
    ]) {
      const error = attempt(options);
      expect(CacheError.isInstance(error)).toBe(true);
      expect((error as CacheError).code).toBe('E_INVALID_OPTION');
      expect((error as Error).message).toMatch(/^\[@x\/ai-sdk-cache\] .+ — .+/);
    }
    expect(() => cachedTools({ 'send email': tools.send_email }, { ledger })).toThrow(
      /tool name "send email"/,
    );
  });
});

describe('cachedTools over SQLite', () => {
  it('replays the write and serves the read after a restart, from a new cache on the same file', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const path = join(dir, 'agent.db');
    const clock = manualClock();
    const open = () => {
      const cache = createCache({ clock, store: sqliteBackend({ path, clock }) });
      return { cache, ledger: createToolLedger({ cache, tools: POLICIES }) };
    };
    const { tools, runs } = agentTools();
    // Both tools are called in one step; the first process dies before the next model call returns.
    const model = scriptedModel((step, attempt) => {
      if (step === 0) {
        return [
          { tool: 'send_email', input: { to: 'ada@example.com', subject: 'Report' } },
          { tool: 'git_status', input: {} },
        ];
      }
      return attempt === 1 ? new Error('process killed') : 'Done.';
    });

    const before = open();
    await expect(
      run(model, cachedTools(tools, { ledger: before.ledger, scope: { taskId: 'task-1' } })),
    ).rejects.toThrow('process killed');
    await before.cache.close();

    const after = open();
    cleanups.push(() => after.cache.close());
    const retried = await run(
      model,
      cachedTools(tools, { ledger: after.ledger, scope: { taskId: 'task-1' } }),
    );
    expect(retried.text).toBe('Done.');
    expect(toolOutputs(retried)).toEqual([
      { messageId: 'msg-1', to: 'ada@example.com' },
      { commits: 0, read: 1 },
    ]);
    expect(runs).toMatchObject({ email: 1, status: 1 });
    const stats = await after.ledger.stats();
    expect(stats.tools.send_email).toMatchObject({ executions: 1, replayed: 1 });
    expect(stats.tools.git_status).toMatchObject({ executions: 1, cached: 1 });
    expect(stats.executionsAvoided).toBe(2);
  });
});

describe('the README example', () => {
  it('commits and mails once over two runs of the task, and serves git_status from the cache', async () => {
    const { dir, cleanup } = tempDir();
    cleanups.push(cleanup);
    const lines: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((line: string) => {
      lines.push(line);
    });
    cleanups.push(() => log.mockRestore());
    await toolsExample(dir);
    expect(lines).toEqual([
      'run 1: Released. git_status ran 2, commits 1, emails 1',
      'run 2: Released. git_status ran 2, commits 1, emails 1',
      'tool calls 8, executions avoided 4',
    ]);
  });
});
