/** Small helpers shared by the core tests. */
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll } from 'vitest';
import type { Clock } from '../src/backends/backend.ts';

export interface FakeClock extends Clock {
  advance(ms: number): void;
}

/** A clock that stands still unless told: every call happens in the same millisecond. */
export function fakeClock(): FakeClock {
  let now = Date.UTC(2030, 0, 1);
  return { now: () => now, advance: (ms) => void (now += ms) };
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Runs `body` with `proto.toJSON` replaced (as polyfills do), restoring the original afterwards. */
export function withToJSON(proto: object, toJSON: (this: unknown) => unknown, body: () => void): void {
  const original = Object.getOwnPropertyDescriptor(proto, 'toJSON');
  Object.defineProperty(proto, 'toJSON', { value: toJSON, writable: true, configurable: true });
  try {
    body();
  } finally {
    if (original) Object.defineProperty(proto, 'toJSON', original);
    else delete (proto as { toJSON?: unknown }).toJSON;
  }
}

/**
 * A real node:http server on 127.0.0.1 answering with `handle`, started before the file's tests
 * (`started` gets its base URL) and closed after them, open connections included.
 */
export function useHttpServer(handle: RequestListener, started: (base: string) => void): void {
  const server = createServer(handle);
  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    started(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
}
