import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import { redactUrl } from '../config/env.ts';
import { cacheError } from '../errors.ts';
import type {
  BackendCapabilities,
  BackendStats,
  CacheBackend,
  Clock,
  ScanOptions,
  StoredEntry,
} from './backend.ts';
import { BACKEND_SPECIFICATION_VERSION, systemClock } from './backend.ts';
import {
  COMPARE_AND_SWAP_SCRIPT,
  DELETE_SCRIPT,
  DELETE_TAG_SCRIPT,
  LOCK_SCRIPT,
  PRUNE_MEMBERS_SCRIPT,
  SET_SCRIPT,
  UNLOCK_SCRIPT,
} from './redis-scripts.ts';

type Client = Redis | Cluster;

export interface RedisBackendOptions {
  /** `redis://[:password@]host:port[/db]` or `rediss://…`. Ignored when `client` or `cluster` is given. @default 'redis://127.0.0.1:6379' */
  url?: string;
  /** An existing ioredis `Redis` or `Cluster` instance. The backend never closes a client it did not create. */
  client?: Client;
  /** Seed nodes of a Redis Cluster; the backend creates an ioredis `Cluster`. */
  cluster?: ClusterNode[];
  /** Extra ioredis options for a client the backend creates. @default {} */
  redisOptions?: RedisOptions;
  /** Extra ioredis Cluster options for a cluster client the backend creates. @default {} */
  clusterOptions?: ClusterOptions;
  /**
   * Prefix of every Redis key this backend writes, so that several applications (or tenants)
   * share one Redis without seeing each other's entries. `clear()` only removes keys under it.
   * @default 'llmc:'
   */
  keyPrefix?: string;
  /**
   * Entries are spread over this many hash-tag buckets; an entry and its tag sets share a
   * bucket, which keeps tag updates atomic on Redis Cluster. Changing it orphans stored data.
   * @default 16
   */
  buckets?: number;
  /**
   * Time source for logical expiry. Given one (tests), lock leases follow it too; by default they
   * expire by PX on the server's clock, so machines whose clocks differ agree on them.
   * @default Date.now
   */
  clock?: Clock;
  /**
   * Reads issued in the same tick (concurrent requests) go out as one MGET instead of one GET
   * each: one socket write and one reply for the lot. A lone read is still a plain GET. A cluster
   * never batches (an MGET on a migrating slot is refused). Set to false to send every read on
   * its own.
   * @default true
   */
  batchReads?: boolean;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** ioredis client states before its first connection is up (and `ready`): commands are queued, then sent. */
const FIRST_CONNECTION = new Set(['wait', 'connecting', 'connect', 'ready']);

/** Most keys one batched MGET carries; a larger burst is split. */
const MAX_BATCH = 128;

interface ReadBatch {
  /** Sent already (at the end of the tick, or early by close()). */
  sent: boolean;
  keys: string[];
  resolves: ((entry: StoredEntry | undefined) => void)[];
  rejects: ((error: unknown) => void)[];
}

export interface RedisBackend extends CacheBackend {
  readonly name: 'redis';
  readonly client: Client;
  add(key: string, entry: StoredEntry): Promise<boolean>;
  acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  releaseLock(name: string, owner: string): Promise<boolean>;
  publish(channel: string, message: string): Promise<void>;
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
  incrementCounters(scope: string, deltas: Readonly<Record<string, number>>): Promise<void>;
  readCounters(): Promise<Record<string, Record<string, number>>>;
  clearCounters(scopePrefix?: string): Promise<void>;
  compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean>;
  evictionRisk(): Promise<string | undefined>;
}

interface IoRedisModule {
  Redis: new (...args: unknown[]) => Redis;
  Cluster: new (nodes: ClusterNode[], options?: ClusterOptions) => Cluster;
}

/** Loads ioredis on first use so that memory- and SQLite-only users never need it. */
export function loadIoRedis(load: (id: string) => unknown = createRequire(import.meta.url)): IoRedisModule {
  try {
    const mod = load('ioredis') as IoRedisModule & { default?: IoRedisModule };
    return mod.Redis ? mod : (mod.default as IoRedisModule);
  } catch (error) {
    throw cacheError(
      'E_MISSING_DEPENDENCY',
      'redis',
      'cannot import "ioredis": install it (pnpm add ioredis) or pass a client as `client`',
      { cause: error },
    );
  }
}

const CAPABILITIES: BackendCapabilities = {
  createIfAbsent: true,
  locks: true,
  pubsub: true,
  persistent: true,
  shared: true,
};

const NEWLINE = 0x0a;
/** How long close() waits for Redis to answer QUIT before it drops the connection. */
const CLOSE_WAIT_MS = 1000;
const SCRIPTS = {
  xcacheSet: { numberOfKeys: 2, lua: SET_SCRIPT },
  xcacheDel: { numberOfKeys: 2, lua: DELETE_SCRIPT },
  xcacheDelTag: { numberOfKeys: 1, lua: DELETE_TAG_SCRIPT },
  xcacheLock: { numberOfKeys: 1, lua: LOCK_SCRIPT },
  xcacheUnlock: { numberOfKeys: 1, lua: UNLOCK_SCRIPT },
  xcacheSwap: { numberOfKeys: 2, lua: COMPARE_AND_SWAP_SCRIPT },
  xcachePruneTag: { numberOfKeys: 1, lua: PRUNE_MEMBERS_SCRIPT },
} as const;

type ScriptClient = Client & {
  xcacheSet(...args: (string | Buffer)[]): Promise<number>;
  xcacheDel(...args: string[]): Promise<number>;
  xcacheDelTag(...args: string[]): Promise<number>;
  xcacheLock(...args: string[]): Promise<number>;
  xcacheUnlock(...args: string[]): Promise<number>;
  xcacheSwap(...args: (string | Buffer)[]): Promise<number>;
  xcachePruneTag(...args: string[]): Promise<number>;
};

/** Escapes a literal for a SCAN MATCH glob. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** FNV-1a over UTF-16 code units: a cheap, stable bucket choice. */
function bucketOf(key: string, buckets: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % buckets;
}

/**
 * The latest expiry stored as one (the largest Date, year 275760). A later one is kept as no
 * expiry: Redis refuses a PX that large, and the value line holds the expiry as plain digits.
 */
const MAX_EXPIRY_MS = 8.64e15;

/** The expiry an entry is stored with: undefined for none (or one past MAX_EXPIRY_MS). */
function storedExpiry(entry: StoredEntry): number | undefined {
  return entry.expiresAt !== undefined && entry.expiresAt <= MAX_EXPIRY_MS ? entry.expiresAt : undefined;
}

function encodeValue(entry: StoredEntry, tags: readonly string[]): Buffer {
  const expiresAt = storedExpiry(entry);
  const expiry = expiresAt === undefined ? '' : String(Math.ceil(expiresAt));
  const head = Buffer.from(tags.length > 0 ? `${expiry} ${JSON.stringify(tags)}\n` : `${expiry}\n`, 'utf8');
  const body = entry.value;
  return Buffer.concat([head, Buffer.from(body.buffer, body.byteOffset, body.byteLength)]);
}

/** What follows the prefix in the keys the backend owns: kind, bucket hash tag, then the key or tag. */
const BUCKETED = /^([ekt])(\{\d+\})/;

/**
 * Counter scopes the cache (`t:<tier>:<namespace>`, `l:<level>`) and the tool ledger
 * (`~ledger/<namespace>:<tool>`) write: what tells their counter hashes from other applications'
 * `c:…` keys when the key prefix is empty.
 */
const OWN_SCOPE = /^(?:t:[^:]+:.|l:.|~ledger\/[^:]+:.)/;
/** A counter value as HINCRBY / HINCRBYFLOAT leave it. */
const NUMBER = /^-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i;

/** The fields of a counter hash as numbers; undefined when it is empty or holds anything else. */
function counterValues(hash: Record<string, string> | undefined): Record<string, number> | undefined {
  if (!hash) return undefined;
  const entries = Object.entries(hash);
  if (entries.length === 0 || entries.some(([, value]) => !NUMBER.test(value))) return undefined;
  return Object.fromEntries(entries.map(([name, value]) => [name, Number(value)]));
}

/** Splits a stored value; undefined when it is malformed or expired (the clock is read only then). */
function decodeValue(raw: Buffer | null | undefined, clock: Clock): StoredEntry | undefined {
  if (!raw) return undefined;
  // The line is short (an expiry, maybe a tag list): a loop here is cheaper than Buffer#indexOf.
  let nl = 0;
  while (nl < raw.length && raw[nl] !== NEWLINE) nl++;
  if (nl === raw.length) return undefined;
  // The expiry is ASCII digits (epoch ms) before the first space or the newline.
  let end = 0;
  let expiry = 0;
  for (let byte = raw[0]!; end < nl && byte >= 0x30 && byte <= 0x39; byte = raw[++end]!) {
    expiry = expiry * 10 + (byte - 0x30);
  }
  let expiresAt: number | undefined;
  if (end > 0) {
    expiresAt = expiry;
    if (!(expiresAt > clock.now())) return undefined;
  }
  const value = new Uint8Array(raw.buffer, raw.byteOffset + nl + 1, raw.length - nl - 1);
  if (end === nl) return { value, expiresAt };
  let tags: string[] | undefined;
  try {
    tags = JSON.parse(raw.toString('utf8', end + 1, nl)) as string[];
  } catch {
    return undefined;
  }
  return { value, expiresAt, tags };
}

/**
 * Refuses a `redis://` URL that ioredis would misread instead of failing on: no `//` or no host
 * (it would connect to localhost:6379), or a path that is not a database number (every command
 * would fail with `SELECT NaN`). Other forms (a socket path) are left to ioredis.
 */
function checkRedisUrl(url: string): void {
  const scheme = /^(rediss?):/i.exec(url);
  if (!scheme) return;
  let problem: string | undefined;
  if (!url.slice(scheme[0].length).startsWith('//')) problem = 'it needs "//" after the scheme';
  else {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      problem = 'it is not a valid URL';
    }
    if (parsed && parsed.hostname === '') problem = 'it has no host';
    else if (parsed && !/^\/?(\d+)?$/.test(parsed.pathname)) {
      problem = `its path "${parsed.pathname}" is not a database number`;
    }
  }
  if (problem === undefined) return;
  throw cacheError(
    'E_INVALID_OPTION',
    'redis',
    `url "${redactUrl(url)}": ${problem}; use redis://[user:password@]host[:port][/db], e.g. redis://127.0.0.1:6379/0`,
  );
}

/** Length of the header (through the newline) and whether the value is live, from its first bytes. */
function headerInfo(head: Buffer, now: number): { length: number; live: boolean } | undefined {
  const nl = head.indexOf(NEWLINE);
  if (nl < 0) return undefined;
  let end = 0;
  while (end < nl && head[end]! >= 0x30 && head[end]! <= 0x39) end++;
  const live = end === 0 || Number(head.toString('latin1', 0, end)) > now;
  return { length: nl + 1, live };
}

class RedisStore implements RedisBackend {
  readonly specificationVersion = BACKEND_SPECIFICATION_VERSION;
  readonly name = 'redis' as const;
  readonly capabilities = CAPABILITIES;
  readonly client: Client;

  private readonly scripts: ScriptClient;
  private readonly prefix: string;
  private readonly buckets: number;
  private readonly clock: Clock;
  /**
   * Lock leases expire by PX alone, on the server's clock, unless a clock was injected (tests):
   * comparing expiries written by one machine's clock with another's would let a process whose
   * clock runs ahead take a live lock.
   */
  private readonly leaseNow: () => string;
  private readonly ownsClient: boolean;
  private readonly isCluster: boolean;
  private subscriber: Client | undefined;
  private readonly listeners = new Map<string, Set<(message: string) => void>>();
  private closed = false;
  private readonly batchReads: boolean;
  private batch: ReadBatch | undefined;
  /** Batches waiting for the end of the tick (a full one is no longer `batch`). */
  private readonly unsent = new Set<ReadBatch>();
  /** Reads sent and not yet answered. */
  private reading = 0;

  constructor(options: RedisBackendOptions) {
    this.batchReads = options.batchReads ?? true;
    this.prefix = options.keyPrefix ?? 'llmc:';
    if (this.prefix.includes('{') || this.prefix.includes('}')) {
      throw cacheError(
        'E_INVALID_OPTION',
        'redis',
        `keyPrefix "${this.prefix}" must not contain { or } (hash tags)`,
      );
    }
    this.buckets = options.buckets ?? 16;
    if (!Number.isInteger(this.buckets) || this.buckets < 1 || this.buckets > 16384) {
      throw cacheError(
        'E_INVALID_OPTION',
        'redis',
        `buckets must be an integer in 1..16384, got ${options.buckets}`,
      );
    }
    this.clock = options.clock ?? systemClock;
    const injected = options.clock;
    this.leaseNow = injected ? () => String(injected.now()) : () => '';
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      const io = loadIoRedis();
      this.ownsClient = true;
      if (options.cluster) {
        this.client = new io.Cluster(options.cluster, {
          ...options.clusterOptions,
          redisOptions: { maxRetriesPerRequest: 1, ...options.clusterOptions?.redisOptions },
        });
      } else {
        if (options.url !== undefined) checkRedisUrl(options.url);
        // No auto-pipelining: concurrent reads are batched into MGETs by get() (docs/redis.md).
        this.client = new io.Redis(options.url ?? 'redis://127.0.0.1:6379', {
          maxRetriesPerRequest: 1,
          ...options.redisOptions,
        });
      }
    }
    const clientOptions = (
      this.client as { options?: { keyPrefix?: string; redisOptions?: { keyPrefix?: string } } }
    ).options;
    if (clientOptions?.keyPrefix || clientOptions?.redisOptions?.keyPrefix) {
      // ioredis prefixes KEYS and commands but not script arguments or SCAN patterns, so tags
      // and prefix invalidation would silently find nothing.
      if (this.ownsClient) this.client.disconnect();
      throw cacheError(
        'E_INVALID_OPTION',
        'redis',
        this.ownsClient
          ? "redisOptions, clusterOptions or the URL (?keyPrefix=) give ioredis a keyPrefix of its own, which tag and prefix invalidation cannot see; remove it and pass redisBackend({ keyPrefix: '…' })"
          : "the ioredis client has its own keyPrefix, which tag and prefix invalidation cannot see; create the client without it and pass redisBackend({ client, keyPrefix: '…' })",
      );
    }
    // Connection errors surface as failed commands, which the engine counts and fails open on;
    // without a listener ioredis would also print each reconnect attempt.
    if (this.ownsClient) this.client.on('error', () => undefined);
    this.isCluster = (this.client as Cluster).isCluster === true;
    for (const [name, definition] of Object.entries(SCRIPTS)) {
      if (typeof (this.client as unknown as Record<string, unknown>)[name] !== 'function') {
        this.client.defineCommand(name, definition);
      }
    }
    this.scripts = this.client as ScriptClient;
  }

  // Key layout: `${prefix}e{b}key` entry, `${prefix}k{b}key` its tag list, `${prefix}t{b}tag`
  // the bucket's tag set, `${prefix}c:scope` counters, `${prefix}l:name` locks.
  private bucketTag(key: string): string {
    return `{${bucketOf(key, this.buckets)}}`;
  }
  private entryKey(key: string, tag = this.bucketTag(key)): string {
    return `${this.prefix}e${tag}${key}`;
  }
  private listKey(key: string, tag: string): string {
    return `${this.prefix}k${tag}${key}`;
  }
  private tagPrefix(tag: string): string {
    return `${this.prefix}t${tag}`;
  }
  /**
   * A pub/sub channel: under the key prefix and, for a database other than 0, named after it.
   * Pub/sub ignores SELECT, so caches kept apart by database number would otherwise hear each
   * other's invalidations.
   */
  private channelName(channel: string): string {
    const db = this.isCluster ? 0 : Number((this.client as Redis).options?.db ?? 0);
    return db > 0 ? `${this.prefix}db${db}:${channel}` : `${this.prefix}${channel}`;
  }
  /** The user key inside an entry key, or undefined for keys that are not entries. */
  private userKey(redisKey: string): string | undefined {
    const start = this.prefix.length + 1;
    if (!redisKey.startsWith(`${this.prefix}e{`)) return undefined;
    const close = redisKey.indexOf('}', start);
    return close < 0 ? undefined : redisKey.slice(close + 1);
  }
  /**
   * The kind, bucket hash tag and rest (user key or tag) of a key this backend owns, read from
   * the key itself: a key written with another `buckets` setting is still found whole.
   */
  private ownKey(redisKey: string): { kind: string; tag: string; rest: string } | undefined {
    if (!redisKey.startsWith(this.prefix)) return undefined;
    const match = BUCKETED.exec(redisKey.slice(this.prefix.length));
    if (!match) return undefined;
    return {
      kind: match[1]!,
      tag: match[2]!,
      rest: redisKey.slice(this.prefix.length + match[0].length),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw cacheError('E_CLOSED', 'redis', 'the backend is closed; create a new one');
  }

  get(key: string): Promise<StoredEntry | undefined> {
    // A read with none in flight goes out at once (a lone caller pays nothing for batching);
    // reads issued while others are in flight, as concurrent callers do, wait for the end of the
    // tick and go out together.
    // On a cluster every read is a GET of its own (see getMany).
    if (this.closed || !this.batchReads || this.reading === 0 || this.isCluster) return this.getOne(key);
    let batch = this.batch;
    if (!batch) {
      const opened: ReadBatch = { sent: false, keys: [], resolves: [], rejects: [] };
      this.batch = batch = opened;
      this.unsent.add(opened);
      process.nextTick(() => this.flush(opened));
    }
    const joined = batch;
    joined.keys.push(key);
    if (joined.keys.length >= MAX_BATCH) this.batch = undefined;
    return new Promise((resolve, reject) => {
      joined.resolves.push(resolve);
      joined.rejects.push(reject);
    });
  }

  private async getOne(key: string): Promise<StoredEntry | undefined> {
    this.assertOpen();
    this.reading++;
    try {
      return decodeValue(await this.client.getBuffer(this.entryKey(key)), this.clock);
    } finally {
      this.reading--;
    }
  }

  private flush(batch: ReadBatch): void {
    if (this.batch === batch) this.batch = undefined;
    if (batch.sent) return;
    batch.sent = true;
    this.unsent.delete(batch);
    const { keys, resolves, rejects } = batch;
    if (keys.length === 1) {
      this.getOne(keys[0]!).then(resolves[0], rejects[0]);
      return;
    }
    // One MGET (a single server: batches are never made on a cluster), settling each caller.
    this.reading++;
    this.getMany(keys)
      .finally(() => this.reading--)
      .then(
        (entries) => {
          for (let i = 0; i < resolves.length; i++) resolves[i]!(entries[i]);
        },
        (error: unknown) => {
          for (const reject of rejects) reject(error);
        },
      );
  }

  async getMany(keys: readonly string[]): Promise<(StoredEntry | undefined)[]> {
    this.assertOpen();
    if (keys.length === 0) return [];
    // One clock read for the batch, and none when no entry carries an expiry.
    let now: number | undefined;
    const clock: Clock = { now: () => (now ??= this.clock.now()) };
    // On a cluster, one GET per key, sent together: while a slot is being migrated a multi-key
    // MGET on it fails with TRYAGAIN, which ioredis retries for about a second (past the read
    // timeout, so healthy slots would be skipped too), where a single GET is redirected at once.
    const raw = this.isCluster
      ? await Promise.all(keys.map((key) => this.client.getBuffer(this.entryKey(key))))
      : await this.client.mgetBuffer(...keys.map((key) => this.entryKey(key)));
    return raw.map((value) => decodeValue(value, clock));
  }

  private write(key: string, entry: StoredEntry, mode: 'set' | 'add'): Promise<number> {
    const now = this.clock.now();
    const tag = this.bucketTag(key);
    let px = '';
    const expiresAt = storedExpiry(entry);
    if (expiresAt !== undefined) {
      const ttl = Math.ceil(expiresAt - now);
      if (ttl <= 0) return mode === 'set' ? this.delete(key).then(() => 1) : Promise.resolve(0);
      px = String(ttl);
    }
    const tags = entry.tags ? [...new Set(entry.tags)] : [];
    return this.scripts.xcacheSet(
      this.entryKey(key, tag),
      this.listKey(key, tag),
      encodeValue(entry, tags),
      px,
      this.tagPrefix(tag),
      mode,
      String(now),
      ...tags,
    );
  }

  async set(key: string, entry: StoredEntry): Promise<void> {
    this.assertOpen();
    await this.write(key, entry, 'set');
  }

  async setMany(entries: ReadonlyArray<readonly [key: string, entry: StoredEntry]>): Promise<void> {
    this.assertOpen();
    await Promise.all(entries.map(([key, entry]) => this.write(key, entry, 'set')));
  }

  async add(key: string, entry: StoredEntry): Promise<boolean> {
    this.assertOpen();
    return (await this.write(key, entry, 'add')) === 1;
  }

  /**
   * Deletes an entry with its tag list and tag memberships in one script: a write racing it
   * lands either before (and goes) or after (and stays whole).
   */
  private deleteOne(key: string, onlyExpired: boolean, tag = this.bucketTag(key)): Promise<number> {
    return this.scripts.xcacheDel(
      this.entryKey(key, tag),
      this.listKey(key, tag),
      this.tagPrefix(tag),
      String(this.clock.now()),
      onlyExpired ? '1' : '0',
    );
  }

  async delete(key: string): Promise<boolean> {
    this.assertOpen();
    return (await this.deleteOne(key, false)) === 1;
  }

  async has(key: string): Promise<boolean> {
    return (await this.get(key)) !== undefined;
  }

  async deleteByTag(tag: string): Promise<number> {
    this.assertOpen();
    const now = String(this.clock.now());
    const counts = await Promise.all(
      Array.from({ length: this.buckets }, (_, bucket) => {
        const hashTag = `{${bucket}}`;
        return this.scripts.xcacheDelTag(
          `${this.tagPrefix(hashTag)}${tag}`,
          `${this.prefix}e${hashTag}`,
          `${this.prefix}k${hashTag}`,
          this.tagPrefix(hashTag),
          now,
        );
      }),
    );
    return counts.reduce((sum, n) => sum + n, 0);
  }

  /** SCAN over every master (a cluster) or the one server, never KEYS. */
  private async *scan(match: string, count: number): AsyncGenerator<string[]> {
    const nodes: Redis[] = this.isCluster ? await this.masters() : [this.client as Redis];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', count);
        cursor = next;
        if (keys.length > 0) yield keys;
      } while (cursor !== '0');
    }
  }

  /**
   * The cluster's masters. A client that has not loaded the slot map yet knows none, and a scan
   * over none would report an invalidation done that removed nothing: a command waits for it.
   */
  private async masters(): Promise<Redis[]> {
    const cluster = this.client as Cluster;
    if (cluster.nodes('master').length === 0) await cluster.ping();
    const nodes = cluster.nodes('master');
    if (nodes.length === 0) {
      throw cacheError(
        'E_BACKEND',
        'redis',
        'the Redis Cluster client knows no master node to scan; check the cluster',
      );
    }
    return nodes;
  }

  private entryPattern(prefix = ''): string {
    return `${globEscape(this.prefix)}e{*}${globEscape(prefix)}*`;
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    this.assertOpen();
    let removed = 0;
    for await (const batch of this.scan(this.entryPattern(prefix), 1000)) {
      removed += await this.deleteAll(batch, false, (key) => key.startsWith(prefix));
    }
    return removed;
  }

  /** Deletes the entries (or, given tag-list keys, their entries) among `redisKeys`, each whole. */
  private async deleteAll(
    redisKeys: readonly string[],
    onlyExpired: boolean,
    wanted: (key: string) => boolean = () => true,
  ): Promise<number> {
    const results = await Promise.all(
      redisKeys.map((redisKey) => {
        const own = this.ownKey(redisKey);
        if (!own || own.kind === 't' || !wanted(own.rest)) return 0;
        return this.deleteOne(own.rest, onlyExpired, own.tag);
      }),
    );
    return results.reduce((sum, n) => sum + n, 0);
  }

  async clear(): Promise<void> {
    this.assertOpen();
    // Entries, their tag lists and the tag sets: `<prefix>[ekt]{<bucket>}…`. Counters and locks
    // live under the prefix too and stay; so do keys of a longer prefix (`app:` vs `app:eu:`) and
    // anything else that merely starts with the prefix. Applications may keep writing meanwhile:
    // each entry goes with its tag list and memberships in one script, never a key at a time, so
    // an entry written during clear() is removed whole or kept whole, and tag invalidation still
    // finds it. A tag list left without its entry (Redis evicted it) goes the same way.
    for await (const batch of this.scan(`${globEscape(this.prefix)}[ek]{*`, 1000)) {
      await this.deleteAll(batch, false);
    }
    // Then each tag set, with the entries written into it since (as deleteByTag does).
    const now = String(this.clock.now());
    for await (const batch of this.scan(`${globEscape(this.prefix)}t{*`, 1000)) {
      await Promise.all(
        batch.map((setKey) => {
          const own = this.ownKey(setKey);
          if (!own) return 0;
          return this.scripts.xcacheDelTag(
            setKey,
            `${this.prefix}e${own.tag}`,
            `${this.prefix}k${own.tag}`,
            this.tagPrefix(own.tag),
            now,
          );
        }),
      );
    }
  }

  async prune(): Promise<number> {
    this.assertOpen();
    let removed = 0;
    for await (const batch of this.scan(this.entryPattern(), 1000)) {
      removed += await this.deleteAll(batch, true);
    }
    // Tag sets keep members whose entries Redis expired by PX; drop those members. The set is
    // read in pages (SSCAN), and each page is checked and trimmed by one script, so a member
    // whose entry is written again meanwhile keeps its membership.
    for await (const batch of this.scan(`${globEscape(this.prefix)}t{*`, 1000)) {
      for (const setKey of batch) {
        const own = this.ownKey(setKey);
        if (!own) continue;
        let cursor = '0';
        do {
          const [next, members] = await this.client.sscan(setKey, cursor, 'COUNT', 1000);
          cursor = next;
          if (members.length > 0) {
            await this.scripts.xcachePruneTag(
              setKey,
              `${this.prefix}e${own.tag}`,
              `${this.prefix}k${own.tag}`,
              own.rest,
              ...members,
            );
          }
        } while (cursor !== '0');
      }
    }
    return removed;
  }

  /** Live entries among a batch of Redis keys, with their value sizes, read header-first. */
  private async liveSizes(redisKeys: string[]): Promise<{ key: string; bytes: number }[]> {
    const now = this.clock.now();
    const [heads, lengths] = await Promise.all([
      Promise.all(redisKeys.map((k) => this.client.getrangeBuffer(k, 0, 1023))),
      Promise.all(redisKeys.map((k) => this.client.strlen(k))),
    ]);
    const out: { key: string; bytes: number }[] = [];
    for (let i = 0; i < redisKeys.length; i++) {
      let head = heads[i];
      if (!head || head.length === 0) continue;
      // A header with many tags can be longer than the first read.
      if (head.indexOf(NEWLINE) < 0 && head.length === 1024)
        head = (await this.client.getBuffer(redisKeys[i]!)) ?? head;
      const info = headerInfo(head, now);
      if (!info?.live) continue;
      out.push({ key: redisKeys[i]!, bytes: lengths[i]! - info.length });
    }
    return out;
  }

  async *keys(options: ScanOptions = {}): AsyncIterable<string> {
    this.assertOpen();
    const prefix = options.prefix ?? '';
    for await (const batch of this.scan(this.entryPattern(prefix), options.batchSize ?? 500)) {
      for (const { key } of await this.liveSizes(batch)) {
        const user = this.userKey(key);
        if (user?.startsWith(prefix)) yield user;
      }
    }
  }

  /** Walks the keyspace (SCAN): O(entries). Size Redis with maxmemory + an LRU policy instead. */
  async stats(): Promise<BackendStats> {
    this.assertOpen();
    let entries = 0;
    let bytes = 0;
    for await (const batch of this.scan(this.entryPattern(), 1000)) {
      for (const live of await this.liveSizes(batch)) {
        entries++;
        bytes += live.bytes;
      }
    }
    return { entries, bytes, evictions: 0 };
  }

  async statsFor(prefix: string): Promise<{ entries: number; bytes: number }> {
    let entries = 0;
    let bytes = 0;
    for await (const batch of this.scan(this.entryPattern(prefix), 1000)) {
      for (const live of await this.liveSizes(batch)) {
        if (!this.userKey(live.key)?.startsWith(prefix)) continue;
        entries++;
        bytes += live.bytes;
      }
    }
    return { entries, bytes };
  }

  async acquireLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.assertOpen();
    const now = this.clock.now();
    const ttl = Math.max(1, Math.ceil(ttlMs));
    return (
      (await this.scripts.xcacheLock(
        `${this.prefix}l:${name}`,
        owner,
        String(ttl),
        this.leaseNow(),
        String(now + ttl),
      )) === 1
    );
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    this.assertOpen();
    return (await this.scripts.xcacheUnlock(`${this.prefix}l:${name}`, owner, this.leaseNow())) === 1;
  }

  async publish(channel: string, message: string): Promise<void> {
    this.assertOpen();
    await this.client.publish(this.channelName(channel), message);
  }

  async subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>> {
    this.assertOpen();
    const full = this.channelName(channel);
    if (!this.subscriber) {
      // SUBSCRIBE waits for the connection instead of failing after one retry: a process that
      // starts while Redis is down joins the bus when Redis comes back (ioredis then resubscribes
      // after every reconnect). ready() and close() bound the wait. The offline queue is on even
      // when the application's client has it off, or SUBSCRIBE would fail while connecting.
      this.subscriber = this.isCluster
        ? (this.client as Cluster).duplicate(undefined, {
            enableOfflineQueue: true,
            redisOptions: {
              ...(this.client as Cluster).options.redisOptions,
              maxRetriesPerRequest: null,
              enableOfflineQueue: true,
            },
          })
        : (this.client as Redis).duplicate({ maxRetriesPerRequest: null, enableOfflineQueue: true });
      this.subscriber.on('error', () => undefined);
      this.subscriber.on('message', (from: string, message: string) => {
        for (const listener of this.listeners.get(from) ?? []) {
          try {
            listener(message);
          } catch {
            // a listener must not stop the others
          }
        }
      });
    }
    let set = this.listeners.get(full);
    if (!set) {
      const created = new Set<(message: string) => void>();
      set = created;
      this.listeners.set(full, created);
      try {
        await this.subscriber.subscribe(full);
      } catch (error) {
        // Not subscribed: the next subscribe() to this channel must try again.
        if (this.listeners.get(full) === created) this.listeners.delete(full);
        throw error;
      }
    }
    set.add(onMessage);
    return async () => {
      set.delete(onMessage);
      if (set.size === 0 && this.listeners.get(full) === set) {
        this.listeners.delete(full);
        await this.subscriber?.unsubscribe(full).catch(() => undefined);
      }
    };
  }

  async incrementCounters(scope: string, deltas: Readonly<Record<string, number>>): Promise<void> {
    this.assertOpen();
    // Connection lost: ioredis would queue the increment and may drop it after its retries, while
    // the caller, seeing a timeout, assumes it landed. Refused at once, the counts are kept for
    // the next flush instead. A client still making its first connection (or a lazy one that
    // never connected, which this connects) is let through: it sends the increment once ready.
    const status = (this.client as { status?: string }).status;
    if (status !== undefined && !FIRST_CONNECTION.has(status)) {
      throw cacheError(
        'E_BACKEND',
        'redis',
        `not connected (${status}); counters are kept for the next flush`,
      );
    }
    const key = `${this.prefix}c:${scope}`;
    // One transaction: a flush that fails is retried whole, so no field is counted twice.
    const multi = this.client.multi();
    for (const [name, delta] of Object.entries(deltas)) {
      if (Number.isInteger(delta)) multi.hincrby(key, name, delta);
      else multi.hincrbyfloat(key, name, delta);
    }
    const results = await multi.exec();
    const failed = results?.find(([error]) => error);
    if (!results || failed) throw failed?.[0] ?? new Error('counter transaction was aborted');
  }

  async readCounters(): Promise<Record<string, Record<string, number>>> {
    this.assertOpen();
    const out: Record<string, Record<string, number>> = {};
    for await (const counters of this.counterKeys('')) {
      for (const { scope, values } of counters) out[scope] = values;
    }
    return out;
  }

  async clearCounters(scopePrefix = ''): Promise<void> {
    this.assertOpen();
    for await (const counters of this.counterKeys(scopePrefix)) {
      await Promise.all(counters.map(({ key }) => this.client.unlink(key)));
    }
  }

  /**
   * The counter hashes (`<prefix>c:<scope>`) whose scope starts with `scopePrefix`, read. A key
   * that merely matches the pattern is skipped: one that is not a hash, or holds a field that is
   * not a number (HINCRBY writes nothing else). Under the empty prefix the keyspace is shared
   * with other applications (`c:session:1`), so the scope must also be one the cache or the
   * ledger writes: `t:<tier>:<namespace>`, `l:<level>`, `~ledger/<namespace>:<tool>`.
   */
  private async *counterKeys(
    scopePrefix: string,
  ): AsyncGenerator<{ key: string; scope: string; values: Record<string, number> }[]> {
    const base = `${this.prefix}c:`;
    for await (const batch of this.scan(`${globEscape(base + scopePrefix)}*`, 1000)) {
      // Only scopes the cache or the ledger write: under the empty prefix the keyspace is shared
      // with other applications, and under `app:` a nested prefix's counters (`app:c:eu:c:…`)
      // match the pattern too.
      const scoped = batch.filter((key) => OWN_SCOPE.test(key.slice(base.length)));
      const read = await Promise.all(
        scoped.map((key) =>
          this.client.hgetall(key).catch((error: unknown) => {
            if (/WRONGTYPE/.test(messageOf(error))) return undefined;
            throw error;
          }),
        ),
      );
      const found: { key: string; scope: string; values: Record<string, number> }[] = [];
      scoped.forEach((key, i) => {
        const values = counterValues(read[i]);
        if (values) found.push({ key, scope: key.slice(base.length), values });
      });
      if (found.length > 0) yield found;
    }
  }

  async compareAndSwap(key: string, expected: Uint8Array | null, next: StoredEntry | null): Promise<boolean> {
    this.assertOpen();
    const now = this.clock.now();
    const tag = this.bucketTag(key);
    let px = '';
    let remove = next === null;
    const expiresAt = next === null ? undefined : storedExpiry(next);
    if (expiresAt !== undefined) {
      const ttl = Math.ceil(expiresAt - now);
      if (ttl <= 0) remove = true;
      else px = String(ttl);
    }
    const tags = !remove && next?.tags ? [...new Set(next.tags)] : [];
    const expectedBytes =
      expected === null ? '' : Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
    return (
      (await this.scripts.xcacheSwap(
        this.entryKey(key, tag),
        this.listKey(key, tag),
        expectedBytes,
        expected === null ? '1' : '0',
        remove ? 'del' : 'set',
        remove ? '' : encodeValue(next!, tags),
        px,
        this.tagPrefix(tag),
        String(now),
        ...tags,
      )) === 1
    );
  }

  async evictionRisk(): Promise<string | undefined> {
    const nodes = this.isCluster ? await this.masters() : [this.client as Redis];
    for (const node of nodes) {
      // CONFIG is often disabled on managed Redis: then this cannot tell.
      const [, maxmemory] = (await node.config('GET', 'maxmemory')) as string[];
      const [, policy] = (await node.config('GET', 'maxmemory-policy')) as string[];
      if (maxmemory === undefined || policy === undefined) return undefined;
      if (Number(maxmemory) > 0 && policy !== 'noeviction') {
        return `maxmemory is ${maxmemory} bytes with maxmemory-policy ${policy}: when memory runs out Redis deletes keys before they expire`;
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Reads issued before close() still go out, as they would have without batching.
    for (const batch of [...this.unsent]) this.flush(batch);
    this.closed = true;
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (subscriber) subscriber.disconnect();
    if (this.ownsClient) {
      // QUIT lets the commands already sent finish; a frozen or unreachable Redis never answers
      // it, so after CLOSE_WAIT_MS the connection is dropped instead (close() never hangs).
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), CLOSE_WAIT_MS);
      });
      const quit = this.client.quit().then(
        () => 'quit' as const,
        () => 'failed' as const,
      );
      const outcome = await Promise.race([quit, gaveUp]);
      clearTimeout(timer);
      if (outcome !== 'quit') this.client.disconnect();
    }
  }
}

/**
 * A Redis (or Redis Cluster) backend. ioredis is loaded on first use. Hits are one GET;
 * a miss plus store is one GET and one script call.
 */
export function redisBackend(options: RedisBackendOptions = {}): RedisBackend {
  return new RedisStore(options);
}

/** A random owner token for locks: one per process is enough, per call is safer. */
export function lockOwner(): string {
  return randomUUID();
}
