import { AsyncLocalStorage } from 'node:async_hooks';
import type { CachePolicy, CacheResult, CacheView } from '@x/cache-core';
import { CacheError, getDefaultCache, parseDuration, resolveTtl, validateName } from '@x/cache-core';
import { decoratorError } from './errors.ts';

type AnyFunction = (...args: any[]) => unknown;
type CacheSource = CacheView | ((self?: unknown) => CacheView);

const KNOWN_OPTIONS = new Set([
  'ttl',
  'ttlHours',
  'tags',
  'tier',
  'shouldCache',
  'usage',
  'model',
  'grace',
  'staleWhileRevalidate',
  'cache',
  'key',
  'scope',
]);

/** Options checked once, when the method is decorated or the function wrapped. */
export interface NormalizedOptions {
  /** The part of the policy that is the same for every call. */
  policy: CachePolicy<unknown>;
  ttlMs: number | undefined;
  tags: ((...args: unknown[]) => readonly string[]) | undefined;
  tier: string | undefined;
  cache: CacheSource | undefined;
  key: AnyFunction | undefined;
  scope: string | false | undefined;
  shouldCache: ((value: unknown) => boolean) | undefined;
}

function invalid(what: string, fix: string, cause?: unknown): CacheError {
  return decoratorError('E_INVALID_OPTION', what, fix, cause === undefined ? undefined : { cause });
}

function checkFunction(options: Record<string, unknown>, name: string, where: string): void {
  const value = options[name];
  if (value !== undefined && typeof value !== 'function') {
    throw invalid(
      `${where}: option "${name}" must be a function, got ${typeof value}`,
      `pass ${name}: (…) => …`,
    );
  }
}

/** Validates a prefix as a cache name; the prefix is the `name` of every key the call makes. */
/** Which class each default scope (prefix + `Class.method`) belongs to, weakly. */
const scopeOwners = new Map<string, WeakRef<object>>();

/**
 * Two different classes with one name (the same name in two modules, classes made by a factory)
 * would share their default scope, and so their entries. Not an error: a module reloaded in
 * development defines its classes again. A warning names the fix instead.
 */
function warnOnNameClash(slot: string, owner: object, scope: string): void {
  const known = scopeOwners.get(slot)?.deref();
  if (known === undefined) {
    scopeOwners.set(slot, new WeakRef(owner));
    return;
  }
  if (known === owner) return;
  scopeOwners.set(slot, new WeakRef(owner));
  process.emitWarning(
    `two different classes share the default scope '${scope}', so their cached calls share entries; ` +
      "give one of them a scope option, e.g. scope: 'math-tutor.explain'",
    { code: 'X_CACHE_SCOPE_CLASH' },
  );
}

/**
 * Methods with the default scope, by the class that declares them (or, for standard decorators,
 * that class's decorator metadata object, known while the class is being defined) and by prefix
 * and member name: what the default scope `Class.member` cannot tell apart.
 */
const defaultScopes = new WeakMap<object, Map<string, Registration>>();

function describeMember(registration: Registration): string {
  const member = registration.member;
  const name = typeof member === 'symbol' ? `[${String(member)}]` : member;
  return registration.isStatic ? `static ${name}` : name;
}

/**
 * Refuses two methods of one class that would share entries under the default scope: a static and
 * an instance method of one name, or members named by different symbols with one description (or a
 * symbol and the string `[description]`). Methods with a `scope` option are not checked; their keys,
 * and those of every method that does not collide, are unchanged.
 */
export function claimDefaultScope(owner: object, registration: Registration, className?: string): void {
  if (registration.kind !== 'method' || registration.options.scope !== undefined) return;
  let claimed = defaultScopes.get(owner);
  if (!claimed) {
    claimed = new Map();
    defaultScopes.set(owner, claimed);
  }
  const slot = `${registration.prefix}\u0000${registration.memberName}`;
  const other = claimed.get(slot);
  if (other === undefined) {
    claimed.set(slot, registration);
    return;
  }
  // The same member decorated twice is one method, whose nested calls run uncached (see `run`).
  if (other.member === registration.member && other.isStatic === registration.isStatic) return;
  const where = `@cachedLlmCall(${JSON.stringify(registration.prefix)})`;
  const of = className || 'the class being defined';
  const [first, second] = [describeMember(other), describeMember(registration)];
  const name = first.replace(/^static /, '');
  const what =
    other.member === registration.member
      ? `static ${name} and instance ${name} of ${of} would share entries under prefix "${registration.prefix}"`
      : `${first} and ${second} of ${of} are both named "${registration.memberName}" in the cache, so they would share entries under prefix "${registration.prefix}"`;
  const example = `${className || 'MyClass'}.${typeof registration.member === 'string' ? registration.member : registration.member.description || 'method'}`;
  throw invalid(
    `${where}: ${what}`,
    `give one of them a scope option, e.g. scope: '${example}${other.member === registration.member ? '.static' : '.2'}'`,
  );
}

export function checkPrefix(prefix: unknown, where: string): string {
  try {
    return validateName(prefix as string, 'name');
  } catch (error) {
    throw decoratorError(
      'E_INVALID_NAME',
      `${where}: prefix ${JSON.stringify(prefix)} is not a valid cache name`,
      'use 1-128 characters of A-Z a-z 0-9 _ . - / @, e.g. "intro_page"',
      { cause: error },
    );
  }
}

/** Validates options up front, so that a typo fails when the module loads rather than on the first call. */
export function normalizeOptions(input: unknown, where: string): NormalizedOptions {
  if (input !== undefined && (typeof input !== 'object' || input === null || Array.isArray(input))) {
    throw invalid(
      `${where}: options must be an object, got ${JSON.stringify(input)}`,
      "pass { ttl: '7d', … }",
    );
  }
  const options = (input ?? {}) as Record<string, unknown>;
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) {
      throw invalid(`${where}: unknown option "${name}"`, `use one of ${[...KNOWN_OPTIONS].join(', ')}`);
    }
  }
  for (const name of ['shouldCache', 'key']) checkFunction(options, name, where);
  const policy: CachePolicy<unknown> = {};
  let ttlMs: number | undefined;
  try {
    ttlMs = resolveTtl({ ttl: options.ttl as never, ttlHours: options.ttlHours as never });
    if (options.grace !== undefined) parseDuration(options.grace as never, 'grace');
  } catch (error) {
    throw invalid(`${where}: ${(error as Error).message}`, "use ttl: '7d' (or ms) or ttlHours: 24", error);
  }
  if (options.ttl !== undefined) policy.ttl = options.ttl as never;
  if (options.ttlHours !== undefined) policy.ttlHours = options.ttlHours as number;
  if (options.grace !== undefined) policy.grace = options.grace as never;
  if (options.staleWhileRevalidate !== undefined)
    policy.staleWhileRevalidate = !!options.staleWhileRevalidate;
  if (options.usage !== undefined) {
    const usage = options.usage;
    const valid =
      usage === 'estimate' || typeof usage === 'function' || (typeof usage === 'object' && usage !== null);
    if (!valid) {
      throw invalid(
        `${where}: option "usage" must be 'estimate', a usage object or a function of the result, got ${JSON.stringify(usage)}`,
        "pass usage: 'estimate' or usage: (result) => ({ inputTokens, outputTokens, model })",
      );
    }
    policy.usage = usage as never;
  }
  if (options.model !== undefined) {
    if (typeof options.model !== 'string') {
      throw invalid(`${where}: option "model" must be a model id string`, "pass model: 'gpt-4o-mini'");
    }
    policy.model = options.model;
  }
  const shouldCache = options.shouldCache as NormalizedOptions['shouldCache'];
  if (shouldCache) policy.shouldCache = shouldCache;
  let tags: NormalizedOptions['tags'];
  if (typeof options.tags === 'function') {
    tags = options.tags as NormalizedOptions['tags'];
  } else if (options.tags !== undefined) {
    if (!Array.isArray(options.tags)) {
      throw invalid(`${where}: option "tags" must be a list of strings or a function`, "pass tags: ['math']");
    }
    for (const tag of options.tags) {
      try {
        validateName(tag, 'tag');
      } catch (error) {
        throw invalid(`${where}: option "tags": ${(error as Error).message}`, "pass tags: ['math']", error);
      }
    }
    policy.tags = options.tags;
  }
  let tier: string | undefined;
  if (options.tier !== undefined) {
    try {
      tier = validateName(options.tier as string, 'name');
    } catch (error) {
      throw invalid(`${where}: option "tier": ${(error as Error).message}`, "pass tier: 'templates'", error);
    }
  }
  const cache = options.cache;
  if (
    cache !== undefined &&
    typeof cache !== 'function' &&
    (typeof cache !== 'object' || cache === null || typeof (cache as CacheView).tier !== 'function')
  ) {
    throw invalid(
      `${where}: option "cache" must be a cache from createCache() (or a view of one) or a function returning one`,
      'pass cache: myCache or cache: (self) => self.cache',
    );
  }
  const scope = options.scope;
  if (scope !== undefined && scope !== false && (typeof scope !== 'string' || scope.length === 0)) {
    throw invalid(
      `${where}: option "scope" must be a non-empty string or false`,
      "pass scope: 'LessonService' or scope: false",
    );
  }
  return {
    policy,
    ttlMs,
    tags,
    tier,
    cache: cache as CacheSource | undefined,
    key: options.key as AnyFunction | undefined,
    scope,
    shouldCache,
  };
}

export interface RegistrationInit {
  prefix: string;
  kind: 'method' | 'function';
  /** Property key of the method, or the function's name. */
  member: string | symbol;
  isStatic: boolean;
  original: AnyFunction;
  options: NormalizedOptions;
}

export interface RunOutcome {
  result: CacheResult<unknown>;
  /** Whether admission let the value in; `undefined` when this call did not compute it. */
  admitted: boolean | undefined;
}

/** Objects that stand in for the instance where the caller passed only a method reference. */
const standIns = new WeakSet<object>();

function trimTrailingUndefined(args: readonly unknown[]): readonly unknown[] {
  let end = args.length;
  while (end > 0 && args[end - 1] === undefined) end--;
  return end === args.length ? args : args.slice(0, end);
}

/**
 * The arguments as they are keyed. Trailing `undefined`s are dropped (an argument not passed). The
 * core encodes `undefined` inside an array like `null` (JSON), so arguments with an `undefined`
 * left in the middle are keyed as `{ args, undefinedAt }` instead: an object never canonicalises
 * like an array, so those keys cannot meet the plain-array keys of every other call, which stay as
 * they always were.
 */
export function argsKey(args: readonly unknown[]): unknown {
  const passed = trimTrailingUndefined(args);
  let undefinedAt: number[] | undefined;
  for (let index = 0; index < passed.length; index++) {
    if (passed[index] === undefined) (undefinedAt ??= []).push(index);
  }
  return undefinedAt === undefined ? passed : { args: passed, undefinedAt };
}

/**
 * A storage key being computed by a cached body, in that body's async context. A nested call of the
 * same key from inside the body would join (or wait for the lock of) the computation that waits
 * for it; `Registration.run` runs such a call uncached instead.
 */
interface Computing {
  readonly storageKey: string;
  readonly parent: Computing | undefined;
  /** Cleared when the body settles: work it left behind (timers, unawaited promises) is not nested. */
  active: boolean;
}

const computing = new AsyncLocalStorage<Computing>();

function isComputing(frame: Computing | undefined, storageKey: string): boolean {
  for (; frame !== undefined; frame = frame.parent) {
    if (frame.active && frame.storageKey === storageKey) return true;
  }
  return false;
}

/**
 * One decorated method or wrapped function: how its keys are built, which cache it uses and how
 * its body runs through `getOrComputeResult`.
 */
export class Registration {
  readonly prefix: string;
  readonly kind: 'method' | 'function';
  readonly member: string | symbol;
  readonly isStatic: boolean;
  readonly original: AnyFunction;
  readonly options: NormalizedOptions;
  /** The class whose body declares the method (set when decorated, or at the first construction). */
  declaring: Function | undefined;
  /**
   * Standard decorators: the decorator metadata object of the declaring class (`context.metadata`)
   * and the `Symbol.metadata` it is stored under on that class, which name the declaring class
   * among the prototypes of an instance even when another decorator wrapped the method.
   */
  metadata: { object: object; symbol: symbol } | undefined;
  /** The function installed in place of the original. */
  wrapper: Function | undefined;
  #scope: string | undefined;
  #scopeResolved = false;
  readonly #tierViews = new WeakMap<CacheView, CacheView>();
  #standIn: object | undefined;

  constructor(init: RegistrationInit) {
    this.prefix = init.prefix;
    this.kind = init.kind;
    this.member = init.member;
    this.isStatic = init.isStatic;
    this.original = init.original;
    this.options = init.options;
  }

  get memberName(): string {
    return typeof this.member === 'symbol' ? `[${this.member.description ?? ''}]` : this.member;
  }

  /** `LessonService.introPage` when the class is known, for messages. */
  get label(): string {
    const owner = this.declaring?.name;
    return owner ? `${owner}.${this.memberName}` : this.memberName;
  }

  /** Whether the body needs a receiver that only the caller can give (an instance method). */
  get needsInstance(): boolean {
    return this.kind === 'method' && !this.isStatic;
  }

  /**
   * Finds the declaring class from an instance: the prototype that holds this very wrapper, or whose
   * class carries the decorator metadata the method was decorated with (when another decorator
   * wrapped ours, so the prototype holds that decorator's function). Only without metadata (a
   * compiler that passes none, e.g. TypeScript 5.0 and 5.1) is it the nearest prototype that
   * defines the member, which is a subclass's override if a subclass is constructed first.
   */
  resolveFrom(self: unknown): void {
    if (this.declaring || this.kind !== 'method') return;
    if ((typeof self !== 'object' && typeof self !== 'function') || self === null || standIns.has(self))
      return;
    if (this.isStatic) {
      if (typeof self === 'function') this.declaring = self;
      return;
    }
    const metadata = this.metadata;
    let nearest: object | undefined;
    for (let proto = Object.getPrototypeOf(self); proto !== null; proto = Object.getPrototypeOf(proto)) {
      const descriptor = Object.getOwnPropertyDescriptor(proto, this.member);
      if (!descriptor) continue;
      const owner = Object.getOwnPropertyDescriptor(proto, 'constructor')?.value as unknown;
      if (
        descriptor.value === this.wrapper ||
        (metadata !== undefined &&
          typeof owner === 'function' &&
          Object.getOwnPropertyDescriptor(owner, metadata.symbol)?.value === metadata.object)
      ) {
        this.declaring = (proto as { constructor: Function }).constructor;
        return;
      }
      nearest ??= proto;
    }
    if (nearest) this.declaring = (nearest as { constructor: Function }).constructor;
  }

  /** The receiver to use when the caller gave none: the class for static methods, else a stand-in. */
  defaultSelf(): unknown {
    if (this.kind === 'function') return undefined;
    if (this.isStatic) return this.declaring;
    this.#standIn ??= this.#makeStandIn();
    return this.#standIn;
  }

  #makeStandIn(): object {
    const fail = (): never => {
      throw decoratorError(
        'E_INVALID_OPTION',
        `the key or cache option of ${this.label} reads the instance, which a bare method reference does not carry`,
        `pass the instance: invalidateCached(service, '${this.memberName}', …args) or warm(service, '${this.memberName}', argsList)`,
      );
    };
    const standIn = new Proxy(Object.create(null) as object, {
      get: fail,
      has: fail,
      ownKeys: fail,
      getOwnPropertyDescriptor: fail,
      getPrototypeOf: fail,
    });
    standIns.add(standIn);
    return standIn;
  }

  /** What keeps this method's entries apart from others under the same prefix (part of the request). */
  scope(): string | undefined {
    if (this.#scopeResolved) return this.#scope;
    const option = this.options.scope;
    let scope: string | undefined;
    if (option === false) scope = undefined;
    else if (typeof option === 'string') scope = option;
    else if (this.kind === 'function') scope = undefined;
    else {
      const owner = this.declaring;
      if (!owner) {
        throw decoratorError(
          'E_INVALID_OPTION',
          `cannot tell yet which class declares ${this.memberName} (standard decorators see the class only once an instance exists)`,
          `create an instance first, pass one (invalidateCached(service, '${this.memberName}', …)), or give the method a fixed scope option`,
        );
      }
      if (!owner.name) {
        throw decoratorError(
          'E_INVALID_OPTION',
          `${this.memberName} is declared in an anonymous class, so the class name cannot keep its entries apart`,
          "give the method a scope option, e.g. scope: 'LessonService'",
        );
      }
      scope = `${owner.name}.${this.memberName}`;
      // Decoration checked this already where the compiler gave the class or its metadata.
      claimDefaultScope(owner, this, owner.name);
      warnOnNameClash(`${this.prefix}\u0000${scope}`, owner, scope);
    }
    this.#scope = scope;
    this.#scopeResolved = true;
    return scope;
  }

  /** The cache view a call uses; `base` overrides the configured cache. */
  view(self: unknown, base?: CacheView): CacheView {
    let view = base;
    if (view === undefined) {
      const source = this.options.cache;
      if (source === undefined) view = getDefaultCache();
      else if (typeof source === 'function') {
        view = this.kind === 'method' ? source(self) : (source as () => CacheView)();
        if (typeof view !== 'object' || view === null || typeof view.getOrComputeResult !== 'function') {
          throw invalid(
            `the cache option of ${this.label} returned ${view === null ? 'null' : typeof view} instead of a cache`,
            'return a cache from createCache() or a view of one',
          );
        }
      } else view = source;
    }
    const tier = this.options.tier;
    if (tier === undefined || tier === view.tierName) return view;
    let tiered = this.#tierViews.get(view);
    if (!tiered) {
      tiered = view.tier(tier);
      this.#tierViews.set(view, tiered);
    }
    return tiered;
  }

  /** `{ name: prefix, request: { scope?, args | key } }`: the prefix plus all (or the selected) arguments. */
  keyInput(self: unknown, args: readonly unknown[]): { name: string; request: unknown } {
    const scope = this.scope();
    const select = this.options.key;
    const request: Record<string, unknown> = scope === undefined ? {} : { scope };
    if (select) {
      const key = this.kind === 'method' ? select(self, ...args) : select(...args);
      if (key === undefined) {
        throw invalid(
          `the key option of ${this.label} returned undefined, which would give every such call one shared entry`,
          this.kind === 'method'
            ? 'return what identifies the call, e.g. key: (self, question) => ({ tenant: self.tenant, question }) (a constant such as null shares one entry on purpose)'
            : 'return what identifies the call, e.g. key: (text, options) => ({ text, model: options.model }) (a constant such as null shares one entry on purpose)',
        );
      }
      request.key = key;
    } else request.args = argsKey(args);
    return { name: this.prefix, request };
  }

  /** Runs one call through the cache; the body runs only on a miss, once for concurrent callers. */
  async run(
    self: unknown,
    args: readonly unknown[],
    view: CacheView,
    control?: { refresh?: boolean; track?: boolean },
  ): Promise<RunOutcome> {
    const input = this.keyInput(self, args);
    let admitted: boolean | undefined;
    let policy = this.options.policy;
    if (this.options.tags || control) {
      policy = { ...policy };
      if (this.options.tags) policy.tags = this.options.tags(...args);
      if (control?.refresh) policy.forceRefresh = true;
      if (control?.track) {
        const admit = this.options.shouldCache;
        policy.shouldCache = (value) => {
          admitted = admit ? admit(value) : value !== undefined;
          return admitted;
        };
      }
    }
    let started = false;
    try {
      const outer = computing.getStore();
      if (outer !== undefined) {
        const storageKey = view.key(input);
        if (isComputing(outer, storageKey)) {
          // Called from inside this key's own computation (an override that calls `super` on a
          // method sharing its key, a recursive call): joining that computation would wait for
          // itself forever, so the body runs uncached and the outer call stores its own answer.
          started = true;
          const value = await this.original.apply(self, args as unknown[]);
          const { tierName: tier, namespace } = view;
          return {
            result: { value, hit: false, stale: false, coalesced: false, key: storageKey, tier, namespace },
            admitted,
          };
        }
      }
      const result = await view.getOrComputeResult(
        input,
        async () => {
          started = true;
          const frame: Computing = {
            storageKey: view.key(input),
            parent: computing.getStore(),
            active: true,
          };
          try {
            return await computing.run(frame, () => this.original.apply(self, args as unknown[]));
          } finally {
            frame.active = false;
          }
        },
        policy,
      );
      return { result, admitted };
    } catch (error) {
      if (!started && CacheError.isInstance(error) && error.code === 'E_UNSERIALIZABLE') {
        throw decoratorError(
          'E_UNSERIALIZABLE',
          `${this.prefix} (${this.label}): the call cannot be turned into a cache key: ${(error as Error).message}`,
          this.kind === 'method'
            ? 'pass a key option that selects the serialisable parts, e.g. key: (self, subject, topic) => ({ subject, topic })'
            : 'pass a key option that selects the serialisable parts, e.g. key: (text, options) => ({ text, model: options.model })',
          { cause: error },
        );
      }
      throw error;
    }
  }

  /** A normal call of the cached method or function. */
  async call(self: unknown, args: readonly unknown[]): Promise<unknown> {
    if (this.declaring === undefined && this.kind === 'method') this.resolveFrom(self);
    return (await this.run(self, args, this.view(self))).result.value;
  }
}

const registrations = new WeakMap<Function, Registration>();

/** The registrations of one prefix, weakly, and the size of the set after its last pruning. */
interface PrefixEntry {
  readonly refs: Set<WeakRef<Registration>>;
  prunedSize: number;
}

const byPrefix = new Map<string, PrefixEntry>();

/**
 * Removes the reference to a collected registration (a function wrapped per request, a class
 * defined again), so that wrapping at runtime does not grow the registry forever.
 */
const collected = new FinalizationRegistry<{ prefix: string; ref: WeakRef<Registration> }>(
  ({ prefix, ref }) => {
    const entry = byPrefix.get(prefix);
    if (!entry?.refs.delete(ref)) return;
    if (entry.refs.size === 0) byPrefix.delete(prefix);
  },
);

/** Drops the references to collected registrations. */
function prune(entry: PrefixEntry): void {
  for (const ref of entry.refs) if (ref.deref() === undefined) entry.refs.delete(ref);
  entry.prunedSize = entry.refs.size;
}

export function register(wrapper: Function, registration: Registration): void {
  registration.wrapper = wrapper;
  registrations.set(wrapper, registration);
  const prefix = registration.prefix;
  let entry = byPrefix.get(prefix);
  if (!entry) {
    entry = { refs: new Set(), prunedSize: 0 };
    byPrefix.set(prefix, entry);
  } else if (entry.refs.size >= 2 * Math.max(entry.prunedSize, 16)) {
    // Finalizers may run late or not at all: pruning whenever the set has doubled keeps it
    // proportional to the live registrations, at an amortised constant cost per registration.
    prune(entry);
  }
  const ref = new WeakRef(registration);
  entry.refs.add(ref);
  collected.register(registration, { prefix, ref });
}

/** How many registrations of `prefix` the registry holds, collected ones not yet dropped included (tests). */
export function registeredCount(prefix: string): number {
  return byPrefix.get(prefix)?.refs.size ?? 0;
}

export function registrationOf(fn: unknown): Registration | undefined {
  return typeof fn === 'function' ? registrations.get(fn) : undefined;
}

/** The live registrations that use `prefix`. */
export function registrationsFor(prefix: string): Registration[] {
  const entry = byPrefix.get(prefix);
  if (!entry) return [];
  prune(entry);
  if (entry.refs.size === 0) byPrefix.delete(prefix);
  const out: Registration[] = [];
  for (const ref of entry.refs) {
    const registration = ref.deref();
    if (registration) out.push(registration);
  }
  return out;
}
