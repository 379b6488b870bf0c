import type { EntryCodec, EntryCompression, StoredEntry } from '@x/cache-core';
import { readEntryHeader } from '@x/cache-core';
import { messageOf } from './io.ts';
import { parseCacheKey } from './keys.ts';

/** What `ls` and `inspect` say about one stored entry. */
export interface EntryInfo {
  key: string;
  tier?: string | undefined;
  namespace?: string | undefined;
  name?: string | undefined;
  hash?: string | undefined;
  /** Stored size: header and (possibly compressed) payload. */
  bytes: number;
  createdAt?: number | undefined;
  ageMs?: number | undefined;
  /** When the entry stops being fresh (epoch ms); `null` = never. */
  expiresAt?: number | null | undefined;
  /** Time until `expiresAt`; negative while a stale entry is kept for its grace period. */
  ttlMs?: number | null | undefined;
  /** When the store drops the entry: `expiresAt` plus any grace. */
  storeExpiresAt: number | null;
  stale: boolean;
  /** Tags as the application wrote them (the store keeps them scoped to tier and namespace). */
  tags: string[];
  codec?: EntryCodec | undefined;
  compression?: EntryCompression | undefined;
  payloadBytes?: number | undefined;
  formatVersion?: number | undefined;
  /** Why the header could not be read (corrupt, or not written by the cache). */
  unreadable?: string | undefined;
}

export function describeEntry(key: string, stored: StoredEntry, now: number): EntryInfo {
  const parsed = parseCacheKey(key);
  const info: EntryInfo = {
    key,
    ...(parsed ?? {}),
    bytes: stored.value.byteLength,
    storeExpiresAt: stored.expiresAt ?? null,
    stale: false,
    tags: [],
  };
  try {
    const header = readEntryHeader(stored.value);
    info.createdAt = header.createdAt;
    info.ageMs = now - header.createdAt;
    // Writers other than the cache (the ledger) may leave the expiry to the store alone.
    const expiresAt = header.expiresAt ?? stored.expiresAt;
    info.expiresAt = expiresAt ?? null;
    info.ttlMs = expiresAt === undefined ? null : expiresAt - now;
    info.stale = expiresAt !== undefined && expiresAt <= now;
    info.tags = header.tags;
    info.codec = header.codec;
    info.compression = header.compression;
    info.payloadBytes = header.payloadBytes;
    info.formatVersion = header.formatVersion;
  } catch (error) {
    info.unreadable = messageOf(error);
    info.ttlMs = stored.expiresAt === undefined ? null : stored.expiresAt - now;
    info.expiresAt = stored.expiresAt ?? null;
  }
  return info;
}
