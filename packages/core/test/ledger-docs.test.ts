/**
 * The examples of docs/ledger.md, run with local stand-ins for the mail and payment services
 * (a recording mailer, a node:http server on 127.0.0.1), so the page cannot drift from the code.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sqliteBackend } from '../src/backends/sqlite.ts';
import type { Cache } from '../src/cache.ts';
import { createCache } from '../src/cache.ts';
import { cachedFetch, createCachedFetch } from '../src/http/index.ts';
import type { ToolLedger } from '../src/ledger/index.ts';
import { createIdempotencyStore, createToolLedger, toolCallContext } from '../src/ledger/index.ts';

let dir: string;
let cache: Cache;
let ledger: ToolLedger;
let api: Server;
let apiUrl: string;
const charges: Array<{ key: string | undefined; body: string }> = [];

beforeAll(async () => {
  api = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      if (req.method === 'POST') {
        charges.push({ key: req.headers['idempotency-key'] as string | undefined, body });
        res
          .writeHead(201, { 'content-type': 'application/json' })
          .end(JSON.stringify({ id: `ch_${charges.length}` }));
        return;
      }
      res.writeHead(200, { etag: '"r1"', 'cache-control': 'max-age=60' }).end('{"name":"x"}');
    });
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => api.close(resolve));
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'x-ledger-docs-'));
  charges.length = 0;
  // From "The tool ledger".
  cache = createCache({
    store: sqliteBackend({ path: join(dir, 'agent.db') }),
    dependencies: { git_commit: ['git_status', 'git_log'] },
  });
  ledger = createToolLedger({
    cache,
    tools: {
      send_email: { kind: 'write' },
      git_commit: { kind: 'write' },
      git_status: { kind: 'read', ttl: '30s' },
      git_log: { kind: 'read', ttl: '10m' },
    },
  });
});
afterEach(async () => {
  await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('docs/ledger.md', () => {
  it('the tool ledger: a retried step replays the email instead of sending it again', async () => {
    const outbox: Array<{ idempotencyKey: string }> = [];
    const mailer = {
      send: async (message: { idempotencyKey: string }) => {
        outbox.push(message);
        return { messageId: `m-${outbox.length}` };
      },
    };
    const step = () =>
      ledger.executeOrReplay({
        tool: 'send_email',
        input: { to: 'ada@example.com', subject: 'Your report' },
        scope: { taskId: 'task-42', workItemId: 'notify' },
        execute: async ({ idempotencyKey }) => mailer.send({ idempotencyKey }),
      });
    const sent = await step();
    const retried = await step();
    expect([sent.source, retried.source]).toEqual(['executed', 'replayed']);
    expect(retried.value).toEqual({ messageId: 'm-1' });
    expect(outbox).toHaveLength(1);

    const steps = await ledger.history({ taskId: 'task-42' });
    expect(steps.map((s) => [s.tool, s.source])).toEqual([
      ['send_email', 'executed'],
      ['send_email', 'replayed'],
    ]);
    expect(await ledger.history({ taskId: 'task-42', workItemId: 'notify' })).toHaveLength(2);
    const stats = await ledger.stats();
    expect(stats).toMatchObject({ replayRate: 0.5, executionsAvoided: 1, records: { succeeded: 1 } });
    expect(stats.tools.send_email).toMatchObject({ calls: 2, executions: 1, replayed: 1 });
    expect((await ledger.stats({ taskId: 'task-42' })).calls).toBe(2);
  });

  it('passing the key on: the payment API sees one charge with the idempotency key', async () => {
    const charge = () =>
      ledger.executeOrReplay({
        tool: 'charge_card',
        input: { customer: 'cus_1', amount: 1200 },
        idempotencyKey: `order-7781:charge`,
        execute: ({ idempotencyKey, signal }) =>
          fetch(`${apiUrl}/charges`, {
            method: 'POST',
            headers: { 'idempotency-key': idempotencyKey },
            body: JSON.stringify({ customer: 'cus_1', amount: 1200 }),
            signal,
          }).then((r) => r.json()),
      });
    expect((await charge()).value).toEqual({ id: 'ch_1' });
    expect((await charge()).value).toEqual({ id: 'ch_1' });
    expect(charges).toEqual([{ key: 'order-7781:charge', body: '{"customer":"cus_1","amount":1200}' }]);
  });

  it('the idempotency store on its own: a webhook delivered twice is handled once', async () => {
    const idempotency = createIdempotencyStore({ cache, leaseTtl: '1m', ttl: '24h' });
    const handled: string[] = [];
    const handle = async (event: { id: string; payload: unknown }) => {
      handled.push(event.id);
      return { ok: true };
    };
    const onWebhook = async (event: { id: string; payload: unknown }) => {
      const claim = await idempotency.checkOrCreate(event.id, event.payload);
      if (claim.status === 'created') {
        try {
          const result = await handle(event);
          await idempotency.markSucceeded(event.id, result, claim.owner);
          return result;
        } catch (error) {
          await idempotency.markFailed(event.id, error, claim.owner);
          throw error;
        }
      }
      if (claim.status === 'pending') return (await idempotency.waitFor(event.id))?.result;
      return claim.record.result;
    };
    const event = { id: 'evt_1', payload: { type: 'invoice.paid' } };
    expect(await Promise.all([onWebhook(event), onWebhook(event)])).toEqual([{ ok: true }, { ok: true }]);
    expect(await onWebhook(event)).toEqual({ ok: true });
    expect(handled).toEqual(['evt_1']);
    await expect(onWebhook({ id: 'evt_1', payload: { type: 'other' } })).rejects.toThrow(/different request/);
  });

  it('cachedFetch and createCachedFetch answer from the http tier', async () => {
    const first = await cachedFetch(`${apiUrl}/repos/x`, undefined, { cache });
    const get = createCachedFetch({ cache, ttl: '5m' });
    const second = await get(`${apiUrl}/repos/x`);
    expect([first.headers.get('x-cache'), second.headers.get('x-cache')]).toEqual(['MISS', 'HIT']);
    expect(await second.json()).toEqual({ name: 'x' });
  });

  it('ledger.wrap for adapter authors keeps the signature and exposes the key', async () => {
    type Email = { to: string; subject: string };
    const keys: Array<string | undefined> = [];
    const send = async (input: Email) => {
      keys.push(toolCallContext()?.idempotencyKey);
      return `sent ${input.subject}`;
    };
    const currentTask = () => 'task-42';
    const execute = ledger.wrap(
      'send_email',
      (input: Email, _options: { toolCallId: string }) => send(input),
      {
        scope: () => ({ taskId: currentTask() }),
        idempotencyKey: (input) => `email:${input.to}:${input.subject}`,
      },
    );
    const email = { to: 'ada@example.com', subject: 'hi' };
    expect(await execute(email, { toolCallId: 'call_1' })).toBe('sent hi');
    expect(await execute(email, { toolCallId: 'call_2' })).toBe('sent hi');
    expect(keys).toEqual(['email:ada@example.com:hi']);
  });
});
