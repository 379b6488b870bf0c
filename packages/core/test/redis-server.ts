/**
 * Starts real redis-server processes for tests: one standalone server, or a 3-master cluster,
 * on free loopback ports with nothing persisted. `REDIS_URL` uses an existing server instead.
 * Without a redis-server binary the suites skip loudly — unless LLM_CACHE_REQUIRE_REDIS=1
 * (set by .ci/run), which turns that skip into a failure.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisHandle {
  url: string;
  port: number;
  process?: ChildProcess | undefined;
  stop(): Promise<void>;
}

export interface ClusterHandle {
  nodes: { host: string; port: number }[];
  processes: ChildProcess[];
  stop(): Promise<void>;
}

function hasBinary(name: string): boolean {
  try {
    execFileSync(name, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why Redis suites cannot run here, or undefined when they can. Throws when CI requires Redis. */
export function redisUnavailable(): string | undefined {
  if (process.env.REDIS_URL) return undefined;
  if (hasBinary('redis-server') && hasBinary('redis-cli')) return undefined;
  const reason = 'redis-server / redis-cli not found and REDIS_URL not set';
  if (process.env.LLM_CACHE_REQUIRE_REDIS === '1') {
    throw new Error(`Redis is required here (LLM_CACHE_REQUIRE_REDIS=1) but ${reason}`);
  }
  console.warn(`\n!!! SKIPPING Redis tests: ${reason}. Install redis-server to run them. !!!\n`);
  return reason;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function waitForPing(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const out = execFileSync('redis-cli', ['-p', String(port), 'ping'], {
        encoding: 'utf8',
        timeout: 2000,
      });
      if (out.trim() === 'PONG') return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function spawnServer(port: number, extra: string[] = [], dir?: string): ChildProcess {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra];
  if (dir) args.push('--dir', dir);
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  child.unref();
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/**
 * Servers this process started and has not stopped. A process that ends without stopping them (a
 * failed test's worker torn down, a script calling process.exit) kills them on its way out, so no
 * redis-server outlives the run.
 */
const live = new Set<ChildProcess>();
function killLive(): void {
  for (const child of live) {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}
process.once('exit', killLive);
// A signal ends a process without 'exit' (vitest stops its workers with SIGTERM): kill the
// servers, then die of the same signal as before, unless someone else handles it.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  const onSignal = (): void => {
    killLive();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.once(signal, onSignal);
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    try {
      process.kill(child.pid!, 'SIGCONT');
    } catch {
      // already gone
    }
    child.kill('SIGKILL');
  });
}

/** A standalone server of our own (or the one REDIS_URL names, flushed by the caller's prefixing). */
export async function startRedis(): Promise<RedisHandle> {
  if (process.env.REDIS_URL) {
    const url = process.env.REDIS_URL;
    return { url, port: Number(new URL(url).port || 6379), stop: async () => {} };
  }
  const port = await freePort();
  const child = spawnServer(port);
  await waitForPing(port);
  return { url: `redis://127.0.0.1:${port}`, port, process: child, stop: () => kill(child) };
}

/** Restarts a server we started (same port), after a kill. */
export async function restartRedis(handle: RedisHandle): Promise<void> {
  if (handle.process) await kill(handle.process);
  handle.process = spawnServer(handle.port);
  const child = handle.process;
  handle.stop = () => kill(child);
  await waitForPing(handle.port);
}

/** A local cluster of three masters on free ports. */
export async function startCluster(): Promise<ClusterHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'x-redis-cluster-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const processes = ports.map((port) =>
    spawnServer(
      port,
      [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '2000',
      ],
      dir,
    ),
  );
  for (const port of ports) await waitForPing(port);
  execFileSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ],
    { stdio: 'ignore', timeout: 30_000 },
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = ports.every((port) => {
      try {
        return execFileSync('redis-cli', ['-p', String(port), 'cluster', 'info'], {
          encoding: 'utf8',
        }).includes('cluster_state:ok');
      } catch {
        return false;
      }
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error('local Redis cluster did not reach cluster_state:ok');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    processes,
    stop: async () => {
      for (const child of processes) await kill(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
