/**
 * The behaviour of `@cachedTool` methods, run against the tsc output of test/fixtures/tools.ts for
 * one decorator mode (cached-tool.standard.test.ts and cached-tool.legacy.test.ts), over a memory
 * cache and a SQLite file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cache, ToolLedger } from '@x/cache-core';
import { CacheError, createCache, createToolLedger, RecordedToolError } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { cachedTool } from '@x/cache-decorators';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type * as ToolsExample from '../examples/agent-tools.ts';
import type * as Fixtures from './fixtures/tools.ts';

export type Mode = 'standard' | 'legacy';

const here = dirname(fileURLToPath(import.meta.url));

function emitted(mode: Mode, file: string): string {
  return join(here, '.out', mode, file);
}

async function load<T>(mode: Mode, file: string): Promise<T> {
  return (await import(emitted(mode, file))) as T;
}

function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

const POLICIES = {
  git_status: { kind: 'read', ttl: '30s' },
  git_commit: { kind: 'write', invalidates: ['git_status'] },
  deploy: { kind: 'write' },
  post_note: { kind: 'write' },
  send_email: { kind: 'write' },
  send_digest: { kind: 'write' },
} as const;

const STORES = ['memory', 'sqlite'] as const;

export function cachedToolSuite(mode: Mode): void {
  describe(`@cachedTool compiled by tsc with ${mode} decorators`, async () => {
    const { Repo, Mailer, World } = await load<typeof Fixtures>(mode, 'test/fixtures/tools.js');

    it('runs the tsc output of this mode', () => {
      const js = readFileSync(emitted(mode, 'test/fixtures/tools.js'), 'utf8');
      expect(js).toContain(mode === 'standard' ? '__esDecorate(' : '__decorate(');
      expect(js).not.toContain(mode === 'standard' ? '__decorate(' : '__esDecorate(');
    });

    describe.each(STORES)('over %s', (store) => {
      let dir: string;
      let clock: ReturnType<typeof manualClock>;
      let cache: Cache;
      let ledger: ToolLedger;
      const opened: Cache[] = [];

      function open(): { cache: Cache; ledger: ToolLedger } {
        const created = createCache({
          clock,
          store: store === 'sqlite' ? sqliteBackend({ path: join(dir, 'agent.db'), clock }) : undefined,
        });
        opened.push(created);
        const made = createToolLedger({ cache: created, tools: POLICIES });
        Mailer.ledger = made;
        return { cache: created, ledger: made };
      }

      beforeEach(() => {
        dir = mkdtempSync(join(tmpdir(), 'x-cache-decorators-tools-'));
        clock = manualClock();
        ({ cache, ledger } = open());
        Mailer.digests = 0;
      });

      afterEach(async () => {
        Mailer.ledger = undefined;
        for (const each of opened.splice(0)) await each.close();
        rmSync(dir, { recursive: true, force: true });
      });

      it('runs a write once per task step: a retry, from any instance, replays the recorded result', async () => {
        const world = new World();
        const first = await new Repo(ledger, 'task-1', world).commit('fix parser');
        // A retried step builds its objects again; the ledger still knows the commit happened.
        const retried = await new Repo(ledger, 'task-1', world).commit('fix parser');
        expect(world.commits).toEqual(['fix parser']);
        expect(retried).toEqual(first);
        expect(retried.at).toBeInstanceOf(Date);

        await new Repo(ledger, 'task-1', world).commit('bump version');
        await new Repo(ledger, 'task-2', world).commit('fix parser');
        expect(world.commits).toEqual(['fix parser', 'bump version', 'fix parser']);
        const history = await ledger.history({ taskId: 'task-1', workItemId: 'commit:fix parser' });
        expect(history.map((entry) => entry.source)).toEqual(['executed', 'replayed']);
      });

      it('keeps undefined and null apart in the middle of the arguments', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-n', world);
        expect(await repo.postNote(null, 'hi')).toBe('posted to null');
        expect(await repo.postNote(undefined, 'hi')).toBe('posted to undefined');
        expect(await repo.postNote(null, 'hi')).toBe('posted to null');
        expect(world.notes).toEqual(['null: hi', 'undefined: hi']);
      });

      it('serves a read from the cache while fresh, and runs it again after its TTL', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-1', world);
        const first = await repo.status();
        expect(await new Repo(ledger, 'task-2', world).status()).toEqual(first);
        clock.advance(29_999);
        // Trailing undefined arguments are dropped from the input, as @cachedLlmCall drops them.
        expect(await repo.status(undefined)).toEqual(first);
        expect(world.statusReads).toBe(1);
        clock.advance(1);
        expect(await repo.status()).toEqual({ commits: 0, read: 2 });
        expect(world.statusReads).toBe(2);
      });

      it('drops the cached read when a write that invalidates it runs', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-1', world);
        expect(await repo.status()).toEqual({ commits: 0, read: 1 });
        await repo.commit('fix parser');
        expect(await repo.status()).toEqual({ commits: 1, read: 2 });
        expect(await repo.status()).toEqual({ commits: 1, read: 2 });
        // A replayed commit changed nothing, so the cached status stays.
        await repo.commit('fix parser');
        expect(await repo.status()).toEqual({ commits: 1, read: 2 });
        expect(world.statusReads).toBe(2);
      });

      it('runs a method the ledger does not list on every call', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-1', world);
        await repo.log();
        await repo.log();
        await repo.log(5);
        expect(world.logReads).toBe(3);
      });

      it('replays a recorded error instead of running the write again', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-1', world);
        await expect(repo.deploy('prod')).rejects.toThrow('deploy to prod rejected');
        const replayed = await repo.deploy('prod').catch((error: unknown) => error);
        expect(RecordedToolError.isInstance(replayed)).toBe(true);
        expect(replayed).toMatchObject({
          message: 'deploy to prod rejected',
          code: 'E_REJECTED',
          replayed: true,
        });
        expect(world.deployAttempts).toBe(1);
      });

      it('keys by the input option and the scope, and hands the key to the method', async () => {
        const world = new World();
        const mailer = new Mailer(world);
        const first = await mailer.send('ada@example.com', 'Report', { taskId: 'task-1', traceId: 't-1' });
        const again = await mailer.send('ada@example.com', 'Report', { taskId: 'task-1', traceId: 't-2' });
        expect(again).toBe(first);
        expect(world.emails).toHaveLength(1);
        await mailer.send('ada@example.com', 'Report', { taskId: 'task-2', traceId: 't-3' });
        expect(world.emails).toHaveLength(2);
        const [one, two] = world.emails;
        expect(one!.key).toMatch(/^auto:send_email:/);
        expect(two!.key).not.toBe(one!.key);

        // An explicit idempotency key: one confirmation per order, whichever instance sends it.
        await new Mailer(world).confirmOrder('o-7', 'bob@example.com');
        await new Mailer(world).confirmOrder('o-7', 'bob@example.com');
        expect(world.emails.map((email) => email.key)).toEqual([
          one!.key,
          two!.key,
          'order:o-7:confirmation',
        ]);
      });

      it('caches static methods, and force runs the write again', async () => {
        expect(await Mailer.digest('team@example.com')).toBe('digest 1 to team@example.com');
        expect(await Mailer.digest('team@example.com', false)).toBe('digest 1 to team@example.com');
        expect(await Mailer.digest('team@example.com', true)).toBe('digest 2 to team@example.com');
        expect(Mailer.digests).toBe(2);
      });

      it('asks for an input option when an argument cannot be keyed', async () => {
        const error = await new Mailer(new World())
          .sendWith('ada@example.com', () => 'hello')
          .catch((caught: unknown) => caught);
        expect(CacheError.isInstance(error)).toBe(true);
        expect((error as CacheError).code).toBe('E_UNSERIALIZABLE');
        expect((error as Error).message).toMatch(
          /^\[@x\/cache-decorators\] @cachedTool\("send_email"\).* — pass an input option/,
        );
      });

      it.runIf(store === 'sqlite')('replays the write and serves the read after a restart', async () => {
        const world = new World();
        const repo = new Repo(ledger, 'task-1', world);
        const status = await repo.status();
        const commit = await repo.commit('fix parser');
        const after = await repo.status();
        await cache.close();

        const reopened = open();
        const restarted = new Repo(reopened.ledger, 'task-1', world);
        expect(await restarted.commit('fix parser')).toEqual(commit);
        expect(await restarted.status()).toEqual(after);
        expect(after).not.toEqual(status);
        expect(world.commits).toEqual(['fix parser']);
        expect(world.statusReads).toBe(2);
        const stats = await reopened.ledger.stats();
        expect(stats.tools.git_commit).toMatchObject({ executions: 1, replayed: 1 });
        expect(stats.tools.git_status).toMatchObject({ executions: 2, cached: 1 });
      });

      it('runs the README example', async () => {
        const example = await load<typeof ToolsExample>(mode, 'examples/agent-tools.js');
        const lines: string[] = [];
        const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
          lines.push(args.join(' '));
        });
        try {
          await example.demo(cache);
        } finally {
          log.mockRestore();
        }
        expect(lines).toEqual([
          'git status',
          'git commit -m "Release 1.2"',
          'git status',
          'sending "Released 1.2" to team@example.com',
          'calls 8, executions avoided 4',
        ]);
      });
    });

    it('checks its options when the class is defined', () => {
      const ledger = createToolLedger({ cache: createCache() });
      const bad: Array<[string, unknown, RegExp]> = [
        ['git status', { ledger }, /is not a valid tool name/],
        ['git_status', undefined, /needs options with a ledger/],
        ['git_status', {}, /option "ledger" must be a tool ledger/],
        ['git_status', { ledger, ttl: '1h' }, /unknown option "ttl"/],
        ['git_status', { ledger, scope: 'task-1' }, /option "scope" must be/],
        ['git_status', { ledger, input: ['path'] }, /option "input" must be a function/],
      ];
      for (const [name, options, message] of bad) {
        let error: unknown;
        try {
          cachedTool(name, options as never);
        } catch (caught) {
          error = caught;
        }
        expect(CacheError.isInstance(error)).toBe(true);
        expect((error as Error).message).toMatch(message);
        expect((error as Error).message).toMatch(/^\[@x\/cache-decorators\] .+ — .+/);
      }
    });
  });
}
