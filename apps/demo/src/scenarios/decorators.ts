/**
 * @x/cache-decorators: a service class whose LLM method carries `@cachedLlmCall('intro_page',
 * { ttl: '7d' })`, and the function form around a plain async function. The model is called
 * through the AI SDK *without* the middleware: the decorator is the cache here.
 *
 * Standard (TC39) decorators: this file must be compiled by tsc (`pnpm demo` does); Node's type
 * stripping and vitest's transform cannot run decorators.
 */
import type { CacheView, Usage } from '@x/cache-core';
import { cachedLlmCall } from '@x/cache-decorators';
import { generateText } from 'ai';
import type { LanguageModelV4 } from '../local/ai-sdk.ts';
import type { Scenario, ScenarioContext } from './types.ts';

export const DECORATORS_NAMESPACE = 'demo/decorators';

/** An answer with the usage it cost, so that each hit counts the tokens it saved. */
export interface Page {
  text: string;
  usage: Usage;
}

async function ask(model: LanguageModelV4, prompt: string): Promise<Page> {
  const { text, usage } = await generateText({ model, prompt });
  return {
    text,
    usage: {
      inputTokens: usage.inputTokens ?? 0,
      outputTokens: usage.outputTokens ?? 0,
      model: model.modelId,
    },
  };
}

export class LessonService {
  constructor(
    readonly cache: CacheView,
    readonly model: LanguageModelV4,
  ) {}

  @cachedLlmCall('intro_page', {
    ttl: '7d',
    cache: (self: LessonService) => self.cache,
    // `this` is never part of the key on its own: the model is, since it changes the answer.
    key: (self: LessonService, subject: string, topic: string, grade: number) => ({
      model: self.model.modelId,
      subject,
      topic,
      grade,
    }),
    usage: (page: Page) => page.usage,
  })
  async introPage(subject: string, topic: string, grade: number): Promise<Page> {
    return ask(this.model, `Write an introduction page about ${topic} (${subject}) for grade ${grade}.`);
  }

  // Deterministic work is not for this cache: left undecorated on purpose.
  wordCount(page: Page): number {
    return page.text.split(/\s+/).filter(Boolean).length;
  }
}

export function decoratorsScenario({ cache, providers }: ScenarioContext): Scenario {
  const view = cache.withNamespace(DECORATORS_NAMESPACE);
  const lessons = new LessonService(view, providers.languageModel);
  const model = providers.languageModel;
  // The function form: the same caching around a plain function, typed from it.
  const wordProblem = cachedLlmCall(
    'word_problem',
    (topic: string, difficulty: 'easy' | 'hard') =>
      ask(model, `Write one ${difficulty} word problem about ${topic}.`),
    {
      cache: view,
      ttlHours: 24,
      key: (topic, difficulty) => ({ model: model.modelId, topic, difficulty }),
      usage: (page) => page.usage,
    },
  );
  const topics = ['fractions', 'decimals', 'percentages'];

  return {
    title: "Decorators — @x/cache-decorators (@cachedLlmCall('intro_page', { ttl: '7d' }), function form)",
    namespace: DECORATORS_NAMESPACE,
    operations: [
      {
        name: `@cachedLlmCall introPage ×${topics.length}`,
        run: async () => {
          const pages = await Promise.all(topics.map((topic) => lessons.introPage('math', topic, 5)));
          return `${lessons.wordCount(pages[0]!)} words: ${pages[0]!.text}`;
        },
      },
      {
        name: 'cachedLlmCall(fn) wordProblem ×2',
        run: async () => {
          const easy = await wordProblem('ratios', 'easy');
          await wordProblem('ratios', 'hard');
          return easy.text;
        },
      },
    ],
  };
}
