/**
 * LangChain.js through @x/langchain-cache: a chat model with LangChain's own `cache` option, the
 * full-fidelity `withCache` wrapper streaming, and `CachedEmbeddings`.
 */
import type { BaseMessage } from '@langchain/core/messages';
import { HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { createToolLedger } from '@x/cache-core';
import { CachedEmbeddings, cachedTool, LangChainCache, withCache } from '@x/langchain-cache';
import { z } from 'zod';
import { cosine } from '../local/vectors.ts';
import { counted } from './tools.ts';
import type { Scenario, ScenarioContext } from './types.ts';

export const LANGCHAIN_NAMESPACE = 'demo/langchain';

const QUESTIONS = [
  'What is the capital of France, and why is it built on a river?',
  'Explain the difference between weather and climate.',
  'Describe how a bill becomes a law.',
];

const CAPITALS: Record<string, string> = { France: 'Paris', Italy: 'Rome', Spain: 'Madrid', Japan: 'Tokyo' };

export function langchainScenario({ cache, providers, taskId, tools }: ScenarioContext): Scenario {
  const view = cache.withNamespace(LANGCHAIN_NAMESPACE);
  // LangChain's own cache path: any chat model (or LLM) takes a BaseCache as its `cache` option.
  const classic = providers.chatModel({ cache: new LangChainCache({ cache: view, ttl: '7d' }) });
  // The full-fidelity wrapper: complete keys, cached streams, concurrent identical calls run once.
  const wrapped = withCache(providers.chatModel(), { cache: view, ttl: '7d' });
  const embeddings = new CachedEmbeddings(providers.embeddings, { cache: view });
  // A LangChain tool behind the tool ledger (cachedTool): read-only, so cached by input.
  const ledger = createToolLedger({ cache: view, tools: { lookup_capital: { kind: 'read', ttl: '1h' } } });
  const lookupCapital = cachedTool(
    tool(
      counted(tools, async ({ country }: { country: string }) => {
        return `The capital of ${country} is ${CAPITALS[country] ?? 'unknown'}.`;
      }),
      {
        name: 'lookup_capital',
        description: 'The capital city of a country.',
        schema: z.object({ country: z.string() }),
      },
    ),
    { ledger, scope: { taskId } },
  );

  return {
    title: 'LangChain — @x/langchain-cache (LangChainCache, withCache, CachedEmbeddings)',
    namespace: LANGCHAIN_NAMESPACE,
    operations: [
      {
        name: `chat model { cache } batch ×${QUESTIONS.length}`,
        run: async () => {
          const answers = await classic.batch(QUESTIONS);
          return answers[0]!.text;
        },
      },
      {
        name: 'withCache(model).stream()',
        run: async () => {
          let text = '';
          let chunks = 0;
          for await (const chunk of await wrapped.stream('Tell a short story about the moon landing.')) {
            text += chunk.text;
            chunks++;
          }
          return `${chunks} chunks: ${text}`;
        },
      },
      {
        name: 'agent: bindTools + ledger tool',
        run: async () => {
          const agent = wrapped.bindTools([lookupCapital]);
          const messages: BaseMessage[] = [new HumanMessage('What is the capital of Italy?')];
          for (let step = 0; step < 4; step++) {
            const reply = await agent.invoke(messages);
            messages.push(reply);
            if (!reply.tool_calls?.length) return reply.text;
            for (const call of reply.tool_calls) {
              tools.calls++;
              messages.push(await lookupCapital.invoke(call));
            }
          }
          return 'no final answer after 4 steps';
        },
      },
      {
        name: 'CachedEmbeddings ×5 docs + query',
        run: async () => {
          const documents = ['Paris is in France.', 'Berlin is in Germany.', 'Rome is in Italy.'];
          documents.push('Madrid is in Spain.', 'Lisbon is in Portugal.');
          const vectors = await embeddings.embedDocuments(documents);
          const query = await embeddings.embedQuery('Which city is in Italy?');
          const best = vectors
            .map((vector, index) => ({ index, score: cosine(vector, query) }))
            .sort((a, b) => b.score - a.score)[0]!;
          return `closest to the query: "${documents[best.index]}"`;
        },
      },
    ],
  };
}
