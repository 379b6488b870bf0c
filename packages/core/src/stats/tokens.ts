import type { Tiktoken } from 'js-tiktoken/lite';

let encoder: Promise<Tiktoken> | undefined;

/**
 * Loads the o200k_base tokenizer (GPT-4o / GPT-5 family) on first use. Its rank table is a
 * few megabytes, so it is imported only when a caller asks for an estimate.
 */
function loadEncoder(): Promise<Tiktoken> {
  encoder ??= Promise.all([import('js-tiktoken/lite'), import('js-tiktoken/ranks/o200k_base')]).then(
    ([lite, ranks]) => new lite.Tiktoken(ranks.default),
  );
  return encoder;
}

/** Counts tokens with a real BPE tokenizer. Estimates for non-OpenAI models are close, not exact. */
export async function countTokens(text: string): Promise<number> {
  if (text.length === 0) return 0;
  const enc = await loadEncoder();
  return enc.encode(text).length;
}

/**
 * Text a value or request contributes to a prompt: strings as-is, everything else as JSON.
 * Vectors (typed arrays, arrays of numbers) are not text: an embedding costs no output tokens.
 */
export function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined || value === null) return '';
  if (ArrayBuffer.isView(value)) return '';
  if (Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === 'number')) return '';
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return String(value);
  }
}
