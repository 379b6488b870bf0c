/**
 * What makes `vector` no embedding vector, if anything: it must be an array (or typed array, not
 * a DataView) of finite numbers. Shared by the embedding adapters: `Float32Array.from` would turn
 * `null` into 0 and `'x'` into NaN, and a NaN or Infinity stored in a vector poisons every
 * similarity computed with it for as long as the entry lives.
 */
export function vectorProblem(vector: unknown): string | undefined {
  if (!Array.isArray(vector) && !(ArrayBuffer.isView(vector) && !(vector instanceof DataView))) {
    return vector === null ? 'null' : typeof vector;
  }
  for (const item of vector as Iterable<unknown>) {
    if (typeof item !== 'number') return `an item of type ${item === null ? 'null' : typeof item}`;
    if (!Number.isFinite(item)) return `an item that is ${item}`;
  }
  return undefined;
}
