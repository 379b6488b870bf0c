/**
 * PLACEHOLDER for your provider call (OpenAI, Anthropic, a LangChain or AI SDK model…). This local
 * stand-in returns deterministic text so that the examples type-check and run offline; replace its
 * body with the real call and nothing else changes.
 */
export interface Completion {
  text: string;
  inputTokens: number;
  outputTokens: number;
}

export const modelCalls = { count: 0 };

export async function callModel(prompt: string): Promise<Completion> {
  modelCalls.count++;
  return {
    text: `[local stand-in for the model] ${prompt}`,
    inputTokens: Math.ceil(prompt.length / 4),
    outputTokens: 200,
  };
}
