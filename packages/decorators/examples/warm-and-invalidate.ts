/** Pre-filling the common configurations before a busy period, and invalidating after a prompt change. */
import type { Cache } from '@x/cache-core';
import { setDefaultCache } from '@x/cache-core';
import { invalidateCached, invalidateCachedPrefix, warm } from '@x/cache-decorators';
import { LessonService } from './lesson-service.ts';

export async function demo(cache: Cache) {
  setDefaultCache(cache);
  const lessons = new LessonService();

  // Every grade-5 math topic of the first term, two model calls at a time.
  const report = await warm(
    lessons,
    'introPage',
    [
      ['math', 'fractions', 5],
      ['math', 'decimals', 5],
      ['math', 'percentages', 5],
    ],
    { concurrency: 2 },
  );
  // report.filled, report.alreadyCached, report.skipped: the argument lists in each outcome.
  for (const { args, error } of report.failed) console.warn('could not warm', args, error);

  // One call: the same arguments as the method takes.
  const removedOne = await invalidateCached(lessons.introPage, 'math', 'decimals', 5);
  // The whole prefix, e.g. after changing the intro-page prompt.
  const removedAll = await invalidateCachedPrefix('intro_page');
  // A tag set by the word_problem decorator.
  await lessons.wordProblem('math', 'easy');
  const removedTagged = await cache.invalidateTags(['subject:math']);
  return { report, removedOne, removedAll, removedTagged };
}
