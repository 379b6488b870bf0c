/** The function form: the same caching for a plain async function. */
import type { CacheView } from '@x/cache-core';
import { cachedLlmCall, invalidateCached } from '@x/cache-decorators';
import { callModel } from './model.ts';

export function makeSummarizer(cache: CacheView) {
  return cachedLlmCall(
    'summary',
    async (text: string, options: { maxWords: number; traceId?: string }): Promise<string> => {
      const { text: summary } = await callModel(`Summarize in ${options.maxWords} words: ${text}`);
      return summary;
    },
    {
      cache,
      ttl: '30d',
      // The trace id changes on every request and does not change the answer: keep it out of the key.
      key: (text, options) => ({ text: text.trim(), maxWords: options.maxWords }),
      shouldCache: (summary) => summary.length > 0, // `summary` is typed as string
    },
  );
}

export async function demo(cache: CacheView): Promise<{ removed: boolean; same: boolean }> {
  const summarize = makeSummarizer(cache);
  const a = await summarize('The water cycle moves water around the planet.', {
    maxWords: 12,
    traceId: 't-1',
  });
  const b = await summarize('The water cycle moves water around the planet. ', {
    maxWords: 12,
    traceId: 't-2',
  });
  const removed = await invalidateCached(summarize, 'The water cycle moves water around the planet.', {
    maxWords: 12,
  });
  return { removed, same: a === b };
}
