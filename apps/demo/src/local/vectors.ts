import { hashOf } from './brain.ts';

export const DIMENSIONS = 64;

/**
 * A deterministic unit vector built from the text's character trigrams (a hashed bag of
 * trigrams), so similar texts get similar vectors — enough for a stand-in embedding model.
 */
export function vectorOf(text: string): number[] {
  const vector = new Array<number>(DIMENSIONS).fill(0);
  const padded = ` ${text.toLowerCase()} `;
  for (let i = 0; i + 3 <= padded.length; i++) {
    const hash = hashOf(padded.slice(i, i + 3));
    vector[hash % DIMENSIONS]! += hash & 0x100 ? 1 : -1;
  }
  const norm = Math.hypot(...vector) || 1;
  // Rounded to float32 precision, as provider APIs return them.
  return vector.map((value) => Math.fround(value / norm));
}

export function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i]! * (b[i] ?? 0);
  return dot;
}
