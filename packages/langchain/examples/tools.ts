// Cached tools: a side effect runs once per task even when the step is retried, a read-only tool is
// answered from the cache while fresh. The tool calls below stand in for the ones your model asks
// for; the cached tools go wherever the originals did (model.bindTools(tools), a ToolNode, an agent).
import type { ToolRunnableConfig } from '@langchain/core/tools';
import { tool } from '@langchain/core/tools';
import { createCache, createToolLedger, toolCallContext } from '@x/cache-core';
import { cachedTool } from '@x/langchain-cache';
import { z } from 'zod';

const cache = createCache(); // pass `store: sqliteBackend({ path })` to replay across restarts too
const ledger = createToolLedger({
  cache,
  tools: {
    send_email: { kind: 'write' }, // once per task step: a retry replays the recorded result
    git_commit: { kind: 'write', invalidates: ['git_status'] }, // a commit makes git_status stale
    git_status: { kind: 'read', ttl: '30s' }, // cached by input for 30 s
  }, // tools not listed run every time
});

// Placeholder for your mail API client, which deduplicates by idempotency key.
const mailer = {
  send: async (message: { to: string; subject: string }, _options: { idempotencyKey?: string }) =>
    console.log(`sending "${message.subject}" to ${message.to}`),
};

const sendEmail = tool(
  async ({ to, subject }) => {
    // Pass the key on, so that even a crash between sending and recording cannot send twice.
    await mailer.send({ to, subject }, { idempotencyKey: toolCallContext()?.idempotencyKey });
    return `sent to ${to}`;
  },
  {
    name: 'send_email',
    description: 'Send an email',
    schema: z.object({ to: z.string(), subject: z.string() }),
  },
);
const gitStatus = tool(
  async () => {
    console.log('running git status');
    return 'nothing to commit, working tree clean';
  },
  { name: 'git_status', description: 'Show the working tree status', schema: z.object({}) },
);

// The task a call belongs to, here the thread id of the run config: a retry of the task replays.
const scope = (_input: unknown, config: ToolRunnableConfig) => ({ taskId: config.configurable?.thread_id });
const email = cachedTool(sendEmail, { ledger, scope });
const status = cachedTool(gitStatus, { ledger, scope });

const config = { configurable: { thread_id: 'task-42' } };
// The second round is a retry of the same step: new tool call ids, same calls.
for (const id of ['call_1', 'call_2']) {
  const args = { to: 'ada@example.com', subject: 'Your report' };
  const sent = await email.invoke({ id, name: 'send_email', args, type: 'tool_call' }, config);
  const clean = await status.invoke(
    { id: `${id}b`, name: 'git_status', args: {}, type: 'tool_call' },
    config,
  );
  console.log(sent.tool_call_id, sent.content, '|', clean.content);
}

const stats = await ledger.stats({ taskId: 'task-42' });
console.log(`calls ${stats.calls}, executions avoided ${stats.executionsAvoided}`);
await cache.close();
