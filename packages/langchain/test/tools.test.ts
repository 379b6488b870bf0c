import { Document } from '@langchain/core/documents';
import type { AIMessageFields, BaseMessage } from '@langchain/core/messages';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import type { StructuredToolInterface } from '@langchain/core/tools';
import { DynamicStructuredTool, DynamicTool, StructuredTool, tool } from '@langchain/core/tools';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import type { Cache, ToolLedger, ToolPolicy } from '@x/cache-core';
import { CacheError, createCache, createToolLedger, RecordedToolError, toolCallContext } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { cachedTool } from '../src/index.ts';
import { ManualClock, ScriptedChatModel, tempDir } from './helpers.ts';

const POLICIES: Record<string, ToolPolicy> = {
  send_email: { kind: 'write' },
  git_commit: { kind: 'write', invalidates: ['git_status'] },
  git_status: { kind: 'read', ttl: '30s' },
};

type Step = Array<{ name: string; args: Record<string, unknown> }> | string | Error;

/**
 * The provider stand-in: a real BaseChatModel (the package's ScriptedChatModel) that plays a
 * script. Step n of a run (n = AI turns so far) asks for tool calls, answers, or fails. Tool call
 * ids are new on every model call, as a provider's are.
 */
function scriptedModel(script: (step: number, run: number) => Step): ScriptedChatModel {
  let runs = 0;
  let calls = 0;
  return new ScriptedChatModel({
    respond: (messages: BaseMessage[]): AIMessageFields => {
      const step = messages.filter((message) => message.getType() === 'ai').length;
      if (step === 0) runs++;
      const n = calls++;
      const next = script(step, runs);
      if (next instanceof Error) throw next;
      if (typeof next === 'string') return { content: next };
      return {
        content: '',
        tool_calls: next.map((call, i) => ({ ...call, id: `call_${n}_${i}`, type: 'tool_call' as const })),
      };
    },
  });
}

/**
 * A tool-calling loop as LangChain documents it: bind the tools, invoke the model, run each tool
 * call through its tool (`tool.invoke(toolCall)` returns the ToolMessage) and feed the messages back.
 */
async function agentLoop(model: ScriptedChatModel, tools: StructuredToolInterface[], maxSteps = 6) {
  const bound = model.bindTools(tools);
  const byName = new Map(tools.map((each) => [each.name, each]));
  const messages: BaseMessage[] = [new HumanMessage('Do the task.')];
  for (let step = 0; step < maxSteps; step++) {
    const reply = await bound.invoke(messages);
    messages.push(reply);
    if (!reply.tool_calls?.length) return { answer: reply.text, messages };
    for (const call of reply.tool_calls) {
      const result: ToolMessage = await byName.get(call.name)!.invoke({ ...call, type: 'tool_call' });
      messages.push(result);
    }
  }
  throw new Error('the loop did not finish');
}

/** The ToolMessages of a run: which call they answer and what they say. */
function toolResults(messages: BaseMessage[]): Array<{ id: string; content: unknown }> {
  return messages
    .filter((message): message is ToolMessage => ToolMessage.isInstance(message))
    .map((message) => ({ id: message.tool_call_id, content: JSON.parse(message.content as string) }));
}

/** The application's tools, counting how often each one really runs. */
function agentTools() {
  const runs = { email: 0, status: 0, commit: 0, time: 0 };
  let commits = 0;
  const tools = {
    sendEmail: tool(async ({ to }) => ({ messageId: `msg-${++runs.email}`, to }), {
      name: 'send_email',
      description: 'Send an email',
      schema: z.object({ to: z.string(), subject: z.string() }),
    }),
    gitStatus: tool(async () => ({ commits, read: ++runs.status }), {
      name: 'git_status',
      description: 'Show the working tree status',
      schema: z.object({}),
    }),
    gitCommit: tool(
      async ({ message }) => {
        runs.commit++;
        return { sha: `sha-${++commits}`, message };
      },
      {
        name: 'git_commit',
        description: 'Commit the staged changes',
        schema: z.object({ message: z.string() }),
      },
    ),
    currentTime: tool(async () => ({ at: ++runs.time }), {
      name: 'current_time',
      description: 'The time now',
      schema: z.object({}),
    }),
  };
  return { tools, runs };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function memoryLedger(
  clock = new ManualClock(),
  tools: Record<string, ToolPolicy> = POLICIES,
): { cache: Cache; ledger: ToolLedger } {
  const cache = createCache({ clock });
  cleanups.push(() => cache.close());
  return { cache, ledger: createToolLedger({ cache, tools }) };
}

function cachedAll(tools: Record<string, StructuredToolInterface>, ledger: ToolLedger, taskId: string) {
  return Object.values(tools).map((each) => cachedTool(each, { ledger, scope: { taskId } }));
}

describe('cachedTool in a LangChain tool-calling loop', () => {
  it('runs a write tool once across a retried run of the same task, and again in another task', async () => {
    const { ledger } = memoryLedger();
    const { tools, runs } = agentTools();
    const model = scriptedModel((step, attempt) => {
      if (step === 0) return [{ name: 'send_email', args: { to: 'ada@example.com', subject: 'Report' } }];
      return attempt === 1 ? new Error('provider went away') : 'Sent.';
    });

    await expect(agentLoop(model, cachedAll(tools, ledger, 'task-1'))).rejects.toThrow('provider went away');
    expect(runs.email).toBe(1);

    const retried = await agentLoop(model, cachedAll(tools, ledger, 'task-1'));
    expect(retried.answer).toBe('Sent.');
    expect(runs.email).toBe(1);
    // The recorded result answers the retried generation's new tool call id.
    expect(toolResults(retried.messages)).toEqual([
      { id: 'call_2_0', content: { messageId: 'msg-1', to: 'ada@example.com' } },
    ]);
    expect((await ledger.stats()).tools.send_email).toMatchObject({ executions: 1, replayed: 1 });

    const other = await agentLoop(model, cachedAll(tools, ledger, 'task-2'));
    expect(toolResults(other.messages)[0]!.content).toEqual({ messageId: 'msg-2', to: 'ada@example.com' });
    expect(runs.email).toBe(2);
  });

  it('serves a read tool from the cache while fresh, and runs it again after a write invalidates it', async () => {
    const clock = new ManualClock();
    const { ledger } = memoryLedger(clock);
    const { tools, runs } = agentTools();
    const script: Step[] = [
      [{ name: 'git_status', args: {} }],
      [{ name: 'git_status', args: {} }],
      [{ name: 'git_commit', args: { message: 'fix' } }],
      [{ name: 'git_status', args: {} }],
      'Committed.',
    ];
    const model = scriptedModel((step) => script[step] ?? 'Done.');
    const result = await agentLoop(model, cachedAll(tools, ledger, 'task-1'));
    expect(result.answer).toBe('Committed.');
    expect(toolResults(result.messages).map((each) => each.content)).toEqual([
      { commits: 0, read: 1 },
      { commits: 0, read: 1 },
      { sha: 'sha-1', message: 'fix' },
      { commits: 1, read: 2 },
    ]);
    expect(runs).toMatchObject({ status: 2, commit: 1 });

    // Cached for every task until the TTL runs out.
    const statusOnly = scriptedModel((step) => (step === 0 ? [{ name: 'git_status', args: {} }] : 'Clean.'));
    const later = cachedAll(tools, ledger, 'task-2');
    clock.advance(29_999);
    expect(toolResults((await agentLoop(statusOnly, later)).messages)[0]!.content).toEqual({
      commits: 1,
      read: 2,
    });
    clock.advance(1);
    expect(toolResults((await agentLoop(statusOnly, later)).messages)[0]!.content).toEqual({
      commits: 1,
      read: 3,
    });
    expect(runs.status).toBe(3);
  });

  it('runs tools the ledger does not list on every call', async () => {
    const { ledger } = memoryLedger();
    const { tools, runs } = agentTools();
    const model = scriptedModel((step) => (step < 2 ? [{ name: 'current_time', args: {} }] : 'Late.'));
    const wrapped = cachedAll(tools, ledger, 'task-1');
    await agentLoop(model, wrapped);
    await agentLoop(model, wrapped);
    expect(runs.time).toBe(4);
    const history = await ledger.history({ taskId: 'task-1' });
    expect(history.map((entry) => [entry.tool, entry.kind, entry.source])).toEqual(
      Array.from({ length: 4 }, () => ['current_time', 'none', 'executed']),
    );
  });

  it('keys writes by tool, input and scope, never by the tool call id', async () => {
    const { ledger } = memoryLedger();
    const keys: string[] = [];
    const seen: string[] = [];
    const sendEmail = tool(
      async ({ to }) => {
        // The key to pass on to the mail API (an Idempotency-Key header).
        keys.push(toolCallContext()!.idempotencyKey);
        return `sent to ${to}`;
      },
      { name: 'send_email', schema: z.object({ to: z.string() }) },
    );
    const wrapped = cachedTool(sendEmail, {
      ledger,
      scope: (input: { to: string }, config) => {
        seen.push(config.toolCall!.id!);
        return { taskId: String(config.configurable?.thread_id), workItemId: `notify:${input.to}` };
      },
    });
    const call = (id: string) => ({
      id,
      name: 'send_email',
      args: { to: 'ada@example.com' },
      type: 'tool_call' as const,
    });
    const config = { configurable: { thread_id: 'thread-7' } };
    const first: ToolMessage = await wrapped.invoke(call('call_a'), config);
    const again: ToolMessage = await wrapped.invoke(call('call_b'), config);
    expect(seen).toEqual(['call_a', 'call_b']);
    expect([first.tool_call_id, again.tool_call_id]).toEqual(['call_a', 'call_b']);
    expect(again.content).toBe('sent to ada@example.com');
    expect(keys).toHaveLength(1);
    const history = await ledger.history({ taskId: 'thread-7', workItemId: 'notify:ada@example.com' });
    expect(history.map((entry) => [entry.source, entry.key])).toEqual([
      ['executed', keys[0]],
      ['replayed', keys[0]],
    ]);

    // An explicit key: one email per address, whichever thread sends it.
    const perAddress = cachedTool(sendEmail, {
      ledger,
      idempotencyKey: (input: { to: string }) => `email:${input.to}`,
    });
    await perAddress.invoke({ to: 'bob@example.com' }, { configurable: { thread_id: 'thread-8' } });
    await perAddress.invoke({ to: 'bob@example.com' }, { configurable: { thread_id: 'thread-9' } });
    expect(keys).toEqual([keys[0], 'email:bob@example.com']);
  });

  it('keeps the class, name, description and schema of every kind of tool', async () => {
    const { ledger } = memoryLedger(new ManualClock(), {
      lookup: { kind: 'read', ttl: '1h' },
      shout: { kind: 'read', ttl: '1h' },
      weather: { kind: 'read', ttl: '1h' },
    });
    let runs = 0;
    class WeatherTool extends StructuredTool {
      name = 'weather';
      description = 'Weather for a city';
      schema = z.object({ city: z.string(), unit: z.enum(['C', 'F']).default('C') });
      readonly units = 'metric';
      async _call({ city, unit }: { city: string; unit: string }): Promise<string> {
        runs++;
        return `${city}: 21°${unit} (${this.units})`;
      }
    }
    const structured = new DynamicStructuredTool({
      name: 'lookup',
      description: 'Look a term up',
      schema: z.object({ term: z.string() }),
      func: async ({ term }) => {
        runs++;
        return `${term} means something`;
      },
    });
    const dynamic = new DynamicTool({
      name: 'shout',
      description: 'Shout a word',
      func: async (input) => {
        runs++;
        return input.toUpperCase();
      },
    });
    const weather = new WeatherTool();
    for (const original of [weather, structured, dynamic] as StructuredToolInterface[]) {
      const wrapped = cachedTool(original, { ledger });
      expect(wrapped).toBeInstanceOf(original.constructor);
      expect(convertToOpenAITool(wrapped)).toEqual(convertToOpenAITool(original));
      expect(wrapped.returnDirect).toBe(original.returnDirect);
    }
    const cachedWeather = cachedTool(weather, { ledger });
    expect(cachedWeather.units).toBe('metric');
    // The schema still parses (and defaults) the input before the key is made.
    const weatherCall = (args: Record<string, unknown>) => ({
      id: 'call_w',
      name: 'weather',
      args,
      type: 'tool_call' as const,
    });
    const answers: ToolMessage[] = [
      await cachedWeather.invoke(weatherCall({ city: 'Paris' })),
      await cachedWeather.invoke(weatherCall({ unit: 'C', city: 'Paris' })),
    ];
    expect(answers.map((answer) => answer.content)).toEqual(['Paris: 21°C (metric)', 'Paris: 21°C (metric)']);
    expect(await cachedTool(structured, { ledger }).invoke({ term: 'ratio' })).toBe('ratio means something');
    expect(await cachedTool(structured, { ledger }).invoke({ term: 'ratio' })).toBe('ratio means something');
    expect(await cachedTool(dynamic, { ledger }).invoke('hey')).toBe('HEY');
    expect(await cachedTool(dynamic, { ledger }).invoke('hey')).toBe('HEY');
    expect(runs).toBe(3);
    await expect(cachedWeather.invoke({ town: 'Paris' } as never)).rejects.toThrow(
      'did not match expected schema',
    );
  });

  it('replays a ToolMessage or content-and-artifact output for the current call', async () => {
    const { ledger } = memoryLedger(new ManualClock(), {
      render: { kind: 'write' },
      chart: { kind: 'write' },
    });
    let runs = 0;
    const render = tool(
      async ({ page }, config) => {
        runs++;
        return new ToolMessage({
          content: `rendered ${page}`,
          artifact: { bytes: 1024 },
          tool_call_id: config.toolCall!.id!,
          status: 'success',
        });
      },
      { name: 'render', schema: z.object({ page: z.string() }) },
    );
    const chart = tool(
      async ({ series }) => {
        runs++;
        return [`chart of ${series}`, { points: [1, 2, 3] }];
      },
      { name: 'chart', schema: z.object({ series: z.string() }), responseFormat: 'content_and_artifact' },
    );
    const cachedRender = cachedTool(render, { ledger });
    const cachedChart = cachedTool(chart, { ledger });
    const renderCall = (id: string) => ({
      id,
      name: 'render',
      args: { page: 'home' },
      type: 'tool_call' as const,
    });
    const chartCall = (id: string) => ({
      id,
      name: 'chart',
      args: { series: 'sales' },
      type: 'tool_call' as const,
    });
    for (const id of ['call_1', 'call_2']) {
      const rendered: ToolMessage = await cachedRender.invoke(renderCall(id));
      expect(ToolMessage.isInstance(rendered)).toBe(true);
      expect(rendered).toMatchObject({
        content: 'rendered home',
        artifact: { bytes: 1024 },
        tool_call_id: id,
      });
      const charted: ToolMessage = await cachedChart.invoke(chartCall(id));
      expect(charted).toMatchObject({
        content: 'chart of sales',
        artifact: { points: [1, 2, 3] },
        tool_call_id: id,
      });
    }
    expect(runs).toBe(2);
  });

  it('runs nothing for a call whose signal is already aborted', async () => {
    const { ledger } = memoryLedger(new ManualClock(), { pay: { kind: 'write' } });
    let runs = 0;
    const pay = tool(
      async () => {
        runs++;
        return 'charged';
      },
      { name: 'pay', schema: z.object({ amount: z.number() }) },
    );
    const call = { id: 'c1', name: 'pay', args: { amount: 5 }, type: 'tool_call' as const };
    const error = await cachedTool(pay, { ledger })
      .invoke(call, { signal: AbortSignal.abort() })
      .catch((e: unknown) => e);
    expect((error as Error).name).toBe('AbortError');
    expect(runs).toBe(0);
  });

  it('replays the Documents of a retriever tool as Documents', async () => {
    const { ledger } = memoryLedger(new ManualClock(), { search: { kind: 'read' } });
    let runs = 0;
    const search = tool(
      async ({ q }) => {
        runs++;
        return [
          `found ${q}`,
          [new Document({ pageContent: 'x', metadata: { when: new Date(0) }, id: 'd1' })],
        ];
      },
      { name: 'search', schema: z.object({ q: z.string() }), responseFormat: 'content_and_artifact' },
    );
    const cached = cachedTool(search, { ledger });
    const call = (id: string) => ({ id, name: 'search', args: { q: 'cats' }, type: 'tool_call' as const });
    for (const id of ['c1', 'c2']) {
      const message: ToolMessage = await cached.invoke(call(id));
      const [document] = message.artifact as Document[];
      expect(document).toBeInstanceOf(Document);
      expect(document).toMatchObject({ pageContent: 'x', id: 'd1', metadata: { when: new Date(0) } });
      expect(message.tool_call_id).toBe(id);
    }
    expect(runs).toBe(1);
  });

  it('sends a streaming tool’s events on the run that executes it, and records its return value', async () => {
    const { ledger } = memoryLedger(new ManualClock(), { build: { kind: 'write' } });
    let runs = 0;
    const build = tool(
      async function* ({ target }: { target: string }) {
        runs++;
        yield { progress: 50 };
        yield { progress: 100 };
        return `built ${target}`;
      },
      { name: 'build', schema: z.object({ target: z.string() }) },
    );
    const events: unknown[] = [];
    const callbacks = [{ handleToolEvent: (chunk: unknown) => void events.push(chunk) }];
    const wrapped = cachedTool(build, { ledger });
    expect(await wrapped.invoke({ target: 'web' }, { callbacks })).toBe('built web');
    expect(await wrapped.invoke({ target: 'web' }, { callbacks })).toBe('built web');
    expect(runs).toBe(1);
    expect(events).toEqual([{ progress: 50 }, { progress: 100 }]);
  });

  it('rethrows a recorded error instead of running the write again', async () => {
    const { ledger } = memoryLedger(new ManualClock(), { deploy: { kind: 'write' } });
    let attempts = 0;
    const deploy = tool(
      async ({ env }): Promise<string> => {
        attempts++;
        throw Object.assign(new Error(`deploy to ${env} rejected`), { code: 'E_REJECTED' });
      },
      { name: 'deploy', schema: z.object({ env: z.string() }) },
    );
    const wrapped = cachedTool(deploy, { ledger, scope: { taskId: 'task-1' } });
    const call = (id: string) => ({ id, name: 'deploy', args: { env: 'prod' }, type: 'tool_call' as const });
    await expect(wrapped.invoke(call('call_1'))).rejects.toThrow('deploy to prod rejected');
    const replayed = await wrapped.invoke(call('call_2')).catch((error: unknown) => error);
    expect(RecordedToolError.isInstance(replayed)).toBe(true);
    expect(replayed).toMatchObject({
      message: 'deploy to prod rejected',
      code: 'E_REJECTED',
      replayed: true,
    });
    expect(attempts).toBe(1);
  });

  it('records what a write did when its caller aborted: the retry replays it instead of the abort', async () => {
    const { ledger } = memoryLedger(new ManualClock(), { pay: { kind: 'write' } });
    let runs = 0;
    let completed = 0;
    const pay = tool(
      async ({ amount }) => {
        runs++;
        await new Promise((resolve) => setTimeout(resolve, 60));
        completed++;
        return `charged ${amount}`;
      },
      { name: 'pay', schema: z.object({ amount: z.number() }) },
    );
    const wrapped = cachedTool(pay, { ledger, scope: { taskId: 'task-1' } });
    const call = (id: string) => ({ id, name: 'pay', args: { amount: 5 }, type: 'tool_call' as const });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 10);
    const aborted = await wrapped
      .invoke(call('c1'), { signal: controller.signal })
      .catch((error: unknown) => error);
    expect((aborted as Error).name).toBe('AbortError');
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(completed).toBe(1);
    const retried = await wrapped.invoke(call('c2'));
    expect(retried.content).toBe('charged 5');
    expect(runs).toBe(1);
  });

  it('builds its own ledger from a policy', async () => {
    const cache = createCache();
    cleanups.push(() => cache.close());
    const { tools, runs } = agentTools();
    const status = cachedTool(tools.gitStatus, { cache, policy: { kind: 'read', ttl: '1m' } });
    await status.invoke({});
    await status.invoke({});
    expect(runs.status).toBe(1);
    expect(await cache.tier('tools').stats()).toMatchObject({ hits: 1, sets: 1 });
  });

  it('rejects options it cannot honour, naming the fix', () => {
    const { cache, ledger } = memoryLedger();
    const { tools } = agentTools();
    for (const options of [
      { ledger, cache },
      { ledger, policy: { kind: 'write' } },
      { ledger: {} },
      { cache },
      { ledgr: ledger },
      { ledger, scope: 'task-1' },
    ]) {
      let error: unknown;
      try {
        cachedTool(tools.sendEmail, options as never);
      } catch (caught) {
        error = caught;
      }
      expect(CacheError.isInstance(error)).toBe(true);
      expect((error as CacheError).code).toBe('E_INVALID_OPTION');
      expect((error as Error).message).toMatch(/^\[@x\/langchain-cache\] .+ — .+/);
    }
    expect(() => cachedTool({ name: 'x', invoke: async () => 'x' } as never, { ledger })).toThrow(
      /needs a LangChain tool/,
    );
    expect(() => cachedTool(tools.sendEmail, { ledger, name: 'send email' })).toThrow(
      /tool name "send email"/,
    );
  });
});

describe('cachedTool over SQLite', () => {
  it('replays the write and serves the read after a restart, from a new cache on the same file', async () => {
    const { file, cleanup } = tempDir();
    cleanups.push(cleanup);
    const clock = new ManualClock();
    const open = () => {
      const cache = createCache({ clock, store: sqliteBackend({ path: file('agent.db'), clock }) });
      return { cache, ledger: createToolLedger({ cache, tools: POLICIES }) };
    };
    const { tools, runs } = agentTools();
    // Both tools are called in one step; the first process dies before the next model call returns.
    const model = scriptedModel((step, attempt) => {
      if (step === 0) {
        return [
          { name: 'send_email', args: { to: 'ada@example.com', subject: 'Report' } },
          { name: 'git_status', args: {} },
        ];
      }
      return attempt === 1 ? new Error('process killed') : 'Done.';
    });

    const before = open();
    await expect(agentLoop(model, cachedAll(tools, before.ledger, 'task-1'))).rejects.toThrow(
      'process killed',
    );
    await before.cache.close();

    const after = open();
    cleanups.push(() => after.cache.close());
    const retried = await agentLoop(model, cachedAll(tools, after.ledger, 'task-1'));
    expect(retried.answer).toBe('Done.');
    expect(toolResults(retried.messages)).toEqual([
      { id: 'call_2_0', content: { messageId: 'msg-1', to: 'ada@example.com' } },
      { id: 'call_2_1', content: { commits: 0, read: 1 } },
    ]);
    expect(runs).toMatchObject({ email: 1, status: 1 });
    const stats = await after.ledger.stats();
    expect(stats.tools.send_email).toMatchObject({ executions: 1, replayed: 1 });
    expect(stats.tools.git_status).toMatchObject({ executions: 1, cached: 1 });
    expect(stats.executionsAvoided).toBe(2);
  });
});

describe('the README example', () => {
  it('sends once and runs git status once over a retried step', async () => {
    const lines: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      lines.push(args.join(' '));
    });
    cleanups.push(() => log.mockRestore());
    await import('../examples/tools.ts');
    expect(lines).toEqual([
      'sending "Your report" to ada@example.com',
      'running git status',
      'call_1 sent to ada@example.com | nothing to commit, working tree clean',
      'call_2 sent to ada@example.com | nothing to commit, working tree clean',
      'calls 4, executions avoided 2',
    ]);
  });
});
