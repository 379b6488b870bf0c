/**
 * The decorator on a service class. Works as written with standard decorators (the TypeScript
 * default) and with `experimentalDecorators: true`.
 */
import type { Cache } from '@x/cache-core';
import { setDefaultCache } from '@x/cache-core';
import { cachedLlmCall } from '@x/cache-decorators';
import { callModel } from './model.ts';

export class LessonService {
  // An LLM call: expensive, and the same arguments may reasonably get the same answer for a week.
  @cachedLlmCall('intro_page', {
    ttl: '7d',
    usage: { inputTokens: 150, outputTokens: 900, model: 'gpt-4o-mini' }, // what each hit saves
  })
  async introPage(subject: string, topic: string, grade: number): Promise<string> {
    const { text } = await callModel(`Write an introduction to ${topic} (${subject}) for grade ${grade}.`);
    return text;
  }

  // The source documents' form: a TTL in hours, and tags to drop a whole subject at once.
  @cachedLlmCall('word_problem', { ttlHours: 24, tags: (subject: string) => [`subject:${subject}`] })
  async wordProblem(subject: string, difficulty: 'easy' | 'hard'): Promise<string> {
    const { text } = await callModel(`Write one ${difficulty} ${subject} word problem.`);
    return text;
  }

  // Deterministic work is NOT for this cache: it is cheap to recompute and always gives the same
  // answer, so caching it would only cost storage and risk serving stale logic. Leave it undecorated;
  // nothing is cached unless it carries @cachedLlmCall.
  checkAnswer(expected: number, given: number): boolean {
    return Math.abs(expected - given) < 1e-9;
  }
}

/** Runs the service twice against `cache`; the second pass is served from the cache. */
export async function demo(cache: Cache): Promise<{ first: string; second: string; hits: number }> {
  // Without this line the decorator uses the cache configured by LLM_CACHE_URL / LLM_CACHE_DIR.
  setDefaultCache(cache);
  const lessons = new LessonService();
  const first = await lessons.introPage('math', 'fractions', 5);
  const second = await lessons.introPage('math', 'fractions', 5); // hit: callModel is not called again
  return { first, second, hits: (await cache.stats()).hits };
}
