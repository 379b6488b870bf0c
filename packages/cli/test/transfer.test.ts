import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createCache, decodeEntry } from '@x/cache-core';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  BIN,
  BINARY,
  cli,
  DAY,
  exportedCounters,
  exportedRecords,
  INTRO,
  INTRO_USAGE,
  json,
  RICH,
  type Seeded,
  useSeededStore,
  VECTOR,
} from './helpers.ts';

const fixture = useSeededStore();
let dir: string;
let url: string;
let seeded: Seeded;
beforeEach(() => {
  ({ dir, url, seeded } = fixture);
});

describe('llm-cache export / import', () => {
  it('round-trips exactly: bytes, binary values, typed arrays, TTLs, grace and tags', async () => {
    const file = join(dir, 'backup.jsonl');
    const exported = await cli(['export', file, '--url', url]);
    expect(exported).toMatchObject({
      code: 0,
      stdout: `Exported 8 entries and the statistics counters to ${file}.\n`,
      stderr: '',
    });
    const text = readFileSync(file, 'utf8');
    expect(json(text.split('\n')[0]!)).toMatchObject({ format: 'llm-cache-export', version: 1, source: url });
    const records = exportedRecords(text);
    expect(records.map((record) => record.key)).toEqual(
      [
        seeded.embedding,
        seeded.other,
        seeded.stale,
        seeded.intro,
        seeded.wordProblem,
        seeded.template,
        seeded.toolA,
        seeded.toolB,
      ].sort((a, b) => a.localeCompare(b)),
    );
    const intro = records.find((record) => record.key === seeded.intro)!;
    expect(intro).toMatchObject({ expiresAt: seeded.t0 + 7 * DAY, tags: ['responses/default#math'] });

    const target = join(dir, 'restored', 'cache.db');
    const imported = await cli(['import', file, '--url', `sqlite://${target}`]);
    expect(imported).toMatchObject({ code: 0, stdout: 'Imported 8 entries and the statistics counters.\n' });
    const again = await cli(['export', '--url', `sqlite://${target}`]);
    expect(exportedRecords(again.stdout)).toEqual(records);

    // And the application reading the restored store gets the same values back.
    const restored = createCache({
      store: sqliteBackend({ path: target }),
      memory: false,
      statsFlushInterval: 0,
    });
    expect(
      await restored.tier('tools').withNamespace('tenant-a').get({ name: 'git_status', request: {} }),
    ).toEqual(BINARY);
    const vector = await restored.tier('embeddings').get<Float32Array>({ name: 'embed', request: 'hello' });
    expect(vector).toBeInstanceOf(Float32Array);
    expect(vector).toEqual(VECTOR);
    expect(await restored.tier('templates').get({ name: 'lesson', request: { v: 2 } })).toEqual(RICH);
    const hit = await restored.getResult(INTRO);
    expect(hit).toMatchObject({ value: { text: 'Fractions are parts of a whole.' }, usage: INTRO_USAGE });
    expect(await restored.invalidateTags(['math'])).toBe(2);
    await restored.close();
  });

  it('carries the statistics counters, and still imports an export without them', async () => {
    const before = json((await cli(['stats', '--url', url, '--format', 'json'])).stdout);
    const out = await cli(['export', '--url', url]);
    expect(out.stderr).toBe('Exported 8 entries and the statistics counters.\n');
    expect(exportedCounters(out.stdout)['t:responses:default']).toMatchObject({ hits: 3, misses: 1 });
    const target = `sqlite://${join(dir, 'moved.db')}`;
    const imported = await cli(['import', '--url', target], { input: out.stdout });
    expect(imported.stdout).toBe('Imported 8 entries and the statistics counters.\n');
    const after = json((await cli(['stats', '--url', target, '--format', 'json'])).stdout);
    // Everything but the bytes (SQLite counts the expired row the source has not pruned yet).
    expect({ ...after.overall, bytes: 0 }).toEqual({ ...before.overall, bytes: 0 });
    expect(after.overall).toMatchObject({ hits: 3, misses: 1, tokensSaved: 3000 });
    expect(after.levels).toEqual(before.levels);

    // An export written before counters were exported (or with --no-counters) has entries only.
    const bare = await cli(['export', '--url', url, '--no-counters']);
    expect(bare.stderr).toBe('Exported 8 entries.\n');
    expect(exportedCounters(bare.stdout)).toEqual({});
    const old = `sqlite://${join(dir, 'old.db')}`;
    expect((await cli(['import', '--url', old], { input: bare.stdout })).stdout).toBe(
      'Imported 8 entries.\n',
    );
    expect(json((await cli(['stats', '--url', old, '--format', 'json'])).stdout).overall).toMatchObject({
      entries: 7,
      hits: 0,
    });
    // A narrowed export has no counters: they cover the whole store.
    expect(exportedCounters((await cli(['export', '--url', url, '--tier', 'tools'])).stdout)).toEqual({});
  });

  it('leaves a signal to the handler of a host process that runs it as a library', async () => {
    // A host with its own SIGINT handler (which opens a file) exports a store of 3000 entries and
    // gets a SIGINT meanwhile: the export finishes and the host's file gets only the host's line.
    const big = join(dir, 'big.db');
    const store = createCache({ store: sqliteBackend({ path: big }), memory: false, statsFlushInterval: 0 });
    for (let i = 0; i < 3000; i++) await store.set(`k${i}`, { text: 'x'.repeat(200), i });
    await store.close();
    const script = join(dir, 'host.ts');
    const file = join(dir, 'host-export.jsonl');
    const log = join(dir, 'host.log');
    writeFileSync(
      script,
      [
        `import { openSync, writeSync } from 'node:fs';`,
        `import { run } from ${JSON.stringify(new URL('../src/cli.ts', import.meta.url).pathname)};`,
        `process.on('SIGINT', () => setImmediate(() => writeSync(openSync(${JSON.stringify(log)}, 'a'), 'host: got SIGINT\\n')));`,
        `const done = run(['export', ${JSON.stringify(file)}, '--url', ${JSON.stringify(`sqlite://${big}`)}, '--quiet']);`,
        `setTimeout(() => process.kill(process.pid, 'SIGINT'), 5);`,
        `process.exitCode = await done;`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, ['--conditions=@x/source', '--experimental-strip-types', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (exit) => resolve(exit)));
    expect({
      code,
      stderr: stderr.replace(/^\(node:\d+\) ExperimentalWarning.*\n(.*--trace-warnings.*\n)?/m, ''),
    }).toEqual({
      code: 0,
      stderr: '',
    });
    expect(readFileSync(log, 'utf8')).toBe('host: got SIGINT\n');
    expect(exportedRecords(readFileSync(file, 'utf8'))).toHaveLength(3000);
  });

  it('removes the temporary file and exits 130 on Ctrl-C (143 on SIGTERM)', async () => {
    // A Redis that accepts connections and never answers keeps the export waiting with its file open.
    const silent = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      for (const [signal, code] of [
        ['SIGINT', 130],
        ['SIGTERM', 143],
      ] as const) {
        const file = join(dir, `${signal}.jsonl`);
        const child = spawn(
          process.execPath,
          [
            '--conditions=@x/source',
            BIN,
            'export',
            file,
            '--url',
            `redis://127.0.0.1:${port}`,
            '--timeout',
            '20000',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString('utf8');
        });
        const exited = new Promise<number | null>((resolve) => child.on('close', (exit) => resolve(exit)));
        const temporary = () => readdirSync(dir).filter((name) => name.startsWith(`${signal}.jsonl.`));
        while (temporary().length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
        child.kill(signal);
        expect(await exited).toBe(code);
        expect(stderr).toBe(`llm-cache: export interrupted (${signal}); ${file} was not written\n`);
        expect(temporary()).toEqual([]);
        expect(existsSync(file)).toBe(false);
      }
    } finally {
      silent.close();
    }
  });

  it('pipes through stdout and stdin, with tier / namespace filters', async () => {
    const out = await cli(['export', '--url', url, '--tier', 'tools', '--namespace', 'tenant-b']);
    expect(out.code).toBe(0);
    expect(out.stderr).toBe('Exported 1 entry.\n');
    expect(exportedRecords(out.stdout).map((record) => record.key)).toEqual([seeded.toolB]);
    const target = join(dir, 'piped.db');
    const imported = await cli(['import', '-', '--url', `sqlite://${target}`, '--format', 'json'], {
      input: out.stdout,
    });
    expect(json(imported.stdout)).toEqual({ imported: 1, expired: 0, counters: 0 });
    const record = exportedRecords(out.stdout)[0]!;
    const store = sqliteBackend({ path: target });
    const stored = await store.get(seeded.toolB);
    await store.close();
    expect(Buffer.from(stored!.value).toString('base64')).toBe(record.value);
    expect(decodeEntry<{ v: Uint8Array }>(stored!.value).value.v).toEqual(new Uint8Array([9, 9, 9]));
  });

  it('skips entries that expired since the export', async () => {
    const out = await cli(['export', '--url', url, '--quiet']);
    expect(out.stderr).toBe('');
    const lines = out.stdout.split('\n');
    const record = json(lines[1]!);
    lines[1] = JSON.stringify({ ...record, expiresAt: Date.now() - 1000 });
    const result = await cli(['import', '--url', `sqlite://${join(dir, 'late.db')}`], {
      input: lines.join('\n'),
    });
    expect(result.stdout).toBe(
      'Imported 7 entries and the statistics counters (1 had expired since the export and was skipped).\n',
    );
  });

  it('names the bad line and exits 1, keeping the lines before it', async () => {
    const file = join(dir, 'broken.jsonl');
    const good = (await cli(['export', '--url', url, '--tier', 'embeddings'])).stdout;
    writeFileSync(file, `${good}{"key":"x","value":"not base64!"}\n`);
    const target = join(dir, 'partial.db');
    const result = await cli(['import', file, '--url', `sqlite://${target}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `llm-cache: ${file}:3: "value" must be the base64 of the stored entry, as export writes it (imported 1 entry before it)\n`,
    );
    const store = sqliteBackend({ path: target });
    expect(await store.has(seeded.embedding)).toBe(true);
    await store.close();
    const notJson = await cli(['import', '--url', `sqlite://${target}`], {
      input: '{"format":"llm-cache-export","version":1}\nnope\n',
    });
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/^llm-cache: stdin:2: not valid JSON/);
    const future = await cli(['import', '--url', `sqlite://${target}`], {
      input: '{"format":"llm-cache-export","version":9}\n',
    });
    expect(future.code).toBe(1);
    expect(future.stderr).toMatch(/stdin:1: not an llm-cache export this version reads/);
    const missing = await cli(['import', join(dir, 'nope.jsonl'), '--url', `sqlite://${target}`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^llm-cache: cannot read .*nope\.jsonl: ENOENT/);
  });

  it('shows progress on stderr with --progress', async () => {
    const file = join(dir, 'progress.jsonl');
    const exported = await cli(['export', file, '--url', url, '--progress']);
    expect(exported.stderr).toMatch(/^export: 8 entries, \d+\.\ds\n$/);
    const imported = await cli(['import', file, '--url', `sqlite://${join(dir, 'p.db')}`, '--progress']);
    expect(imported.stderr).toMatch(/import: 8 entries \(100%\), \d+\.\ds\n$/);
    const silent = await cli(['import', file, '--url', `sqlite://${join(dir, 'q.db')}`]);
    expect(silent.stderr).toBe('');
  });
});
