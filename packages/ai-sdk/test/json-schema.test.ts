import { Output, zodSchema } from 'ai';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { violatesSchema } from '../src/json-schema.ts';

/** The schema the AI SDK sends for a zod schema (`zodSchema`: draft 7, `io: 'input'`, additionalProperties: false). */
async function sdkSchema(schema: z.ZodType, useReferences = false): Promise<unknown> {
  return await zodSchema(schema, { useReferences }).jsonSchema;
}

describe('violatesSchema', () => {
  it('checks type, including type arrays, integer and null', () => {
    expect(violatesSchema('x', { type: 'number' })).toBe(true);
    expect(violatesSchema(1.5, { type: 'integer' })).toBe(true);
    expect(violatesSchema(2, { type: 'integer' })).toBe(false);
    expect(violatesSchema(null, { type: ['string', 'null'] })).toBe(false);
    expect(violatesSchema(3, { type: ['string', 'null'] })).toBe(true);
    expect(violatesSchema([], { type: 'object' })).toBe(true);
    expect(violatesSchema(null, { type: 'object' })).toBe(true);
    expect(violatesSchema({}, { type: 'array' })).toBe(true);
    expect(violatesSchema(true, { type: 'boolean' })).toBe(false);
    expect(violatesSchema(null, { type: 'string', nullable: true })).toBe(false);
    expect(violatesSchema('x', { type: 'future-type' })).toBe(false);
  });

  it('checks properties, required and additionalProperties', () => {
    const schema = {
      type: 'object',
      properties: { a: { type: 'number' }, b: { type: 'string' } },
      required: ['a'],
      additionalProperties: false,
    };
    expect(violatesSchema({ a: 1 }, schema)).toBe(false);
    expect(violatesSchema({ a: 1, b: 'x' }, schema)).toBe(false);
    expect(violatesSchema({ b: 'x' }, schema)).toBe(true);
    expect(violatesSchema({ a: 'not a number' }, schema)).toBe(true);
    // additionalProperties: false is what the SDK sends for every object, strict or not, and the SDK
    // (a default zod object strips the key) accepts the answer: an extra key is not a violation.
    expect(violatesSchema({ a: 1, c: true }, schema)).toBe(false);
    // Nor when two such objects are combined, where each would refuse the other's keys.
    const left = { type: 'object', properties: { a: { type: 'number' } }, additionalProperties: false };
    const right = { type: 'object', properties: { b: { type: 'string' } }, additionalProperties: false };
    expect(violatesSchema({ a: 1, b: 'x' }, { allOf: [left, right] })).toBe(false);
    // A schema there (z.record, .catchall) is enforced by zod, so it is checked.
    const typed = { ...schema, additionalProperties: { type: 'number' } };
    expect(violatesSchema({ a: 1, c: 2 }, typed)).toBe(false);
    expect(violatesSchema({ a: 1, c: 'x' }, typed)).toBe(true);
    // A key named like an Object.prototype member is an additional property, not a declared one.
    expect(violatesSchema({ a: 1, constructor: 'x' }, typed)).toBe(true);
    // patternProperties is not checked, so additionalProperties cannot be either.
    expect(violatesSchema({ a: 1, x_1: 2 }, { ...schema, patternProperties: { '^x_': {} } })).toBe(false);
  });

  it('checks arrays: items, tuples, minItems and maxItems', () => {
    expect(violatesSchema([1, 'x'], { type: 'array', items: { type: 'number' } })).toBe(true);
    expect(violatesSchema([1, 2], { type: 'array', items: { type: 'number' }, maxItems: 1 })).toBe(true);
    expect(violatesSchema([], { type: 'array', minItems: 1 })).toBe(true);
    const draft7Tuple = { type: 'array', items: [{ type: 'string' }], additionalItems: { type: 'number' } };
    expect(violatesSchema(['a', 1, 2], draft7Tuple)).toBe(false);
    expect(violatesSchema([1], draft7Tuple)).toBe(true);
    expect(violatesSchema(['a', 'b'], draft7Tuple)).toBe(true);
    expect(
      violatesSchema(['a', 1], { type: 'array', items: [{ type: 'string' }], additionalItems: false }),
    ).toBe(true);
    const prefixTuple = {
      type: 'array',
      prefixItems: [{ type: 'string' }, { type: 'number' }],
      items: false,
    };
    expect(violatesSchema(['a', 1], prefixTuple)).toBe(false);
    expect(violatesSchema([1, 1], prefixTuple)).toBe(true);
    expect(violatesSchema(['a', 1, 2], prefixTuple)).toBe(true);
  });

  it('finds a primitive in a large enum without comparing it to every option', () => {
    const options = Array.from({ length: 20_000 }, (_, index) => `option-${index}`);
    const schema = { type: 'array', items: { enum: options } };
    const last = options.at(-1)!;
    const started = performance.now();
    // 50,000 values × 20,000 options: a billion comparisons (seconds) when each is compared in turn.
    expect(violatesSchema([...new Array(50_000).fill(last), 'none'], schema)).toBe(true);
    expect(violatesSchema(new Array(50_000).fill(last), schema)).toBe(false);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('counts comparisons with object and array enum options against the budget', () => {
    const options = Array.from({ length: 1_000 }, (_, index) => ({ id: index }));
    const schema = { type: 'array', items: { enum: options } };
    // A few values are compared in full; the violation is found.
    expect(violatesSchema([{ id: 999 }, { id: -1 }], schema)).toBe(true);
    // 200 values × 1,000 options exceed the step budget: the check gives up (passes) instead of
    // comparing on, so even this certain violation at the end is not found.
    expect(violatesSchema([...new Array(200).fill({ id: 999 }), { id: -1 }], schema)).toBe(false);
  });

  it('checks enum and const by JSON equality', () => {
    expect(violatesSchema('z', { enum: ['x', 'y'] })).toBe(true);
    expect(violatesSchema('y', { enum: ['x', 'y'] })).toBe(false);
    expect(violatesSchema({ b: [1], a: 2 }, { const: { a: 2, b: [1] } })).toBe(false);
    expect(violatesSchema({ a: 2 }, { const: { a: 2, b: [1] } })).toBe(true);
    expect(violatesSchema(null, { const: null })).toBe(false);
    expect(violatesSchema(null, { enum: [null, [1], { a: 1 }] })).toBe(false);
    expect(violatesSchema([1], { enum: [null, [1], { a: 1 }] })).toBe(false);
    expect(violatesSchema({ a: 1 }, { enum: [null, [1], { a: 1 }] })).toBe(false);
    expect(violatesSchema('1', { enum: [1, [1], { a: 1 }] })).toBe(true);
    expect(violatesSchema([], { enum: [1, [1], { a: 1 }] })).toBe(true);
    expect(violatesSchema(0, { const: null })).toBe(true);
  });

  it('checks anyOf, oneOf (as anyOf) and allOf', () => {
    const branches = [{ type: 'string' }, { type: 'number' }];
    expect(violatesSchema(true, { anyOf: branches })).toBe(true);
    expect(violatesSchema(1, { anyOf: branches })).toBe(false);
    expect(violatesSchema(true, { oneOf: branches })).toBe(true);
    // Matching two branches breaks oneOf, but a union parser accepts it: not refused.
    expect(violatesSchema(1, { oneOf: [{ type: 'number' }, { type: 'integer' }] })).toBe(false);
    expect(violatesSchema(5, { allOf: [{ type: 'number' }, { maximum: 3 }] })).toBe(true);
    expect(violatesSchema(2, { allOf: [{ type: 'number' }, { maximum: 3 }] })).toBe(false);
  });

  it('checks string lengths only where code points and UTF-16 units agree', () => {
    expect(violatesSchema('a', { minLength: 2 })).toBe(true);
    expect(violatesSchema('abc', { maxLength: 2 })).toBe(true);
    expect(violatesSchema('ab', { minLength: 2, maxLength: 2 })).toBe(false);
    // One code point, two UTF-16 units: neither bound is certainly broken.
    expect(violatesSchema('😀', { maxLength: 1 })).toBe(false);
    expect(violatesSchema('😀', { minLength: 2 })).toBe(false);
  });

  it('checks numeric bounds, inclusive and exclusive', () => {
    expect(violatesSchema(0, { minimum: 1 })).toBe(true);
    expect(violatesSchema(1, { minimum: 1 })).toBe(false);
    expect(violatesSchema(11, { maximum: 10 })).toBe(true);
    expect(violatesSchema(0, { exclusiveMinimum: 0 })).toBe(true);
    expect(violatesSchema(10, { exclusiveMaximum: 10 })).toBe(true);
    expect(violatesSchema(5, { exclusiveMinimum: 0, exclusiveMaximum: 10 })).toBe(false);
    // Draft 4's boolean exclusiveMinimum only sharpens minimum: the inclusive reading is kept.
    expect(violatesSchema(1, { minimum: 1, exclusiveMinimum: true })).toBe(false);
    // Bounds apply to numbers only.
    expect(violatesSchema('x', { minimum: 1 })).toBe(false);
  });

  it('follows local $refs to definitions and $defs', () => {
    const schema = {
      type: 'object',
      properties: { a: { $ref: '#/definitions/num' }, b: { $ref: '#/$defs/str' } },
      definitions: { num: { type: 'number' } },
      $defs: { str: { type: 'string' } },
    };
    expect(violatesSchema({ a: 1, b: 'x' }, schema)).toBe(false);
    expect(violatesSchema({ a: 'x' }, schema)).toBe(true);
    expect(violatesSchema({ b: 1 }, schema)).toBe(true);
    const escaped = {
      properties: { a: { $ref: '#/definitions/a~1b%20c' } },
      definitions: { 'a/b c': false },
    };
    expect(violatesSchema({ a: 1 }, escaped)).toBe(true);
  });

  it('treats unknown keywords, remote and unresolvable refs as passing', () => {
    expect(violatesSchema('x', { type: 'string', pattern: '^\\d+$', format: 'email' })).toBe(false);
    expect(violatesSchema(3, { multipleOf: 5, not: {} })).toBe(false);
    expect(violatesSchema(1, { $ref: 'https://example.com/schema.json' })).toBe(false);
    expect(violatesSchema(1, { $ref: '#/definitions/missing' })).toBe(false);
    expect(violatesSchema(1, { $ref: '#/definitions/%E0%A4%A' })).toBe(false);
    expect(violatesSchema(1, true)).toBe(false);
    expect(violatesSchema(1, false)).toBe(true);
    expect(violatesSchema(1, 'not a schema')).toBe(false);
  });

  it('reads a $ref to the root below the root as unknown (a wrapper may have moved the root)', async () => {
    // Output.array copies a recursive element schema, whose `$ref: '#'` meant the element, into a
    // wrapper object: there `#` is the wrapper, which an element can never match.
    type Node = { name: string; children: Node[] };
    const node: z.ZodType<Node> = z.lazy(() => z.object({ name: z.string(), children: z.array(node) }));
    const format = await Output.array({ element: node }).responseFormat;
    const wrapped = format?.type === 'json' ? format.schema : undefined;
    expect(wrapped).toBeDefined();
    const tree = { name: 'a', children: [{ name: 'b', children: [] }] };
    expect(violatesSchema({ elements: [tree] }, wrapped)).toBe(false);
    expect(violatesSchema({ elements: [{ name: 1, children: [] }] }, wrapped)).toBe(true);
    // The same schema at the root (Output.object) is still checked down to the first `#`.
    const root = await sdkSchema(node);
    expect(violatesSchema(tree, root)).toBe(false);
    expect(violatesSchema({ name: 1, children: [] }, root)).toBe(true);
    expect(violatesSchema({ name: 'a', children: [1] }, root)).toBe(false);
    // A root that refers to itself resolves once, then passes.
    expect(violatesSchema(1, { $ref: '#' })).toBe(false);
  });

  it('gives up (passes) on self-referencing, too deep or too costly checks', () => {
    expect(
      violatesSchema(1, {
        definitions: { a: { $ref: '#/definitions/b' }, b: { $ref: '#/definitions/a' } },
        $ref: '#/definitions/a',
      }),
    ).toBe(false);

    const list = { definitions: { list: { type: 'array', items: { $ref: '#/definitions/list' } } } };
    const lists = { ...list, $ref: '#/definitions/list' };
    let deep: unknown = 'x';
    for (let i = 0; i < 10_000; i++) deep = [deep];
    expect(violatesSchema(deep, lists)).toBe(false);
    // The same violation near the surface is still found.
    expect(violatesSchema([['x']], lists)).toBe(true);

    // A violation at the bottom of nested anyOfs makes every branch be tried at every level:
    // 3^30 visits without the step budget (the test would never finish). Past the budget the check
    // gives up, so even this certain violation passes.
    let nested: unknown = 0;
    for (let i = 0; i < 30; i++) nested = { a: nested };
    const branch = { type: 'object', properties: { a: { $ref: '#/definitions/node' } } };
    const branchy = {
      definitions: { node: { anyOf: [branch, branch, branch] } },
      $ref: '#/definitions/node',
    };
    expect(violatesSchema(nested, branchy)).toBe(false);
    expect(violatesSchema({ a: { a: 0 } }, branchy)).toBe(true);
  });

  it('accepts valid answers and finds violations for the schemas zod emits through the SDK', async () => {
    type Node = { name: string; children: Node[] };
    const node: z.ZodType<Node> = z.lazy(() => z.object({ name: z.string(), children: z.array(node) }));
    const schema = z.object({
      id: z.int().positive(),
      name: z.string().min(1).max(10),
      email: z.email().optional(),
      score: z.number().gte(0).lt(1),
      tags: z.array(z.string()).max(2),
      pair: z.tuple([z.string(), z.number()]),
      role: z.enum(['admin', 'user']),
      version: z.literal(2),
      note: z.string().nullable(),
      retries: z.number().default(3),
      pet: z.discriminatedUnion('kind', [
        z.object({ kind: z.literal('cat'), lives: z.int() }),
        z.object({ kind: z.literal('dog'), good: z.boolean() }),
      ]),
      counts: z.record(z.string(), z.number()),
      tree: node,
    });
    const valid = {
      id: 1,
      name: 'Ada',
      score: 0.5,
      tags: ['a'],
      pair: ['x', 1],
      role: 'admin',
      version: 2,
      note: null,
      pet: { kind: 'dog', good: true },
      counts: { a: 1 },
      tree: { name: 'root', children: [{ name: 'leaf', children: [] }] },
    };
    expect(schema.safeParse(valid).success).toBe(true);
    const invalid: Record<string, unknown>[] = [
      { id: 0 },
      { id: 1.5 },
      { name: '' },
      { name: 'far too long a name' },
      { score: 1 },
      { tags: ['a', 'b', 'c'] },
      { pair: [1, 'x'] },
      { pair: ['x', 1, 2] },
      { role: 'root' },
      { version: 3 },
      { note: 1 },
      { retries: 'three' },
      { pet: { kind: 'cat', good: true } },
      { counts: { a: 'one' } },
      { tree: { name: 'root', children: [{ name: 1, children: [] }] } },
    ];
    for (const useReferences of [false, true]) {
      const json = await sdkSchema(schema, useReferences);
      expect(violatesSchema(valid, json)).toBe(false);
      expect(violatesSchema({ ...valid, retries: 5, email: 'a@b.co' }, json)).toBe(false);
      for (const change of invalid) {
        const value = { ...valid, ...change };
        // Each case is one the SDK's own (zod) validation rejects too.
        expect(schema.safeParse(value).success, JSON.stringify(change)).toBe(false);
        expect(violatesSchema(value, json), JSON.stringify(change)).toBe(true);
      }
      const { id: _id, ...missing } = valid;
      expect(violatesSchema(missing, json)).toBe(true);
      // The SDK sends additionalProperties: false for every object, strict or not: a default zod
      // object strips the key and the SDK accepts the answer, so it must not be refused.
      const extra = { ...valid, unexpected: true, pet: { ...valid.pet, spots: 3 } };
      expect(schema.safeParse(extra).success).toBe(true);
      expect(violatesSchema(extra, json)).toBe(false);
    }
  });
});
