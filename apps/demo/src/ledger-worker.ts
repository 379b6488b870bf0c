/**
 * One attempt at an agent task with two side-effecting tools behind the tool ledger, in its own
 * process, for the crash-and-retry part of the demo (scenarios/crash.ts):
 *
 *   node dist/ledger-worker.js <crash|retry> '<json config>'
 *
 * `send_welcome_email` then `post_announcement`, each appending what it did to an outbox file (the
 * "outside world"). In `crash` mode the process announces that `post_announcement` started and
 * waits there to be killed; in `retry` mode it runs the same task to the end. Prints one JSON line
 * per event on stdout.
 */
import { appendFileSync } from 'node:fs';
import type { LedgerOutcome, ToolCallContext } from '@x/cache-core';
import { createCache, createToolLedger, storeFromUrl } from '@x/cache-core';

export interface WorkerConfig {
  url: string;
  namespace: string;
  taskId: string;
  outbox: string;
  /** A crashed holder's claim expires after this long; then the retry takes over. */
  leaseTtlMs: number;
}

export type WorkerEvent =
  | { event: 'started'; pid: number }
  | { event: 'tool-started'; tool: string; attempt: number; idempotencyKey: string }
  | {
      event: 'outcome';
      tool: string;
      source: string;
      attempt: number;
      recovered: boolean;
      value: { id: string; sentBy: number };
    }
  | { event: 'done' };

export interface OutboxLine {
  effect: 'email' | 'announcement';
  pid: number;
  attempt: number;
  idempotencyKey: string;
}

const [mode, json] = process.argv.slice(2) as ['crash' | 'retry', string];
const config = JSON.parse(json) as WorkerConfig;
const emit = (event: WorkerEvent) => process.stdout.write(`${JSON.stringify(event)}\n`);

const cache = createCache({ store: storeFromUrl(config.url)!, memory: false, namespace: config.namespace });
const ledger = createToolLedger({
  cache,
  tools: { send_welcome_email: { kind: 'write' }, post_announcement: { kind: 'write' } },
  leaseTtl: config.leaseTtlMs,
  pollInterval: 50,
});
const scope = { taskId: config.taskId };

/** The side effect: what a mail or chat API would receive, with the key it would deduplicate on. */
function deliver(effect: OutboxLine['effect'], context: ToolCallContext): { id: string; sentBy: number } {
  const line: OutboxLine = {
    effect,
    pid: process.pid,
    attempt: context.attempt,
    idempotencyKey: context.idempotencyKey,
  };
  appendFileSync(config.outbox, `${JSON.stringify(line)}\n`);
  return { id: `${effect}-${process.pid}-${context.attempt}`, sentBy: process.pid };
}

function outcomeEvent(tool: string, outcome: LedgerOutcome<{ id: string; sentBy: number }>): WorkerEvent {
  const { source, attempt, recovered, value } = outcome;
  return { event: 'outcome', tool, source, attempt, recovered, value };
}

emit({ event: 'started', pid: process.pid });

const email = await ledger.executeOrReplay({
  tool: 'send_welcome_email',
  input: { to: 'ada@example.com', course: 'fractions' },
  scope,
  execute: (context) => deliver('email', context),
});
emit(outcomeEvent('send_welcome_email', email));

const post = await ledger.executeOrReplay({
  tool: 'post_announcement',
  input: { channel: '#grade-5', text: 'New lesson: fractions' },
  scope,
  execute: async (context) => {
    emit({
      event: 'tool-started',
      tool: 'post_announcement',
      attempt: context.attempt,
      idempotencyKey: context.idempotencyKey,
    });
    // The crash: this process is killed (SIGKILL) while the tool runs, before it records anything.
    if (mode === 'crash') await new Promise(() => setInterval(() => {}, 1000));
    return deliver('announcement', context);
  },
});
emit(outcomeEvent('post_announcement', post));

await cache.close();
emit({ event: 'done' });
