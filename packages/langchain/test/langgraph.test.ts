/**
 * A tool that returns a LangGraph `Command`, run by LangGraph's own ToolNode inside a real
 * StateGraph: the replay must update the graph state exactly as the first run did (messages with
 * their classes, other channels, goto), answering the tool call being made now.
 */
import { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { BaseMessage } from '@langchain/core/messages';
import { AIMessage, HumanMessage, RemoveMessage, ToolMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import {
  Annotation,
  Command,
  END,
  interrupt,
  MemorySaver,
  MessagesAnnotation,
  Overwrite,
  Send,
  START,
  StateGraph,
} from '@langchain/langgraph';
import { ToolNode } from '@langchain/langgraph/prebuilt';
import { createCache, createToolLedger } from '@x/cache-core';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { cachedTool, LangChainCache, withCache } from '../src/index.ts';
import { AnthropicLikeModel, ScriptedChatModel } from './helpers.ts';

const State = Annotation.Root({
  ...MessagesAnnotation.spec,
  bookings: Annotation<string[]>({ reducer: (a, b) => [...a, ...b], default: () => [] }),
  followed: Annotation<string>({ reducer: (_, b) => b, default: () => '' }),
});

function graphWith(bookTool: ReturnType<typeof cachedTool>) {
  return new StateGraph(State)
    .addNode('tools', new ToolNode([bookTool]), { ends: ['confirm', END] })
    .addNode('confirm', () => ({ followed: 'confirm' }))
    .addEdge(START, 'tools')
    .addEdge('confirm', END)
    .compile();
}

const askToBook = (callId: string) => ({
  messages: [
    new HumanMessage({ content: 'Book room 7', id: 'h1' }),
    new AIMessage({
      content: '',
      id: 'a1',
      tool_calls: [{ id: callId, name: 'book_room', args: { room: 7 }, type: 'tool_call' as const }],
    }),
  ],
});

describe('cachedTool with LangGraph Command results', () => {
  it('replays a Command into the graph state as the first run applied it, for the new tool call', async () => {
    let bookings = 0;
    const book = tool(
      async ({ room }, config) => {
        bookings++;
        return new Command({
          update: {
            messages: [
              new ToolMessage({
                content: `booked room ${room}`,
                tool_call_id: config.toolCall!.id!,
                artifact: { room },
              }),
              new RemoveMessage({ id: 'h1' }),
            ],
            bookings: [`room-${room}`],
          },
          goto: 'confirm',
        });
      },
      { name: 'book_room', description: 'Books a room', schema: z.object({ room: z.number() }) },
    );
    const ledger = createToolLedger({ cache: createCache(), tools: { book_room: { kind: 'write' } } });
    const cached = cachedTool(book, {
      ledger,
      scope: { taskId: 'trip-1' },
      idempotencyKey: ({ room }) => `room:${room}`,
    });

    const first = await graphWith(cached).invoke(askToBook('call_1'));
    // A retry of the same step (a new model call, so a new tool call id) replays the booking.
    const second = await graphWith(cached).invoke(askToBook('call_2'));
    expect(bookings).toBe(1);

    for (const [state, callId] of [
      [first, 'call_1'],
      [second, 'call_2'],
    ] as const) {
      expect(state.bookings).toEqual(['room-7']);
      expect(state.followed).toBe('confirm');
      // The human message was removed by the Command's RemoveMessage; the ToolMessage answers this call.
      expect(state.messages.map((message) => message.getType())).toEqual(['ai', 'tool']);
      const answer = state.messages[1] as ToolMessage;
      expect(ToolMessage.isInstance(answer)).toBe(true);
      expect(answer.tool_call_id).toBe(callId);
      expect(answer.content).toBe('booked room 7');
      expect(answer.artifact).toEqual({ room: 7 });
    }
    const history = await ledger.history({ taskId: 'trip-1' });
    expect(history.map((entry) => entry.source)).toEqual(['executed', 'replayed']);
  });

  it('replays Overwrite, plain tool messages and message ids so that each call keeps its own answer', async () => {
    let runs = 0;
    const look = tool(
      async (_input, config) => {
        runs++;
        const id = config.toolCall!.id!;
        return new Command({
          update: {
            // A message id chosen by the tool, and a plain (not class) tool message in a second update key.
            messages: [new ToolMessage({ content: 'looked', tool_call_id: id, id: `answer-${id}` })],
            bookings: new Overwrite(['only-this']),
          },
        });
      },
      { name: 'book_room', description: 'Looks', schema: z.object({ room: z.number() }) },
    );
    const ledger = createToolLedger({
      cache: createCache(),
      tools: { book_room: { kind: 'read', ttl: '1m' } },
    });
    const cached = cachedTool(look, { ledger, scope: { taskId: 'same-thread' } });
    const graph = graphWith(cached);
    const first = await graph.invoke(askToBook('c1'));
    // The same read again in the same thread (a later turn): the replay answers c2, and c1's
    // answer stays where it was instead of being replaced through a shared message id.
    const second = await graph.invoke({
      messages: [
        ...first.messages,
        new AIMessage({
          content: '',
          id: 'a2',
          tool_calls: [{ id: 'c2', name: 'book_room', args: { room: 7 }, type: 'tool_call' as const }],
        }),
      ],
    });
    expect(runs).toBe(1);
    expect(second.messages.map((m) => `${m.getType()}:${(m as ToolMessage).tool_call_id ?? m.id}`)).toEqual([
      'human:h1',
      'ai:a1',
      'tool:c1',
      'ai:a2',
      'tool:c2',
    ]);
    expect(second.bookings).toEqual(['only-this']);

    // Plain tool messages (what the messages reducer also accepts) are re-addressed too.
    const plain = tool(
      async (_input, config) => {
        runs++;
        return new Command({
          update: { messages: [{ role: 'tool', content: 'plain', tool_call_id: config.toolCall!.id! }] },
        });
      },
      { name: 'plain_tool', description: 'Plain', schema: z.object({}) },
    );
    const plainLedger = createToolLedger({ cache: createCache(), tools: { plain_tool: { kind: 'write' } } });
    const plainCached = cachedTool(plain, { ledger: plainLedger, idempotencyKey: () => 'k' });
    const replayed = (await plainCached
      .invoke({ id: 'p1', name: 'plain_tool', args: {}, type: 'tool_call' })
      .then(() =>
        plainCached.invoke({ id: 'p2', name: 'plain_tool', args: {}, type: 'tool_call' }),
      )) as unknown as Command;
    expect((replayed.update as { messages: { tool_call_id: string }[] }).messages[0]!.tool_call_id).toBe(
      'p2',
    );
  });

  it('keeps Send timeouts, and treats a plain { lg_name: "Command" } object as data', async () => {
    const cache = createCache();
    const ledger = createToolLedger({
      cache,
      tools: { timed: { kind: 'write' }, json_out: { kind: 'write' } },
    });
    const timed = tool(
      async () => new Command({ goto: new Send('confirm', { followed: 'x' }, { timeout: 5000 }) }),
      {
        name: 'timed',
        description: 'Timed',
        schema: z.object({}),
      },
    );
    const jsonOut = tool(async () => ({ lg_name: 'Command', note: 'just data' }), {
      name: 'json_out',
      description: 'JSON',
      schema: z.object({}),
    });
    const timedCached = cachedTool(timed, { ledger, idempotencyKey: () => 't' });
    const jsonCached = cachedTool(jsonOut, { ledger, idempotencyKey: () => 'j' });
    const call = (name: string, id: string) => ({ id, name, args: {}, type: 'tool_call' as const });
    await jsonCached.invoke(call('json_out', 'j1'));
    const data = (await jsonCached.invoke(call('json_out', 'j2'))) as ToolMessage;
    expect(ToolMessage.isInstance(data)).toBe(true);
    await timedCached.invoke(call('timed', 't1'));
    const replayed = (await timedCached.invoke(call('timed', 't2'))) as unknown as Command;
    expect(replayed).toBeInstanceOf(Command);
    expect((replayed.goto as Send[])[0]).toBeInstanceOf(Send);
    expect((replayed.goto as Send[])[0]!.timeout).toEqual(new Send('n', {}, { timeout: 5000 }).timeout);
  });

  it('replays a Command after a restart (a fresh module that never saw one), Send targets included', async () => {
    const cache = createCache();
    const tools = { fan_out: { kind: 'write' as const } };
    let runs = 0;
    const fanOut = tool(
      async () => {
        runs++;
        return new Command({
          goto: [{ lg_name: 'Send', node: 'confirm', args: { followed: 'sent' } }] as never,
        });
      },
      { name: 'fan_out', description: 'Fans out', schema: z.object({}) },
    );
    const options = { scope: { taskId: 't' }, idempotencyKey: () => 'once' };
    const call = (id: string) => ({ id, name: 'fan_out', args: {}, type: 'tool_call' as const });
    const made = (await cachedTool(fanOut, { ...options, ledger: createToolLedger({ cache, tools }) }).invoke(
      call('c1'),
    )) as unknown as Command;
    // A new instance of the package, as in a process that restarted: it must load Command itself.
    vi.resetModules();
    const fresh = (await import('../src/index.ts')) as typeof import('../src/index.ts');
    const replayed = (await fresh
      .cachedTool(fanOut, { ...options, ledger: createToolLedger({ cache, tools }) })
      .invoke(call('c2'))) as unknown as Command;
    expect(runs).toBe(1);
    expect(replayed.lg_name).toBe('Command');
    expect(replayed.toJSON()).toEqual(made.toJSON());
    expect(replayed.goto).toHaveLength(1);
    expect((replayed.goto as unknown[])[0]).toMatchObject({
      lg_name: 'Send',
      node: 'confirm',
      args: { followed: 'sent' },
    });
  });
});

describe('cachedTool with LangGraph interrupt() (human in the loop)', () => {
  it('lets a write tool pause for approval and run once when the graph resumes', async () => {
    let sent = 0;
    const send = cachedTool(
      tool(
        async ({ to }) => {
          const answer = interrupt({ question: `send to ${to}?` }) as string;
          if (answer !== 'yes') return 'cancelled';
          sent++;
          return `sent to ${to}`;
        },
        { name: 'send_email', description: 'Send an email', schema: z.object({ to: z.string() }) },
      ),
      { cache: createCache(), policy: { kind: 'write' } },
    );
    const graph = new StateGraph(MessagesAnnotation)
      .addNode('tools', new ToolNode([send]))
      .addEdge(START, 'tools')
      .compile({ checkpointer: new MemorySaver() });
    const config = { configurable: { thread_id: 'approval' } };
    const paused = await graph.invoke(
      {
        messages: [
          new HumanMessage('email bob'),
          new AIMessage({
            content: '',
            tool_calls: [{ id: 'c1', name: 'send_email', args: { to: 'bob' }, type: 'tool_call' }],
          }),
        ],
      },
      config,
    );
    expect((paused as { __interrupt__?: Array<{ value: unknown }> }).__interrupt__?.[0]?.value).toEqual({
      question: 'send to bob?',
    });
    expect(sent).toBe(0);
    const resumed = await graph.invoke(new Command({ resume: 'yes' }), config);
    expect(resumed.messages.at(-1)?.content).toBe('sent to bob');
    expect(sent).toBe(1);
  });
});

describe('a cached model called inside a LangGraph node with the node config', () => {
  // The common pattern passes the node's config on: LangGraph adds per-step ids
  // (executionInfo), its runtime functions (interrupt, writer) and a control object to it.
  const graphCalling = (model: BaseChatModel) =>
    new StateGraph(MessagesAnnotation)
      .addNode('agent', async (state, config) => ({ messages: [await model.invoke(state.messages, config)] }))
      .addEdge(START, 'agent')
      .compile({ checkpointer: new MemorySaver() });
  const ask = () => ({ messages: [new HumanMessage({ content: 'hi', id: 'h1' })] });

  it('hits on the second run through withCache', async () => {
    const inner = new ScriptedChatModel();
    const graph = graphCalling(withCache(inner, { cache: createCache() }));
    const first = await graph.invoke(ask(), { configurable: { thread_id: 't1' } });
    const second = await graph.invoke(ask(), { configurable: { thread_id: 't2' } });
    expect(inner.log.generate).toBe(1);
    expect(second.messages.at(-1)?.content).toBe(first.messages.at(-1)?.content);
  });

  it('hits on the second run through LangChainCache', async () => {
    const inner = new ScriptedChatModel({ cache: new LangChainCache({ cache: createCache() }) });
    const graph = graphCalling(inner);
    await graph.invoke(ask(), { configurable: { thread_id: 't1' } });
    await graph.invoke(ask(), { configurable: { thread_id: 't2' } });
    expect(inner.log.generate).toBe(1);
  });

  // LangGraph hands run options (`durability`, and the older `checkpointDuring`) on to the nodes'
  // config; they decide when the graph checkpoints, not what the model answers.
  const runs = [
    { configurable: { thread_id: 't1' } },
    { configurable: { thread_id: 't2' } },
    { configurable: { thread_id: 't3' }, durability: 'exit' as const },
    { configurable: { thread_id: 't4' }, durability: 'sync' as const },
    { configurable: { thread_id: 't5' }, checkpointDuring: false },
  ];

  it('hits whatever durability the run asks for, through withCache', async () => {
    const inner = new ScriptedChatModel();
    const graph = graphCalling(withCache(inner, { cache: createCache() }));
    const answers = [];
    for (const run of runs) answers.push((await graph.invoke(ask(), run)).messages.at(-1)?.content);
    expect(inner.log.generate).toBe(1);
    expect(new Set(answers).size).toBe(1);
  });

  it('hits whatever durability the run asks for, through LangChainCache', async () => {
    const inner = new ScriptedChatModel({ cache: new LangChainCache({ cache: createCache() }) });
    const graph = graphCalling(inner);
    for (const run of runs) await graph.invoke(ask(), run);
    expect(inner.log.generate).toBe(1);
  });

  it("streams with streamMode: 'messages' and replays only complete answers", async () => {
    const inner = new AnthropicLikeModel({ stopReason: 'max_tokens' });
    const graph = graphCalling(withCache(inner, { cache: createCache() }));
    const run = async (thread: string) => {
      const texts: string[] = [];
      const stream = await graph.stream(ask(), {
        streamMode: 'messages',
        configurable: { thread_id: thread },
      });
      for await (const [chunk] of stream) texts.push(chunk.text);
      return texts.join('');
    };
    expect(await run('t1')).toBe('Once upon a time');
    expect(await run('t2')).toBe('Once upon a time');
    // A truncated answer (stop_reason only in the streamed chunks' additional_kwargs) is not replayed.
    expect(inner.requests).toBe(2);

    inner.stopReason = 'end_turn';
    await run('t3');
    expect(await run('t4')).toBe('Once upon a time');
    expect(inner.requests).toBe(3);
  });

  it("streams a hit of a model that cannot stream whole with streamMode: 'messages', tool calls included", async () => {
    const call = { id: 'call_1', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' as const };
    class NonStreaming extends ScriptedChatModel {}
    (NonStreaming.prototype as { _streamResponseChunks: unknown })._streamResponseChunks =
      BaseChatModel.prototype._streamResponseChunks;
    const inner = new NonStreaming({ respond: () => ({ content: '', tool_calls: [call] }) });
    const graph = graphCalling(withCache(inner, { cache: createCache() }));
    const run = async (thread: string) => {
      const messages: BaseMessage[] = [];
      const stream = await graph.stream(ask(), {
        streamMode: 'messages',
        configurable: { thread_id: thread },
      });
      for await (const [message] of stream) messages.push(message);
      return messages;
    };
    const first = await run('t1');
    const second = await run('t2');
    expect(inner.log.generate).toBe(1);
    expect(first.map((message) => (message as AIMessage).tool_calls)).toEqual([[call]]);
    expect(second.map((message) => (message as AIMessage).tool_calls)).toEqual([[call]]);
  });

  it('still keys on a call option that changes the answer', async () => {
    const inner = new ScriptedChatModel();
    const model = withCache(inner, { cache: createCache() });
    const graph = new StateGraph(MessagesAnnotation)
      .addNode('agent', async (state, config) => ({
        messages: [
          await model.invoke(state.messages, { ...config, stop: [String(config.configurable?.stop)] }),
        ],
      }))
      .addEdge(START, 'agent')
      .compile();
    await graph.invoke(ask(), { configurable: { stop: 'a' } });
    await graph.invoke(ask(), { configurable: { stop: 'b' } });
    expect(inner.log.generate).toBe(2);
  });
});
