/**
 * An agent's tools as methods: the commit and the email happen once per task even when the step is
 * retried, and `git status` is answered from the cache while fresh, until a commit makes it stale.
 */
import type { CacheView, ToolLedger } from '@x/cache-core';
import { createToolLedger, toolCallContext } from '@x/cache-core';
import { cachedTool } from '@x/cache-decorators';

// PLACEHOLDERS for a real shell and a real mail API, so that the example runs offline.
async function shell(command: string): Promise<string> {
  console.log(command);
  return `ok: ${command}`;
}
const mailer = {
  // A real mail API drops a second message sent with the same idempotency key.
  async send(message: { to: string; subject: string }, _options: { idempotencyKey?: string }) {
    console.log(`sending "${message.subject}" to ${message.to}`);
    return `sent to ${message.to}`;
  },
};

export function releaseLedger(cache: CacheView): ToolLedger {
  return createToolLedger({
    cache,
    tools: {
      git_status: { kind: 'read', ttl: '30s' }, // cached by input for 30 s
      git_commit: { kind: 'write', invalidates: ['git_status'] }, // once per task; makes status stale
      send_email: { kind: 'write' }, // once per task
    }, // methods whose names are not listed run every time
  });
}

const ledger = (self: ReleaseTools) => self.ledger;
const scope = (self: ReleaseTools) => ({ taskId: self.taskId });

export class ReleaseTools {
  constructor(
    readonly ledger: ToolLedger,
    readonly taskId: string,
  ) {}

  @cachedTool('git_status', { ledger, scope })
  async status(): Promise<string> {
    return shell('git status');
  }

  @cachedTool('git_commit', { ledger, scope })
  async commit(message: string): Promise<string> {
    return shell(`git commit -m "${message}"`);
  }

  @cachedTool('send_email', { ledger, scope })
  async email(to: string, subject: string): Promise<string> {
    // Pass the key on, so that even a crash between sending and recording cannot send twice.
    return mailer.send({ to, subject }, { idempotencyKey: toolCallContext()?.idempotencyKey });
  }
}

export async function demo(cache: CacheView): Promise<void> {
  const ledger = releaseLedger(cache);
  // The same step, run twice, as a retry after a crash would (with a SQLite cache, across restarts).
  for (let attempt = 1; attempt <= 2; attempt++) {
    const tools = new ReleaseTools(ledger, 'release-1.2');
    await tools.status();
    await tools.commit('Release 1.2');
    await tools.status();
    await tools.email('team@example.com', 'Released 1.2');
  }
  const stats = await ledger.stats({ taskId: 'release-1.2' });
  console.log(`calls ${stats.calls}, executions avoided ${stats.executionsAvoided}`);
}
