/**
 * A small JSON Schema check for admission: does a parsed answer *definitely* violate the schema the
 * model was asked to follow (`responseFormat.schema`)? It is not a validator. It understands the
 * keywords zod 4 and the AI SDK emit (`type`, `properties`, `required`, `additionalProperties`,
 * `items`/`prefixItems`/`additionalItems`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`, lengths,
 * bounds, local `$ref`) and treats everything else as passing: a wrong "violates" keeps a good
 * answer out of the cache for good, a wrong "passes" only falls back to the behaviour without this
 * check. Where drafts differ, it reports a violation only when every reading agrees, and where the
 * SDK's own parse is laxer than the schema it sends, it follows the parse (`additionalProperties:
 * false`, a `$ref` to the root below the root).
 */

type SchemaObject = Record<string, unknown>;

/** Nesting (values and `$ref` hops) beyond which a subschema is taken as passing. */
const MAX_DEPTH = 128;
/**
 * Subschema visits and enum comparisons after which the whole check gives up (and passes): `anyOf`
 * inside `anyOf` is exponential, and a long array against a long enum is quadratic.
 */
const MAX_STEPS = 100_000;

const GIVE_UP = Symbol('give up');

/** An `enum`'s options split once per check: primitives found by a Set lookup, the rest compared. */
interface EnumIndex {
  primitives: Set<unknown>;
  composites: unknown[];
}

interface Context {
  root: unknown;
  steps: number;
  enums: Map<unknown[], EnumIndex>;
}

/**
 * True when `value` (parsed JSON) certainly does not satisfy `schema`. Unknown keywords, remote or
 * unresolvable `$ref`s and checks too deep or too costly to finish count as satisfied.
 */
export function violatesSchema(value: unknown, schema: unknown): boolean {
  const context: Context = { root: schema, steps: 0, enums: new Map() };
  try {
    return !satisfies(value, schema, context, 0);
  } catch (error) {
    if (error === GIVE_UP) return false;
    throw error;
  }
}

function isObject(value: unknown): value is SchemaObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function step(context: Context): void {
  if (++context.steps > MAX_STEPS) throw GIVE_UP;
}

function satisfies(value: unknown, schema: unknown, context: Context, depth: number): boolean {
  if (schema === false) return false;
  if (!isObject(schema) || depth > MAX_DEPTH) return true;
  step(context);
  const next = depth + 1;

  if (typeof schema.$ref === 'string') {
    // Draft 7 ignores a $ref's siblings and later drafts apply them: only the target is checked.
    const target = resolvePointer(context.root, schema.$ref);
    // Below the root, a ref to the root may not mean this root: `Output.array` copies a recursive
    // element schema (zod writes its recursion as `$ref: '#'`) into a wrapper object, where `#` is
    // the wrapper, which no element matches. Such a ref passes; a recursive schema sent as it is
    // (Output.object) is still checked down to its first recursion.
    if (target === undefined || (target === context.root && depth > 0)) return true;
    return satisfies(value, target, context, next);
  }

  if (!typeMatches(value, schema)) return false;
  if (Array.isArray(schema.enum) && !inEnum(value, schema.enum, context)) return false;
  if (Object.hasOwn(schema, 'const') && !jsonEqual(schema.const, value)) return false;

  if (typeof value === 'number' && !withinBounds(value, schema)) return false;
  if (typeof value === 'string' && !withinLength(value, schema)) return false;
  if (Array.isArray(value) && !arraySatisfies(value, schema, context, next)) return false;
  if (isObject(value) && !objectSatisfies(value, schema, context, next)) return false;

  if (Array.isArray(schema.allOf) && !schema.allOf.every((branch) => satisfies(value, branch, context, next)))
    return false;
  // oneOf is read as anyOf: a value that matches two branches (a discriminated union whose zod
  // parse accepts it) is not worth refusing.
  for (const keyword of ['anyOf', 'oneOf'] as const) {
    const branches = schema[keyword];
    if (Array.isArray(branches) && branches.length > 0) {
      if (!branches.some((branch) => satisfies(value, branch, context, next))) return false;
    }
  }
  return true;
}

function typeMatches(value: unknown, schema: SchemaObject): boolean {
  const types = typeof schema.type === 'string' ? [schema.type] : schema.type;
  if (!Array.isArray(types)) return true;
  // OpenAPI's `nullable: true` (some hand-written schemas use it) admits null whatever the type says.
  if (value === null && schema.nullable === true) return true;
  return types.some((type) => hasType(value, type));
}

function hasType(value: unknown, type: unknown): boolean {
  switch (type) {
    case 'null':
      return value === null;
    case 'boolean':
      return typeof value === 'boolean';
    case 'string':
      return typeof value === 'string';
    case 'number':
      return typeof value === 'number';
    case 'integer':
      return Number.isInteger(value);
    case 'array':
      return Array.isArray(value);
    case 'object':
      return isObject(value);
    default:
      return true;
  }
}

function withinBounds(value: number, schema: SchemaObject): boolean {
  const { minimum, maximum, exclusiveMinimum, exclusiveMaximum } = schema;
  if (typeof minimum === 'number' && value < minimum) return false;
  if (typeof maximum === 'number' && value > maximum) return false;
  // Draft 4's boolean form (which only sharpens `minimum`) is left out: the inclusive check above
  // is the weaker of the two readings.
  if (typeof exclusiveMinimum === 'number' && value <= exclusiveMinimum) return false;
  if (typeof exclusiveMaximum === 'number' && value >= exclusiveMaximum) return false;
  return true;
}

function withinLength(value: string, schema: SchemaObject): boolean {
  // JSON Schema counts code points, zod counts UTF-16 units (an emoji is 1 or 2). A violation is
  // reported only when both counts agree: code points for maxLength, UTF-16 units for minLength.
  if (typeof schema.minLength === 'number' && value.length < schema.minLength) return false;
  if (typeof schema.maxLength === 'number' && value.length > schema.maxLength) {
    let codePoints = 0;
    for (const _ of value) codePoints++;
    if (codePoints > schema.maxLength) return false;
  }
  return true;
}

function arraySatisfies(value: unknown[], schema: SchemaObject, context: Context, depth: number): boolean {
  if (typeof schema.minItems === 'number' && value.length < schema.minItems) return false;
  if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) return false;
  // Tuples: `prefixItems` + `items` for the rest (2020-12), or an `items` array + `additionalItems`
  // for the rest (draft 7, what zod emits for the AI SDK).
  let positional: unknown[] = [];
  let rest: unknown;
  if (Array.isArray(schema.prefixItems)) {
    positional = schema.prefixItems;
    rest = schema.items;
  } else if (Array.isArray(schema.items)) {
    positional = schema.items;
    rest = schema.additionalItems;
  } else {
    rest = schema.items;
  }
  return value.every((item, index) =>
    satisfies(item, index < positional.length ? positional[index] : rest, context, depth),
  );
}

function objectSatisfies(
  value: SchemaObject,
  schema: SchemaObject,
  context: Context,
  depth: number,
): boolean {
  if (Array.isArray(schema.required) && schema.required.some((key) => !Object.hasOwn(value, key)))
    return false;
  const properties = isObject(schema.properties) ? schema.properties : {};
  // With patternProperties (not checked here) a key missing from `properties` may still be declared.
  // `additionalProperties: false` is not checked: the SDK sends it for every zod object and for the
  // Output.choice / Output.array wrappers, yet accepts an extra key there (a default zod object
  // strips it, the wrappers read only `result` / `elements`); only a strict object would refuse it,
  // and the schema cannot tell which. A schema there (z.record, .catchall) is one zod enforces.
  const additional =
    isObject(schema.patternProperties) || schema.additionalProperties === false
      ? undefined
      : schema.additionalProperties;
  for (const key of Object.keys(value)) {
    // hasOwn, not `in`: a key such as "constructor" must not find Object.prototype's.
    const declared = Object.hasOwn(properties, key);
    if (!satisfies(value[key], declared ? properties[key] : additional, context, depth)) return false;
  }
  return true;
}

/** `#` or `#/a/b` within the root schema (JSON Pointer, as URI fragment); anything else is undefined. */
function resolvePointer(root: unknown, ref: string): unknown {
  if (ref === '#') return root;
  if (!ref.startsWith('#/')) return undefined;
  let current = root;
  for (const raw of ref.slice(2).split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    } catch {
      return undefined;
    }
    if (typeof current !== 'object' || current === null || !Object.hasOwn(current, segment)) return undefined;
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

/** Whether `value` is one of `options`, without comparing a primitive to each option in turn. */
function inEnum(value: unknown, options: unknown[], context: Context): boolean {
  let index = context.enums.get(options);
  if (!index) {
    index = { primitives: new Set(), composites: [] };
    for (const option of options) {
      if (typeof option === 'object' && option !== null) index.composites.push(option);
      else index.primitives.add(option);
    }
    context.enums.set(options, index);
  }
  // JSON equality never holds between a primitive and an object or array: each is looked up among its kind.
  if (typeof value !== 'object' || value === null) return index.primitives.has(value);
  return index.composites.some((option) => {
    step(context);
    return jsonEqual(option, value);
  });
}

/** Equality of JSON values, as `enum` and `const` compare them (object key order does not matter). */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((item, index) => jsonEqual(item, b[index]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return (
      keys.length === Object.keys(b).length &&
      keys.every((key) => Object.hasOwn(b, key) && jsonEqual(a[key], b[key]))
    );
  }
  return false;
}
