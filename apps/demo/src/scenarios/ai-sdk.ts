/**
 * The Vercel AI SDK through @x/ai-sdk-cache: one wrapped language model and one wrapped embedding
 * model serve generateText, streamText, structured output, a multi-step tool loop and embedMany.
 */
import { cachedTools, cacheMiddleware, embeddingCacheMiddleware } from '@x/ai-sdk-cache';
import { createToolLedger } from '@x/cache-core';
import {
  embedMany,
  generateText,
  Output,
  stepCountIs,
  streamText,
  tool,
  wrapEmbeddingModel,
  wrapLanguageModel,
} from 'ai';
import { z } from 'zod';
import { cosine } from '../local/vectors.ts';
import { countCalls, counted } from './tools.ts';
import type { Scenario, ScenarioContext } from './types.ts';

export const AI_SDK_NAMESPACE = 'demo/ai-sdk';

const TOPICS = ['fractions', 'photosynthesis', 'the water cycle'];

const lessonPlanSchema = z.object({
  title: z.string(),
  objectives: z.array(z.string()).min(2).max(3),
  minutes: z.number().int().min(20).max(60),
});

/**
 * The tools of the tool loop, behind the tool ledger: two read-only look-ups (cached in the
 * `tools` tier) and a write (run once per task, then replayed).
 */
function lessonTools({ cache, taskId, tools: counter }: ScenarioContext) {
  const ledger = createToolLedger({
    cache: cache.withNamespace(AI_SDK_NAMESPACE),
    tools: {
      lookup_curriculum: { kind: 'read', ttl: '1h' },
      find_worksheet: { kind: 'read', ttl: '1h' },
      save_lesson_plan: { kind: 'write' },
    },
  });
  const tools = {
    lookup_curriculum: tool({
      description: 'The curriculum standard for a topic and grade.',
      inputSchema: z.object({ topic: z.string(), grade: z.number().int().min(1).max(12) }),
      execute: counted(counter, async ({ topic, grade }: { topic: string; grade: number }) => ({
        standard: `${grade}.NF.${(topic.length % 7) + 1}`,
        summary: `Grade ${grade} students understand ${topic} through models and examples.`,
      })),
    }),
    find_worksheet: tool({
      description: 'A printable worksheet for a topic.',
      inputSchema: z.object({ topic: z.string() }),
      execute: counted(counter, async ({ topic }: { topic: string }) => ({
        url: `https://worksheets.example/${encodeURIComponent(topic)}.pdf`,
      })),
    }),
    save_lesson_plan: tool({
      description: "Saves the lesson plan to the teacher's planner (a side effect: once per task).",
      inputSchema: z.object({ topic: z.string(), title: z.string() }),
      execute: counted(counter, async ({ topic }: { topic: string; title: string }) => ({
        saved: true,
        planId: `plan-${topic.length}`,
      })),
    }),
  };
  // The whole integration for tools: the ledger in front of every `execute`.
  return countCalls(cachedTools(tools, { ledger, scope: { taskId } }), counter);
}

export function aiSdkScenario(context: ScenarioContext): Scenario {
  const { cache, providers } = context;
  const view = cache.withNamespace(AI_SDK_NAMESPACE);
  // The whole integration: two wrapped models. Everything below is plain AI SDK code.
  const model = wrapLanguageModel({
    model: providers.languageModel,
    middleware: cacheMiddleware({ cache: view, ttl: '7d' }),
  });
  const embedder = wrapEmbeddingModel({
    model: providers.embeddingModel,
    middleware: embeddingCacheMiddleware({ cache: view }),
  });
  const tools = lessonTools(context);

  return {
    title: 'AI SDK — @x/ai-sdk-cache (cacheMiddleware, embeddingCacheMiddleware)',
    namespace: AI_SDK_NAMESPACE,
    operations: [
      {
        name: `generateText ×${TOPICS.length}`,
        run: async () => {
          const results = await Promise.all(
            TOPICS.map((topic) =>
              generateText({ model, prompt: `Explain ${topic} to a grade 5 student in four sentences.` }),
            ),
          );
          return results[0]!.text;
        },
      },
      {
        name: 'streamText',
        run: async () => {
          const result = streamText({ model, prompt: 'Write a short story about prime numbers.' });
          let text = '';
          for await (const delta of result.textStream) text += delta;
          return text;
        },
      },
      {
        name: 'generateText + Output.object',
        run: async () => {
          const { output } = await generateText({
            model,
            output: Output.object({ schema: lessonPlanSchema }),
            prompt: 'Make a lesson plan about decimals for grade 5.',
          });
          return JSON.stringify(output);
        },
      },
      {
        name: 'tool loop (4 steps, ledger tools)',
        run: async () => {
          const result = await generateText({
            model,
            tools,
            stopWhen: stepCountIs(5),
            prompt: 'Plan a grade 5 lesson on fractions.',
          });
          const calls = result.steps.flatMap((step) => step.toolCalls.map((call) => call.toolName));
          return `${result.steps.length} steps, tools ${calls.join(', ')}: ${result.text}`;
        },
      },
      {
        name: 'embedMany ×6 values',
        run: async () => {
          const values = ['numerator', 'denominator', 'fraction', 'decimal', 'percentage', 'ratio'];
          const { embeddings } = await embedMany({ model: embedder, values });
          return `cos(numerator, denominator) = ${cosine(embeddings[0]!, embeddings[1]!).toFixed(3)}`;
        },
      },
    ],
  };
}
