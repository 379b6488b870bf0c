/**
 * The behaviour of decorated methods, run against the tsc output of test/fixtures for one
 * decorator mode (standard.test.ts and legacy.test.ts), over a memory cache and a SQLite file.
 * Each mode runs in its own test file so that its module graph (and the registry of cached
 * methods) is its own, as in an application compiled in that mode.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cache } from '@x/cache-core';
import { CacheError, createCache, setDefaultCache } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { invalidateCached, invalidateCachedPrefix, warm } from '@x/cache-decorators';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type * as FunctionExample from '../examples/function-form.ts';
import type * as Examples from '../examples/lesson-service.ts';
import type * as ModelExample from '../examples/model.ts';
import type * as TenantExample from '../examples/tenant-service.ts';
import type * as WarmExample from '../examples/warm-and-invalidate.ts';
import type * as Scopes from './fixtures/scopes.ts';
import type * as Fixtures from './fixtures/services.ts';
import type * as StandardOnly from './fixtures/standard-only.ts';

export type Mode = 'standard' | 'legacy';

const here = dirname(fileURLToPath(import.meta.url));
const DAY = 86_400_000;

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

const STORES = ['memory', 'sqlite'] as const;

/** Fails instead of hanging when a call never settles (a deadlock). */
async function settlesWithin<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function decoratorSuite(mode: Mode): void {
  describe(`@cachedLlmCall compiled by tsc with ${mode} decorators`, async () => {
    const fx = await load<typeof Fixtures>(mode, 'test/fixtures/services.js');
    const { LessonService, TenantTutor, TestLlm } = fx;

    it('runs the tsc output of this mode', () => {
      const js = readFileSync(emitted(mode, 'test/fixtures/services.js'), 'utf8');
      expect(js).toContain(mode === 'standard' ? '__esDecorate(' : '__decorate(');
      expect(js).not.toContain(mode === 'standard' ? '__decorate(' : '__esDecorate(');
    });

    describe.each(STORES)('over %s', (store) => {
      let dir: string;
      let clock: ReturnType<typeof manualClock>;
      let cache: Cache;
      const opened: Cache[] = [];

      function openCache(file = 'cache.db'): Cache {
        const created = createCache({
          clock,
          store: store === 'sqlite' ? sqliteBackend({ path: join(dir, file), clock }) : undefined,
        });
        opened.push(created);
        return created;
      }

      beforeEach(() => {
        dir = mkdtempSync(join(tmpdir(), 'x-cache-decorators-'));
        clock = manualClock();
        cache = openCache();
        setDefaultCache(cache);
        LessonService.glossaryLlm.current = undefined;
      });

      afterEach(async () => {
        setDefaultCache(undefined);
        for (const each of opened.splice(0)) await each.close();
        rmSync(dir, { recursive: true, force: true });
      });

      it('answers a repeated call from the cache and runs the body once', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const first = await lessons.introPage('math', 'fractions', 5);
        expect(await lessons.introPage('math', 'fractions', 5)).toBe(first);
        expect(llm.calls).toBe(1);
        expect(await lessons.introPage('math', 'fractions', 6)).not.toBe(first);
        expect(llm.calls).toBe(2);
        expect(await cache.stats()).toMatchObject({ hits: 1, misses: 2, sets: 2 });
      });

      it('leaves the instance out of the key: another instance gets the same answer', async () => {
        const first = await new LessonService(new TestLlm()).introPage('math', 'fractions', 5);
        const otherLlm = new TestLlm();
        expect(await new LessonService(otherLlm).introPage('math', 'fractions', 5)).toBe(first);
        expect(otherLlm.calls).toBe(0);
      });

      it('keys by every argument, canonicalised: object key order, Dates, trailing undefined', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const asOf = new Date('2025-09-01T00:00:00Z');
        const first = await lessons.wordProblem('math', { difficulty: 'easy', seed: 7, asOf });
        const reordered = await lessons.wordProblem('math', {
          asOf: new Date(asOf),
          seed: 7,
          difficulty: 'easy',
        });
        expect(reordered).toEqual(first);
        expect(reordered.createdAt).toBeInstanceOf(Date);
        expect(llm.calls).toBe(1);
        await lessons.wordProblem('math', { difficulty: 'easy', seed: 8, asOf });
        await lessons.wordProblem('math', {
          difficulty: 'easy',
          seed: 7,
          asOf: new Date(asOf.getTime() + 1),
        });
        expect(llm.calls).toBe(3);
        await lessons.hint('why?');
        await lessons.hint('why?', undefined);
        expect(llm.calls).toBe(4);
        await lessons.hint('why?', 2);
        expect(llm.calls).toBe(5);
      });

      it('serves an entry until its TTL and recomputes after it (ttl and ttlHours)', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const page = await lessons.introPage('math', 'fractions', 5);
        const problem = await lessons.wordProblem('math', { difficulty: 'easy' });
        clock.advance(DAY - 1);
        expect(await lessons.wordProblem('math', { difficulty: 'easy' })).toEqual(problem);
        clock.advance(1);
        expect(await lessons.wordProblem('math', { difficulty: 'easy' })).not.toEqual(problem);
        clock.advance(6 * DAY - 2);
        expect(await lessons.introPage('math', 'fractions', 5)).toBe(page);
        expect(llm.calls).toBe(3);
        clock.advance(2);
        expect(await lessons.introPage('math', 'fractions', 5)).not.toBe(page);
        expect(llm.calls).toBe(4);
      });

      it('runs the body once for concurrent identical calls', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const release = llm.hold();
        const calls = Array.from({ length: 5 }, () => lessons.introPage('math', 'fractions', 5));
        const other = lessons.introPage('math', 'decimals', 5);
        await Promise.resolve();
        release();
        const answers = await Promise.all(calls);
        expect(new Set(answers).size).toBe(1);
        expect(await other).not.toBe(answers[0]);
        expect(llm.calls).toBe(2);
      });

      it('does not cache errors: every waiting caller gets the error, the next call runs again', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        llm.failures = 1;
        const release = llm.hold();
        const calls = Array.from({ length: 3 }, () => lessons.introPage('math', 'fractions', 5));
        release();
        for (const call of calls) await expect(call).rejects.toThrow('provider unavailable');
        expect(llm.calls).toBe(1);
        const answer = await lessons.introPage('math', 'fractions', 5);
        expect(answer).toContain('answer 2');
        expect(await lessons.introPage('math', 'fractions', 5)).toBe(answer);
        expect(llm.calls).toBe(2);
      });

      it('keeps answers that shouldCache refuses out of the cache', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        await lessons.hint('forbidden topic');
        await lessons.hint('forbidden topic');
        expect(llm.calls).toBe(2);
        await lessons.hint('fine topic');
        await lessons.hint('fine topic');
        expect(llm.calls).toBe(3);
      });

      it('caches nothing that is not decorated (deterministic work runs every time)', async () => {
        const lessons = new LessonService(new TestLlm());
        await lessons.outline('math');
        await lessons.outline('math');
        expect(lessons.outlineCalls).toBe(2);
        expect((await cache.getAllStats()).totals).toMatchObject({ hits: 0, misses: 0, sets: 0 });
      });

      it('selects the key with key: (self, …args) and uses the instance’s cache', async () => {
        const llm = new TestLlm();
        const tenantCache = openCache().withNamespace('tutoring');
        const acme = new TenantTutor('acme', llm, tenantCache);
        const first = await acme.answer('What is a fraction?', 'req-1');
        expect(await acme.answer('  what is a FRACTION?', 'req-2')).toBe(first);
        expect(
          await new TenantTutor('acme', new TestLlm(), tenantCache).answer('what is a fraction?', 'r'),
        ).toBe(first);
        expect(
          await new TenantTutor('globex', llm, tenantCache).answer('What is a fraction?', 'req-3'),
        ).not.toBe(first);
        expect(llm.calls).toBe(2);
        expect(await tenantCache.stats()).toMatchObject({ hits: 2, sets: 2 });
        expect((await cache.stats()).sets).toBe(0);
      });

      it('keeps two classes apart under one prefix unless they opt in', async () => {
        const llm = new TestLlm();
        const math = await new fx.MathTutor(llm).explain('ratios');
        const history = await new fx.HistoryTutor(llm).explain('ratios');
        expect(math).toContain('math explains');
        expect(history).toContain('history explains');
        expect(await new fx.MathTutor(llm).explain('ratios')).toBe(math);
        expect(llm.calls).toBe(2);

        const news = await new fx.NewsSummarizer(llm).summarize('rates rise');
        expect(await new fx.MailSummarizer(llm).summarize('rates rise')).toBe(news);
        const slogan = await new fx.OriginalService(llm).slogan('tea');
        expect(await new fx.RenamedService(llm).slogan('tea')).toBe(slogan);
        expect(llm.calls).toBe(4);
      });

      it('warns when two different classes of one name would share entries', async () => {
        const warnings: Array<Error & { code?: string }> = [];
        const listener = (warning: Error) => warnings.push(warning);
        process.on('warning', listener);
        try {
          const llm = new TestLlm();
          const clashes = async () => {
            await new Promise((resolve) => setImmediate(resolve));
            return warnings.filter((warning) => warning.code === 'X_CACHE_SCOPE_CLASH');
          };
          const MathTutor = fx.makeTutor('math');
          await new MathTutor(llm).explain('intro');
          // A Tutor made by an earlier test counts as another class too.
          const before = (await clashes()).length;
          await new MathTutor(llm).explain('again');
          expect(await clashes()).toHaveLength(before);
          await new (fx.makeTutor('history'))(llm).explain('intro');
          const after = await clashes();
          expect(after).toHaveLength(before + 1);
          expect(after.at(-1)!.message).toMatch(/'Tutor\.explain'.*scope option/);
        } finally {
          process.off('warning', listener);
        }
      });

      it('files a method under the class that declares it, whichever subclass calls it', async () => {
        const llm = new TestLlm();
        const loud = await new fx.LoudWriter(llm).tagline('tea');
        const plain = await new fx.Writer(llm).tagline('tea');
        expect(loud).toBe(plain.toUpperCase());
        expect(llm.calls).toBe(1);
      });

      it('runs an override that calls super on the same key (scope: false) without waiting for itself', async () => {
        const llm = new TestLlm();
        const answer = await settlesWithin(new fx.SharedSub(llm).shared('q'));
        expect(answer).toBe('sub(answer 1: base q)');
        // The outer call stored its own answer; the inner one ran uncached.
        expect(await new fx.SharedSub(llm).shared('q')).toBe(answer);
        expect(await new fx.SharedBase(llm).shared('q')).toBe(answer);
        expect(llm.calls).toBe(1);
        expect(await cache.stats()).toMatchObject({ sets: 1, hits: 2 });
      });

      it('still runs concurrent calls of one key from different callers once', async () => {
        const llm = new TestLlm();
        const release = llm.hold();
        const calls = [
          new fx.SharedSub(llm).shared('r'),
          new fx.SharedSub(llm).shared('r'),
          new fx.SharedBase(llm).shared('r'),
        ];
        await new Promise((resolve) => setImmediate(resolve));
        release();
        const answers = await settlesWithin(Promise.all(calls));
        expect(answers).toEqual(Array(3).fill('sub(answer 1: base r)'));
        expect(llm.calls).toBe(1);
        expect(await cache.stats()).toMatchObject({ sets: 1, coalesced: 2 });
      });

      it('keeps undefined and null apart in the middle of the arguments', async () => {
        const llm = new TestLlm();
        const shapes = new fx.KeyShapes(llm);
        const withUndefined = await shapes.mid(undefined, 'x');
        const withNull = await shapes.mid(null, 'x');
        expect(withUndefined).toBe('answer 1: mid undefined x');
        expect(withNull).toBe('answer 2: mid null x');
        expect(await shapes.mid(undefined, 'x')).toBe(withUndefined);
        expect(await shapes.mid(null, 'x')).toBe(withNull);
        expect(llm.calls).toBe(2);
        expect(await invalidateCached(shapes, 'mid', undefined, 'x')).toBe(true);
        expect(await shapes.mid(null, 'x')).toBe(withNull);
        expect(llm.calls).toBe(2);
      });

      it('keys calls without an undefined in the middle as before (the arguments array)', async () => {
        const llm = new TestLlm();
        const shapes = new fx.KeyShapes(llm);
        const answer = await shapes.mid('a', 'x');
        const trailing = await (shapes.mid as (...args: unknown[]) => Promise<string>)('b', 'x', undefined);
        const request = (args: unknown[]) => ({
          name: 'key_shapes',
          request: { scope: 'KeyShapes.mid', args },
        });
        expect(await cache.get(request(['a', 'x']))).toBe(answer);
        expect(await cache.get(request(['b', 'x']))).toBe(trailing);
        expect(llm.calls).toBe(2);
      });

      it('knows the declaring class from the first instance, before any call', async () => {
        const fresh = new fx.FreshService(new TestLlm());
        expect(await invalidateCached(fresh.fresh, 'never called')).toBe(false);
      });

      it('caches static methods', async () => {
        const llm = new TestLlm();
        LessonService.glossaryLlm.current = llm;
        const entry = await LessonService.glossary('atom');
        expect(await LessonService.glossary('atom')).toBe(entry);
        expect(llm.calls).toBe(1);
      });

      it('stores in the tier the tier option names', async () => {
        const lessons = new LessonService(new TestLlm());
        await lessons.lookup('atom');
        await lessons.lookup('atom');
        expect(await cache.tier('tools').stats()).toMatchObject({ hits: 1, sets: 1 });
        expect((await cache.stats()).sets).toBe(0);
      });

      it('counts the usage option as tokens and cost saved on every hit', async () => {
        const lessons = new LessonService(new TestLlm());
        await lessons.introPage('math', 'fractions', 5);
        await lessons.introPage('math', 'fractions', 5);
        await lessons.introPage('math', 'fractions', 5);
        const stats = await cache.stats();
        expect(stats).toMatchObject({ hits: 2, inputTokensSaved: 240, outputTokensSaved: 1600 });
        expect(stats.costSavedUsd).toBeGreaterThan(0);
      });

      it('looks the default cache up at call time', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        await lessons.introPage('math', 'fractions', 5);
        const other = openCache('other.db');
        setDefaultCache(other);
        await lessons.introPage('math', 'fractions', 5);
        expect(llm.calls).toBe(2);
        expect((await other.stats()).sets).toBe(1);
      });

      it('invalidateCached(service.method, …args) removes exactly one call', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const fractions = await lessons.introPage('math', 'fractions', 5);
        const decimals = await lessons.introPage('math', 'decimals', 5);
        expect(await invalidateCached(lessons.introPage, 'math', 'fractions', 5)).toBe(true);
        expect(await invalidateCached(lessons.introPage, 'math', 'fractions', 5)).toBe(false);
        expect(await lessons.introPage('math', 'decimals', 5)).toBe(decimals);
        expect(await lessons.introPage('math', 'fractions', 5)).not.toBe(fractions);
        expect(llm.calls).toBe(3);
        expect(await invalidateCached(lessons, 'introPage', 'math', 'decimals', 5)).toBe(true);
        await lessons.introPage('math', 'decimals', 5);
        expect(llm.calls).toBe(4);

        LessonService.glossaryLlm.current = llm;
        await LessonService.glossary('atom');
        expect(await invalidateCached(LessonService.glossary, 'atom')).toBe(true);
      });

      it('tags from the tags option group entries for invalidateTags', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        await lessons.wordProblem('math', { difficulty: 'easy' });
        await lessons.wordProblem('physics', { difficulty: 'easy' });
        expect(await cache.invalidateTags(['math'])).toBe(1);
        await lessons.wordProblem('math', { difficulty: 'easy' });
        await lessons.wordProblem('physics', { difficulty: 'easy' });
        expect(llm.calls).toBe(3);
      });

      it('asks for the instance when the key or cache option reads it', async () => {
        const llm = new TestLlm();
        const tutor = new TenantTutor('acme', llm, cache);
        await tutor.answer('What is a ratio?', 'req-1');
        const error = await invalidateCached(tutor.answer, 'What is a ratio?', 'req-1').catch(
          (e: unknown) => e,
        );
        expect(CacheError.isInstance(error)).toBe(true);
        expect((error as Error).message).toMatch(/^\[@x\/cache-decorators\] .* reads the instance/);
        expect((error as Error).message).toContain("invalidateCached(service, 'answer'");
        expect(await invalidateCached(tutor, 'answer', ' what is a ratio? ', 'req-9')).toBe(true);
        await tutor.answer('What is a ratio?', 'req-2');
        expect(llm.calls).toBe(2);
      });

      it('invalidateCachedPrefix drops every call under a prefix, in every class', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        await lessons.introPage('math', 'fractions', 5);
        await lessons.introPage('math', 'decimals', 5);
        await new fx.MathTutor(llm).explain('ratios');
        await new fx.HistoryTutor(llm).explain('ratios');
        expect(await invalidateCachedPrefix('explain')).toBe(2);
        expect(await invalidateCachedPrefix(lessons.introPage)).toBe(2);
        expect(await invalidateCachedPrefix('intro_page')).toBe(0);
        await lessons.introPage('math', 'fractions', 5);
        await new fx.MathTutor(llm).explain('ratios');
        expect(llm.calls).toBe(6);
        const tutorCache = openCache('tutor.db');
        await new TenantTutor('acme', llm, tutorCache).answer('What is a ratio?', 'req-1');
        await expect(invalidateCachedPrefix('tutor_answer')).rejects.toThrow(
          "takes its cache from its instance — pass that cache, and its tier if it is not responses: invalidateCachedPrefix('tutor_answer', { cache: service.cache, tier: 'templates' })",
        );
        expect(await invalidateCachedPrefix('tutor_answer', { cache: tutorCache })).toBe(1);
      });

      it('warm(service, method, argsList) pre-fills and reports filled, cached, skipped and failed', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const report = await warm(
          lessons,
          'introPage',
          [
            ['math', 'fractions', 5],
            ['math', 'decimals', 5],
            ['math', 'fractions', 5],
          ],
          { concurrency: 2 },
        );
        expect(report).toEqual({
          filled: [
            ['math', 'fractions', 5],
            ['math', 'decimals', 5],
          ],
          alreadyCached: [],
          skipped: [],
          failed: [],
        });
        expect(llm.calls).toBe(2);
        await lessons.introPage('math', 'decimals', 5);
        expect(llm.calls).toBe(2);

        llm.failures = 1;
        const second = await warm(lessons, 'introPage', [
          ['math', 'fractions', 5],
          ['math', 'percentages', 5],
          ['math', 'ratios', 5],
        ]);
        expect(second.alreadyCached).toEqual([['math', 'fractions', 5]]);
        expect(second.filled.length + second.failed.length).toBe(2);
        expect(second.failed).toHaveLength(1);
        expect(String(second.failed[0]!.error)).toContain('provider unavailable');

        // Different argument lists with one key (the key option ignores the request id) share
        // the entry, and each is reported.
        const tutor = new TenantTutor('acme', llm, openCache('warm-tutor.db'));
        const calls = llm.calls;
        expect(
          await warm(tutor, 'answer', [
            ['What is a ratio?', 'req-1'],
            ['what is a ratio?', 'req-2'],
            ['What is a ratio?', 'req-1'],
          ]),
        ).toEqual({
          filled: [['What is a ratio?', 'req-1']],
          alreadyCached: [['what is a ratio?', 'req-2']],
          skipped: [],
          failed: [],
        });
        expect(llm.calls).toBe(calls + 1);

        const hints = await warm(lessons, 'hint', [['forbidden topic'], ['fine topic']]);
        expect(hints).toMatchObject({ filled: [['fine topic']], skipped: [['forbidden topic']] });

        const before = await lessons.introPage('math', 'fractions', 5);
        const refreshed = await warm(lessons, 'introPage', [['math', 'fractions', 5]], { refresh: true });
        expect(refreshed).toMatchObject({ filled: [['math', 'fractions', 5]] });
        expect(await lessons.introPage('math', 'fractions', 5)).not.toBe(before);
      });

      it('warms functions and static methods by prefix, and asks for the instance of instance methods', async () => {
        const llm = new TestLlm();
        LessonService.glossaryLlm.current = llm;
        expect((await warm('glossary', [['atom'], ['ion']])).filled).toEqual([['atom'], ['ion']]);
        expect((await warm(LessonService.glossary, [['atom']])).alreadyCached).toEqual([['atom']]);
        await LessonService.glossary('ion');
        expect(llm.calls).toBe(2);
        const lessons = new LessonService(llm);
        await expect(warm(lessons.introPage, [['math', 'fractions', 5]])).rejects.toThrow(
          "warm(service, 'introPage', argsList",
        );
        await expect(warm('intro_page', [['math', 'fractions', 5]])).rejects.toThrow(
          "warm(service, 'introPage'",
        );
        await expect(warm('nobody_uses_this', [])).rejects.toThrow('no cached function or method');
      });

      it.runIf(store === 'sqlite')('still hits after a restart on the same SQLite file', async () => {
        const llm = new TestLlm();
        const lessons = new LessonService(llm);
        const asOf = new Date('2025-09-01T00:00:00Z');
        const page = await lessons.introPage('math', 'fractions', 5);
        const problem = await lessons.wordProblem('math', { difficulty: 'hard', asOf });
        const math = await new fx.MathTutor(llm).explain('ratios');
        await cache.close();

        const reopened = openCache();
        setDefaultCache(reopened);
        const fresh = new TestLlm();
        const restarted = new LessonService(fresh);
        expect(await restarted.introPage('math', 'fractions', 5)).toBe(page);
        const again = await restarted.wordProblem('math', { asOf, difficulty: 'hard' });
        expect(again).toEqual(problem);
        expect(again.createdAt).toBeInstanceOf(Date);
        expect(await new fx.MathTutor(fresh).explain('ratios')).toBe(math);
        expect(await new fx.HistoryTutor(fresh).explain('ratios')).not.toBe(math);
        expect(fresh.calls).toBe(1);
        expect(await reopened.stats()).toMatchObject({ hits: 3 });
      });

      it('runs the README examples', async () => {
        const model = await load<typeof ModelExample>(mode, 'examples/model.js');
        const lessons = await load<typeof Examples>(mode, 'examples/lesson-service.js');
        const before = model.modelCalls.count;
        const result = await lessons.demo(cache);
        expect(result.second).toBe(result.first);
        expect(result.hits).toBe(1);
        expect(model.modelCalls.count - before).toBe(1);

        const fn = await load<typeof FunctionExample>(mode, 'examples/function-form.js');
        expect(await fn.demo(cache)).toEqual({ removed: true, same: true });

        const tenant = await load<typeof TenantExample>(mode, 'examples/tenant-service.js');
        expect(await tenant.demo(cache)).toEqual({ shared: true, otherTenantShared: false });

        const warmed = await load<typeof WarmExample>(mode, 'examples/warm-and-invalidate.js');
        const outcome = await warmed.demo(cache);
        expect(outcome.report.filled).toHaveLength(2);
        expect(outcome.report.alreadyCached).toEqual([['math', 'fractions', 5]]);
        expect(outcome).toMatchObject({ removedOne: true, removedAll: 2, removedTagged: 1 });
      });
    });

    it('refuses to decorate an async generator or generator method, naming the fix', () => {
      for (const kind of ['async', 'sync'] as const) {
        let error: unknown;
        try {
          fx.defineGeneratorMethod(kind);
        } catch (thrown) {
          error = thrown;
        }
        expect(CacheError.isInstance(error)).toBe(true);
        expect((error as CacheError).code).toBe('E_INVALID_OPTION');
        expect((error as Error).message).toMatch(
          kind === 'async'
            ? /cannot cache async generator method tokens/
            : /cannot cache generator method tokens/,
        );
        expect((error as Error).message).toMatch(/returns the collected result.*AI SDK.*LangChain/);
      }
    });

    // Runs after the suites above: the second copy of the module registers its prefixes again.
    describe('across processes', () => {
      beforeEach(() => setDefaultCache(createCache()));
      afterEach(() => setDefaultCache(undefined));

      it('files entries under the declaring class whichever subclass a process constructs first', async () => {
        // A second copy of the compiled module stands in for another process (or a restart).
        const other = await load<typeof Fixtures>(mode, 'test/fixtures/services.js?copy');
        expect(other.Writer).not.toBe(fx.Writer);
        const llm = new TestLlm();
        const loud = await new fx.LoudWriter(llm).tagline('coffee');
        expect(await new other.Writer(llm).tagline('coffee')).toBe(loud.toLowerCase());
        expect(await new other.LoudWriter(llm).tagline('coffee')).toBe(loud);
        expect(llm.calls).toBe(1);
      });
    });

    describe('default scopes', () => {
      let cache: Cache;
      beforeEach(() => {
        cache = createCache();
        setDefaultCache(cache);
      });
      afterEach(() => setDefaultCache(undefined));

      /** The error a class definition throws, checked to be this package's typed E_INVALID_OPTION. */
      function definitionError(define: () => unknown): Error {
        let error: unknown;
        try {
          define();
        } catch (thrown) {
          error = thrown;
        }
        expect(CacheError.isInstance(error)).toBe(true);
        expect((error as CacheError).code).toBe('E_INVALID_OPTION');
        return error as Error;
      }

      it('files a method another decorator wraps under its declaring class when a subclass is constructed first', async () => {
        // Fresh copies of the module: nothing of them has been constructed yet.
        const adminFirst = await load<typeof Scopes>(mode, 'test/fixtures/scopes.js?admin-first');
        const llm = new TestLlm();
        const admin = await new adminFirst.AdminAdvisor(llm).answer('q');
        expect(admin).toBe('admin: answer 1: advice q');
        expect(await cache.get({ name: 'advice', request: { scope: 'Advisor.answer', args: ['q'] } })).toBe(
          'answer 1: advice q',
        );
        const baseFirst = await load<typeof Scopes>(mode, 'test/fixtures/scopes.js?base-first');
        expect(await new baseFirst.Advisor(llm).answer('q')).toBe('answer 1: advice q');
        expect(await new baseFirst.AdminAdvisor(llm).answer('q')).toBe(admin);
        expect(await new adminFirst.Advisor(llm).answer('q')).toBe('answer 1: advice q');
        expect(llm.calls).toBe(1);
      });

      it('refuses a static and an instance method of one name and prefix, and keeps the key of a scoped pair', async () => {
        const scopes = await load<typeof Scopes>(mode, 'test/fixtures/scopes.js');
        const error = definitionError(() => scopes.defineStaticAndInstance());
        expect(error.message).toMatch(
          /static define and instance define of (Glossary|the class being defined) would share entries under prefix "glossary_define" — give one of them a scope option/,
        );

        const llm = new TestLlm();
        scopes.ScopedGlossary.llm = llm;
        const shared = await scopes.ScopedGlossary.define('atom');
        const own = await new scopes.ScopedGlossary(llm).define('atom');
        expect(own).not.toBe(shared);
        const request = (scope: string) => ({ name: 'scoped_define', request: { scope, args: ['atom'] } });
        expect(await cache.get(request('ScopedGlossary.define'))).toBe(own);
        expect(await cache.get(request('ScopedGlossary.static.define'))).toBe(shared);
      });

      it('refuses two methods named by different symbols with one description, and keeps the key of one', async () => {
        const scopes = await load<typeof Scopes>(mode, 'test/fixtures/scopes.js');
        const error = definitionError(() => scopes.defineSymbolTwins());
        expect(error.message).toMatch(
          /\[Symbol\(run\)\] and \[Symbol\(run\)\] of (Runner|the class being defined) are both named "\[run\]" in the cache, so they would share entries under prefix "runner" — give one of them a scope option/,
        );

        const llm = new TestLlm();
        const answer = await new scopes.SymbolRunner(llm)[scopes.runSymbol]('build');
        expect(
          await cache.get({
            name: 'symbol_runner',
            request: { scope: 'SymbolRunner.[run]', args: ['build'] },
          }),
        ).toBe(answer);
      });
    });

    describe.runIf(mode === 'standard')('what only standard decorators allow', async () => {
      const only = await load<typeof StandardOnly>('standard', 'test/fixtures/standard-only.js');

      beforeEach(() => setDefaultCache(createCache()));
      afterEach(() => setDefaultCache(undefined));

      it('caches a private method that has a fixed scope', async () => {
        const llm = new TestLlm();
        const service = new only.PrivateService(llm);
        expect(await service.ask('why?')).toBe(await service.ask('why?'));
        expect(llm.calls).toBe(1);
      });

      it('refuses a private method without a scope when the class is defined', () => {
        expect(() => only.definePrivateWithoutScope()).toThrow(/private method #ask .* scope/);
      });

      it('asks for a scope when the class has no name', async () => {
        await expect(only.anonymousService(new TestLlm()).run('x')).rejects.toThrow(
          /anonymous class.*give the method a scope option/,
        );
      });
    });
  });
}
