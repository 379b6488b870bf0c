/**
 * Cached tools: a side-effecting tool runs once per task even when the run is retried, a
 * read-only tool is answered from the cache while fresh, and a commit makes `git_status` stale.
 * Run offline: `node --conditions=@x/source examples/tools.ts`
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cachedTools } from '@x/ai-sdk-cache';
import { createCache, createToolLedger, toolCallContext } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { generateText, stepCountIs, tool } from 'ai';
import { MockLanguageModelV4 } from 'ai/test';
import { z } from 'zod';

// Placeholder for a real provider model such as `openai('gpt-4o-mini')`: the SDK's test model,
// scripted to call git_status, git_commit, git_status again and send_email, then answer.
const calls = [
  { toolName: 'git_status', input: {} },
  { toolName: 'git_commit', input: { message: 'Release 1.2' } },
  { toolName: 'git_status', input: {} },
  { toolName: 'send_email', input: { to: 'team@example.com', subject: 'Released 1.2' } },
];
const providerModel = new MockLanguageModelV4({
  doGenerate: async ({ prompt }) => {
    const step = prompt.filter((message) => message.role === 'assistant').length;
    const call = calls[step];
    const usage = {
      inputTokens: { total: 20, noCache: 20, cacheRead: 0, cacheWrite: 0 },
      outputTokens: { total: 5, text: 5, reasoning: 0 },
    };
    if (!call)
      return {
        content: [{ type: 'text', text: 'Released.' }],
        finishReason: { unified: 'stop', raw: 'stop' },
        usage,
        warnings: [],
      };
    return {
      content: [
        {
          type: 'tool-call',
          toolCallId: crypto.randomUUID(),
          toolName: call.toolName,
          input: JSON.stringify(call.input),
        },
      ],
      finishReason: { unified: 'tool-calls', raw: 'tool_calls' },
      usage,
      warnings: [],
    };
  },
});

// Stand-ins for the real side effects, counting how often each one happens.
export const effects = { status: 0, commits: 0, emails: 0 };

export async function main(dir = '.cache'): Promise<void> {
  const cache = createCache({ store: sqliteBackend({ path: join(dir, 'agent.db') }) });
  const ledger = createToolLedger({
    cache,
    tools: {
      git_status: { kind: 'read', ttl: '30s' }, // cached by input for 30 s
      git_commit: { kind: 'write', invalidates: ['git_status'] }, // once per task step; makes status stale
      send_email: { kind: 'write' }, // once per task step
    }, // tools not listed run every time
  });

  const tools = {
    git_status: tool({
      description: 'Show the working tree status',
      inputSchema: z.object({}),
      execute: async () => ({ clean: true, checkedAt: ++effects.status }),
    }),
    git_commit: tool({
      description: 'Commit the staged changes',
      inputSchema: z.object({ message: z.string() }),
      execute: async ({ message }) => ({ sha: `c0ffee${++effects.commits}`, message }),
    }),
    send_email: tool({
      description: 'Send an email',
      inputSchema: z.object({ to: z.string(), subject: z.string() }),
      execute: async ({ to }) => {
        // Pass the key on to the mail API (an Idempotency-Key header), so even a crash between
        // sending and recording cannot send twice.
        const idempotencyKey = toolCallContext()?.idempotencyKey;
        return { to, messageId: `msg-${++effects.emails}`, idempotencyKey };
      },
    }),
  };

  // The same task, run twice (a retry after a crash would look the same).
  for (const attempt of [1, 2]) {
    const result = await generateText({
      model: providerModel,
      tools: cachedTools(tools, { ledger, scope: { taskId: 'release-1.2' } }),
      stopWhen: stepCountIs(6),
      prompt: 'Commit the release and tell the team.',
    });
    const { status, commits, emails } = effects;
    console.log(
      `run ${attempt}: ${result.text} git_status ran ${status}, commits ${commits}, emails ${emails}`,
    );
  }

  const stats = await ledger.stats({ taskId: 'release-1.2' });
  console.log(`tool calls ${stats.calls}, executions avoided ${stats.executionsAvoided}`);
  await cache.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
