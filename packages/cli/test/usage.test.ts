import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { sqliteBackend } from '@x/cache-core/sqlite';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { cli, json, seedApp, tempDirs, useSeededStore } from './helpers.ts';

const dirs = tempDirs();
afterAll(() => dirs.cleanup());

const fixture = useSeededStore();
let dir: string;
let url: string;
beforeEach(() => {
  ({ dir, url } = fixture);
});

describe('llm-cache: help, version and usage errors', () => {
  it('prints its version and the command list', async () => {
    const pkg = json<{ version: string }>(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    const version = await cli(['--version']);
    expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const command of [
      'stats',
      'ls',
      'inspect',
      'clear',
      'prune',
      'invalidate',
      'export',
      'import',
      'warm',
    ]) {
      expect(help.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
    expect(help.stdout).toContain('Exit codes: 0 ok, 1 failed');
  });

  it('has --help for every command, with usage, options and examples', async () => {
    for (const command of [
      'stats',
      'ls',
      'inspect',
      'clear',
      'prune',
      'invalidate',
      'export',
      'import',
      'warm',
    ]) {
      const result = await cli([command, '--help']);
      expect(result.code, command).toBe(0);
      expect(result.stdout, command).toMatch(new RegExp(`^Usage: llm-cache ${command}`));
      expect(result.stdout, command).toContain('Examples:');
      expect(result.stdout, command).toContain('--url <url>');
    }
    expect((await cli(['stats', '--help'])).stdout).toContain('--task-id <id>');
    expect((await cli(['help', 'invalidate'])).stdout).toContain('--tag <tag>');
  });

  it('exits 2 with one line for usage errors', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command "frobnicate"/],
      [['stat'], /did you mean "stats"\?/],
      [['ls', '--colour'], /unknown option --colour for ls — see llm-cache ls --help/],
      [['stats', '--url', url, '--format', 'yaml'], /--format must be table or json, got "yaml"/],
      [['inspect', '--url', url], /inspect needs an argument/],
      [['ls', 'a', 'b', '--url', url], /unexpected argument "b"/],
      [['ls', '--url', url, '--limit', 'lots'], /--limit must be a whole number/],
      [['invalidate', '--url', url], /say what to invalidate/],
      [['ls', '--url', url, '--tier', 'no spaces'], /invalid name "no spaces"/],
      [['ls', '--url'], /--url/],
      [['--url', url], /no command given — llm-cache --help lists the commands/],
      [['-q'], /no command given/],
      [['--frobnicate'], /unknown option --frobnicate — llm-cache --help lists the options/],
      [
        ['ls', '--url', url, '--tier', 'team/a'],
        /--tier team\/a: a tier name has no '\/'.*--tier team --namespace a/,
      ],
      [
        ['export', dir, '--url', url],
        /cannot export to .*: it is a directory; name a file, e\.g\. .*cache\.jsonl/,
      ],
      [['export', `${dir}/`, '--url', url], /it is a directory/],
    ];
    for (const [args, message] of cases) {
      const result = await cli(args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(result.stderr).toMatch(/^llm-cache: /);
    }
  });

  it('shows the help on stderr and exits 2 without a command', async () => {
    const result = await cli([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('Usage: llm-cache <command>');
  });
});

describe('llm-cache: connecting', () => {
  it('refuses memory:// and unknown schemes in one line with exit 2', async () => {
    const memory = await cli(['stats', '--url', 'memory://']);
    expect(memory.code).toBe(2);
    expect(memory.stderr).toMatch(
      /^llm-cache: memory:\/\/ cannot be inspected: .*sqlite:\/\/.*redis:\/\/.*\n$/,
    );
    const scheme = await cli(['stats', '--url', 'postgres://db/cache']);
    expect(scheme.code).toBe(2);
    expect(scheme.stderr).toMatch(/^llm-cache: unsupported URL scheme "postgres:".*\n$/);
    const garbage = await cli(['ls', '--url', 'not a url']);
    expect(garbage.code).toBe(2);
    expect(garbage.stderr).toMatch(/^llm-cache: invalid URL "not a url".*\n$/);
  });

  it('says so when the SQLite file is missing, and does not create it', async () => {
    const missing = join(dir, 'nope', 'cache.db');
    const result = await cli(['stats', '--url', `sqlite://${missing}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `llm-cache: no cache database at ${missing} — check --url / LLM_CACHE_URL (the path is relative to the current directory)\n`,
    );
    expect(existsSync(missing)).toBe(false);
  });

  it('refuses a file that is not a cache store, without touching it', async () => {
    const text = join(dir, 'notes.db');
    writeFileSync(text, 'just some text, long enough to not be an empty database file\n'.repeat(20));
    const notDb = await cli(['ls', '--url', `sqlite://${text}`]);
    expect(notDb.code).toBe(1);
    expect(notDb.stderr).toBe(
      `llm-cache: ${text} is not an SQLite database — point --url at an llm-cache SQLite file\n`,
    );

    const appDb = join(dir, 'app.db');
    const db = new DatabaseSync(appDb);
    db.exec('CREATE TABLE users (id INTEGER)');
    db.close();
    const foreign = await cli(['stats', '--url', `sqlite://${appDb}`]);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/is an SQLite database but not an llm-cache store/);
    const check = new DatabaseSync(appDb);
    const tables = check.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all();
    check.close();
    expect(tables).toEqual([{ name: 'users' }]);
  });

  it("import and warm refuse another application's database too, and make an empty file a store", async () => {
    const appDb = join(dir, 'app.db');
    const db = new DatabaseSync(appDb);
    db.exec('CREATE TABLE users (id INTEGER)');
    db.close();
    const record = '{"name":"faq","request":1,"value":"yes"}\n';
    const warmed = await cli(['warm', '-', '--url', `sqlite://${appDb}`], { input: record });
    const exported = await cli(['export', '--url', url]);
    const imported = await cli(['import', '--url', `sqlite://${appDb}`], { input: exported.stdout });
    for (const result of [warmed, imported]) {
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `llm-cache: ${appDb} is an SQLite database but not an llm-cache store — point --url at the file your application's cache uses\n`,
      );
    }
    const check = new DatabaseSync(appDb);
    const tables = check.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").all();
    check.close();
    expect(tables).toEqual([{ name: 'users' }]);

    const empty = join(dir, 'empty.db');
    writeFileSync(empty, '');
    const created = await cli(['warm', '-', '--url', `sqlite://${empty}`], { input: record });
    expect(created).toMatchObject({ code: 0, stdout: 'Warmed 1 entry.\n' });
    expect(json((await cli(['ls', '--url', `sqlite://${empty}`, '--format', 'json'])).stdout).total).toBe(1);
  });

  it('reads LLM_CACHE_URL, else LLM_CACHE_DIR, else .cache/llm-cache.db, else says what to pass', async () => {
    const fromEnv = await cli(['ls', '--format', 'json'], { env: { LLM_CACHE_URL: url } });
    expect(fromEnv.code).toBe(0);
    expect(json(fromEnv.stdout).total).toBe(7);
    const fromDir = await cli(['ls', '--format', 'json'], { env: { LLM_CACHE_DIR: dir } });
    expect(json(fromDir.stdout).total).toBe(7);
    const empty = dirs.make();
    const none = await cli(['ls'], { cwd: empty });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(
      /^llm-cache: no store given — pass --url sqlite:\/\/.* or set LLM_CACHE_URL\n$/,
    );
    // An application's default location, relative to where the command runs.
    const appDir = dirs.make();
    await seedApp(sqliteBackend({ path: join(appDir, '.cache', 'llm-cache.db') }), Date.now());
    const defaulted = await cli(['ls', '--format', 'json'], { cwd: appDir });
    expect(json(defaulted.stdout).total).toBe(8);
  });

  it('says in one line that Redis is unreachable, and exits 1', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const refused = await cli(['stats', '--url', `redis://127.0.0.1:${port}`]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      new RegExp(`^llm-cache: cannot reach Redis at redis://127.0.0.1:${port}: connect ECONNREFUSED .*\\n$`),
    );
  });

  it('hides the whole password, even one holding @ or /, in every message', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    // A valid URL (the earlier @ belongs to the password): the server is unreachable.
    const at = await cli(['ls', '--url', `redis://:pa@ssw0rd@127.0.0.1:${port}`]);
    expect(at.code).toBe(1);
    expect(at.stderr).toMatch(
      new RegExp(`^llm-cache: cannot reach Redis at redis://\\*\\*\\*@127\\.0\\.0\\.1:${port}: `),
    );
    // Not a valid URL (the / ends the host): the usage error echoes it.
    const slash = await cli(['stats', '--url', `redis://:pa/ssw0rd@127.0.0.1:${port}`]);
    expect(slash.code).toBe(2);
    expect(slash.stderr).toMatch(/^llm-cache: invalid URL "redis:\/\/\*\*\*@127\.0\.0\.1:\d+" — /);
    // Through LLM_CACHE_URL, and for schemes the CLI does not know, alike.
    const env = await cli(['ls'], { env: { LLM_CACHE_URL: `redis://:pa/ssw0rd@127.0.0.1:${port}` } });
    expect(env.code).toBe(2);
    const unknown = await cli(['ls', '--url', 'postgres://me:pa/ss@w0rd@db.example:5432/app']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('"postgres://***@db.example:5432/app"');
    for (const result of [at, slash, env, unknown]) {
      expect(result.stderr).not.toMatch(/ssw0rd|pa\/ss|w0rd/);
      expect(result.stdout).not.toMatch(/ssw0rd|pa\/ss|w0rd/);
    }
  });

  it('gives up on a Redis that never answers after --timeout', async () => {
    // Accepts connections and says nothing, like a firewall that swallows packets.
    const silent: Server = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const result = await cli(['ls', '--url', `redis://:secret@127.0.0.1:${port}`, '--timeout', '300']);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `llm-cache: cannot reach Redis at redis://***@127.0.0.1:${port}: no answer within 300 ms — check that the server is up and --url / LLM_CACHE_URL\n`,
      );
    } finally {
      silent.close();
    }
  });
});
